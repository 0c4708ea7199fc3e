"""Headless runner: queue an API-format workflow on a ComfyUI server and fetch its outputs.

    python -m comfyui_full4d.client.run workflows/api/demo_synthetic_api.json \\
        --server http://127.0.0.1:8188 --set 1.seed=3 --out output/

It POSTs the prompt to ``/prompt``, follows the server's websocket (``/ws``) printing a progress
bar per node, reads ``/history/<id>`` and downloads every file the output nodes list through
``/view``. On failure it exits non-zero with the host's own error message (validation errors
name the node and input). Uses only the standard library and aiohttp (a ComfyUI dependency).

Also hosts ``launch_server``, used by the demo and the tests to start a real ComfyUI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Callable, Optional
from ..common.io import write_bytes

__all__ = ["WorkflowError", "apply_overrides", "run_workflow", "fetch_outputs", "launch_server", "main"]


class WorkflowError(RuntimeError):
    """The server rejected or failed the prompt; the message is the host's own."""


def apply_overrides(prompt: dict, overrides: list[str]) -> dict:
    """``["3.seed=5", "1.file=\\"a.mp4\\""]`` -> set ``prompt["3"]["inputs"]["seed"] = 5`` (JSON values,
    falling back to the raw string)."""
    out = json.loads(json.dumps(prompt))
    for item in overrides:
        key, sep, raw = item.partition("=")
        node, dot, name = key.partition(".")
        if not sep or not dot:
            raise ValueError(f"--set {item!r}: expected NODE_ID.INPUT=VALUE")
        if node not in out:
            raise ValueError(f"--set {item!r}: the workflow has no node {node!r} (nodes: {sorted(out)})")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[node].setdefault("inputs", {})[name] = value
    return out


def format_error(answer: dict) -> str:
    """The host's /prompt error JSON (or an execution_error message) as readable text."""
    if "exception_message" in answer:
        return (f"node {answer.get('node_id')} ({answer.get('node_type')}): "
                f"{str(answer['exception_message']).strip()}")
    lines = []
    err = answer.get("error")
    if isinstance(err, dict):
        lines.append(f"{err.get('message', '')} {err.get('details', '')}".strip())
    for nid, ne in (answer.get("node_errors") or {}).items():
        for e in ne.get("errors", []):
            inp = (e.get("extra_info") or {}).get("input_name")
            where = f"node {nid} ({ne.get('class_type')})" + (f" input {inp!r}" if inp else "")
            lines.append(f"{where}: {e.get('message')}: {e.get('details')}")
    return "\n".join(lines) or json.dumps(answer)[:2000]


def progress_printer(prompt: dict | None = None, stream=sys.stderr, tty: bool | None = None,
                     every: float = 10.0) -> Callable[[dict], None]:
    """A websocket message handler that says what the server is running: each node by its title (the prompt's
    ``_meta.title``, else its class), and its progress with the elapsed time and an estimate of the time left.

    On a terminal (``tty``; default: ``stream.isatty()``) the progress line is redrawn in place. Into a log file or
    pipe it writes a short line at most every ``every`` seconds and at the end of a bar, never the carriage-return
    redraws that pile up into one multi-kilobyte line."""
    tty = stream.isatty() if tty is None and hasattr(stream, "isatty") else bool(tty)
    state = {"node": None, "t0": time.monotonic(), "last": 0.0, "run0": time.monotonic()}

    def name(node) -> str:
        n = (prompt or {}).get(str(node), {})
        return n.get("_meta", {}).get("title") or n.get("class_type") or f"node {node}"

    def show(msg: dict) -> None:
        t, d = msg.get("type"), msg.get("data", {})
        now = time.monotonic()
        if t == "progress" and d.get("max"):
            value, total = int(d["value"]), int(d["max"])
            if d.get("node") != state["node"]:
                state.update(node=d.get("node"), t0=now, last=0.0)
            spent = now - state["t0"]
            left = spent / value * (total - value) if value else float("nan")
            eta = f", about {left:.0f} s left" if value and value < total else ""
            if tty:
                n = int(30 * value / total)
                stream.write(f"\r  [{'#' * n}{'.' * (30 - n)}] {value}/{total} ({spent:.0f} s{eta})  ")
            elif value >= total or now - state["last"] >= every:
                state["last"] = now
                stream.write(f"  {name(d.get('node'))}: {value}/{total} ({spent:.0f} s{eta})\n")
            else:
                return
            stream.flush()
        elif t == "executing" and d.get("node") is not None:
            state.update(node=d["node"], t0=now, last=0.0)
            stream.write(f"{chr(10) if tty else ''}> [{now - state['run0']:.0f} s] {name(d['node'])}\n")
            stream.flush()
    return show


async def run_workflow(server: str, prompt: dict, timeout: float = 3600.0,
                       on_message: Optional[Callable[[dict], None]] = None) -> tuple[str, dict]:
    """Queue ``prompt`` and follow the websocket until done. Returns (prompt_id, history entry)."""
    import aiohttp

    server = server.rstrip("/")
    client_id = str(uuid.uuid4())
    ws_url = server.replace("http://", "ws://").replace("https://", "wss://") + f"/ws?clientId={client_id}"
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(ws_url, heartbeat=30) as ws:
            async with session.post(f"{server}/prompt", json={"prompt": prompt, "client_id": client_id}) as r:
                answer = await r.json(content_type=None)
                if r.status != 200 or "prompt_id" not in answer:
                    raise WorkflowError(format_error(answer))
            pid = answer["prompt_id"]
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WorkflowError(f"prompt {pid} did not finish within {timeout:.0f}s")
                msg = await ws.receive(timeout=left)
                if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    raise WorkflowError("the server closed the websocket before the prompt finished")
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue  # binary preview images
                data = json.loads(msg.data)
                d = data.get("data", {})
                if d.get("prompt_id") not in (None, pid):
                    continue
                if on_message is not None:
                    on_message(data)
                if data["type"] == "execution_error":
                    raise WorkflowError(format_error(d))
                if data["type"] == "execution_interrupted":
                    raise WorkflowError(f"prompt {pid} was interrupted at node {d.get('node_id')}")
                if data["type"] == "executing" and d.get("node") is None and d.get("prompt_id") == pid:
                    break
        async with session.get(f"{server}/history/{pid}") as r:
            history = (await r.json()).get(pid, {})
    return pid, history


def fetch_outputs(server: str, history: dict, out_dir: Path) -> list[Path]:
    """Download every file listed by output nodes (``/view``) into ``out_dir`` (atomic writes)."""
    import urllib.parse

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = []
    for node_out in history.get("outputs", {}).values():
        for items in node_out.values():
            if not isinstance(items, list):
                continue
            for it in items:
                if not (isinstance(it, dict) and "filename" in it):
                    continue
                q = urllib.parse.urlencode({"filename": it["filename"], "subfolder": it.get("subfolder", ""),
                                            "type": it.get("type", "output")})
                with urllib.request.urlopen(f"{server.rstrip('/')}/view?{q}", timeout=120) as r:
                    data = r.read()
                dest = out_dir / Path(it["filename"]).name
                write_bytes(dest, data)
                saved.append(dest)
    return saved


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_server(comfyui_dir: Path, base_dir: Path, port: int, log_path: Path, extra_args: tuple = (),
                  env: Optional[dict] = None, timeout: float = 180.0) -> subprocess.Popen:
    """Start ``main.py --cpu`` on 127.0.0.1:``port`` with ``--base-directory base_dir`` and wait
    until it answers ``/system_stats``. Raises RuntimeError with the log tail on failure."""
    cmd = [sys.executable, str(Path(comfyui_dir) / "main.py"), "--cpu", "--listen", "127.0.0.1", "--port", str(port),
           "--disable-auto-launch", "--dont-print-server", "--disable-api-nodes",
           "--base-directory", str(base_dir), "--database-url", "sqlite:///:memory:", *extra_args]
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, cwd=str(comfyui_dir), stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})}, start_new_session=True)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ComfyUI exited with {proc.returncode} during start:\n"
                               f"{Path(log_path).read_text(errors='replace')[-4000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/system_stats", timeout=2).read()
            return proc
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.5)
    stop_server(proc)
    raise RuntimeError(f"ComfyUI did not answer within {timeout}s:\n{Path(log_path).read_text(errors='replace')[-4000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m comfyui_full4d.client.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("workflow", type=Path, help="API-format workflow JSON (ComfyUI: Export (API))")
    ap.add_argument("--server", default="http://127.0.0.1:8188", help="ComfyUI address")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.INPUT=VALUE",
                    help="override an input (JSON value), repeatable")
    ap.add_argument("--out", type=Path, default=Path("output"), help="where to download the outputs")
    ap.add_argument("--timeout", type=float, default=3600.0)
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    a = ap.parse_args(argv)
    try:
        prompt = json.loads(a.workflow.read_text())
    except (OSError, json.JSONDecodeError) as e:
        print(f"error: cannot read workflow {a.workflow}: {e}", file=sys.stderr)
        return 2
    if "nodes" in prompt and "links" in prompt:
        print(f"error: {a.workflow} is a UI workflow; use its API-format twin (*_api.json)", file=sys.stderr)
        return 2
    try:
        prompt = apply_overrides(prompt, a.overrides)
        pid, history = asyncio.run(run_workflow(a.server, prompt, a.timeout,
                                                None if a.quiet else progress_printer(prompt)))
        files = fetch_outputs(a.server, history, a.out)
    except (WorkflowError, ValueError) as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"\nerror: cannot reach ComfyUI at {a.server}: {e}", file=sys.stderr)
        return 1
    print(f"\nprompt {pid} done; {len(files)} file(s):")
    for f in files:
        print(f"  {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
