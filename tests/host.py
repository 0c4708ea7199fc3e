"""Test harness around the real ComfyUI host (0.3.75, unpacked by scripts/setup.sh).

The host folder is ``.cache/comfyui`` unless ``FULL4D_TEST_HOST`` names another ComfyUI checkout
(e.g. a 0.33 copy: run the tests with a Python that has that host's requirements; the server is
started with the same interpreter). ``FULL4D_COMFYUI_DIR`` is the older name of the same switch.
``FULL4D_TEST_FRONTEND`` names another frontend's ``static`` folder (e.g. an unpacked
``comfyui-frontend-package`` wheel's ``comfyui_frontend_package/static``) for the server's
``--front-end-root``; without it each host serves the frontend package of its own requirements.

Two ways to use it:

* ``InProcessHost``: the host's modules imported in this process, CPU only, folder_paths rooted
  at a temporary base directory, the pack loaded through the host's own custom-node loader, and
  API-format prompts run by the host's own ``execution.PromptExecutor`` after its own
  ``validate_prompt``.
* ``Server``: the real ``main.py`` started as a subprocess on a free loopback port with the pack
  linked into ``<base>/custom_nodes/``; HTTP + websocket helpers to post prompts and follow them.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfyui_full4d.client.run import free_port, launch_server, stop_server

ROOT = Path(__file__).resolve().parents[1]
HOST_DIR = Path(os.environ.get("FULL4D_TEST_HOST") or os.environ.get("FULL4D_COMFYUI_DIR")
                or ROOT / ".cache" / "comfyui")
PACK_NAME = "comfyui-full4d"


def host_version(host_dir: Path | None = None) -> tuple[int, ...]:
    """The host's ``comfyui_version.__version__`` as a tuple, e.g. ``(0, 3, 75)``; ``()`` if unknown."""
    text = ((host_dir or HOST_DIR) / "comfyui_version.py")
    if not text.is_file():
        return ()
    m = re.search(r"__version__\s*=\s*[\"']([0-9.]+)", text.read_text())
    return tuple(int(x) for x in m.group(1).split(".")) if m else ()


def host_has(relpath: str) -> bool:
    """Whether the test host ships the core module ``relpath`` (e.g. ``comfy_extras/nodes_gaussian_splat.py``)."""
    return (HOST_DIR / relpath).is_file()


def front_end_args() -> list[str]:
    """``--front-end-root <folder>`` when ``FULL4D_TEST_FRONTEND`` names a frontend ``static`` folder."""
    folder = os.environ.get("FULL4D_TEST_FRONTEND")
    if not folder:
        return []
    if not (Path(folder) / "index.html").is_file():
        raise RuntimeError(f"FULL4D_TEST_FRONTEND={folder!r} has no index.html: name the frontend package's "
                           "static folder (comfyui_frontend_package/static)")
    return ["--front-end-root", str(Path(folder).resolve())]


def _resolve(value):
    """A cache lookup's value: 0.3.75's caches answer directly, newer ones return a coroutine."""
    return asyncio.run(value) if inspect.isawaitable(value) else value


def require_host() -> Path:
    if not (HOST_DIR / "main.py").is_file():
        raise RuntimeError(f"ComfyUI host not found at {HOST_DIR}: run `bash scripts/setup.sh` first")
    return HOST_DIR


def make_base_dir(base: Path, extra_custom_nodes: list[Path] = (), pack: Path = ROOT) -> Path:
    """A host base directory with the pack (and test-only packs) linked into custom_nodes/."""
    for sub in ("custom_nodes", "input", "output", "temp", "models", "user"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for src, name in [(pack, PACK_NAME)] + [(p, p.name) for p in extra_custom_nodes]:
        link = base / "custom_nodes" / name
        if not link.exists():
            link.symlink_to(src, target_is_directory=True)
    return base


# ---------------------------------------------------------------------------------------------
# in-process host
# ---------------------------------------------------------------------------------------------


class _RecordingServer:
    """Stands in for PromptServer inside PromptExecutor: records every message."""

    def __init__(self) -> None:
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.messages: list[tuple[str, Any]] = []

    def send_sync(self, event, data, sid=None) -> None:
        self.messages.append((event, data))


class PromptFailed(RuntimeError):
    def __init__(self, message: str, details: Any) -> None:
        super().__init__(message)
        self.details = details


@dataclass
class InProcessHost:
    base: Path
    import_failures: list[str] = field(default_factory=list)

    @property
    def input_dir(self) -> Path:
        return self.base / "input"

    @property
    def output_dir(self) -> Path:
        return self.base / "output"

    @property
    def temp_dir(self) -> Path:
        return self.base / "temp"

    @property
    def models_dir(self) -> Path:
        return self.base / "models"

    @classmethod
    def start(cls, base: Path) -> "InProcessHost":
        host_dir = str(require_host())
        make_base_dir(base)
        if host_dir in sys.path:
            sys.path.remove(host_dir)
        sys.path.insert(0, host_dir)  # before cwd: the host's `nodes` must win over the pack's folder
        import comfy.options

        comfy.options.args_parsing = False
        from comfy.cli_args import args

        args.cpu = os.environ.get("FULL4D_TEST_HOST_DEVICE", "cpu") == "cpu"  # "gpu": scripts/gpu_check.py
        args.base_directory = str(base)
        args.disable_api_nodes = True
        import folder_paths

        folder_paths.base_path = str(base)
        folder_paths.models_dir = str(base / "models")
        for name, (paths, exts) in list(folder_paths.folder_names_and_paths.items()):
            if name == "custom_nodes":
                folder_paths.folder_names_and_paths[name] = ([str(base / "custom_nodes")], exts)
            else:
                folder_paths.folder_names_and_paths[name] = ([str(base / "models" / name)], exts)
        folder_paths.set_output_directory(str(base / "output"))
        folder_paths.set_input_directory(str(base / "input"))
        folder_paths.set_temp_directory(str(base / "temp"))
        folder_paths.filename_list_cache.clear()

        import nodes

        host = cls(base=base)
        asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
        ok = asyncio.run(nodes.load_custom_node(str(base / "custom_nodes" / PACK_NAME)))
        if not ok:
            raise RuntimeError("the host failed to import the comfyui-full4d pack (see the log above)")
        return host

    # -- nodes ------------------------------------------------------------------------------------
    def node(self, node_id: str):
        import nodes

        if node_id not in nodes.NODE_CLASS_MAPPINGS:
            raise KeyError(f"node {node_id!r} is not registered with the host")
        return nodes.NODE_CLASS_MAPPINGS[node_id]

    def run(self, prompt: dict, extra_data: dict | None = None) -> dict:
        """Validate and execute an API-format prompt; returns ``{node_id: ui_output}``.

        Raises PromptFailed with the host's own error text when validation or execution fails.
        The raw outputs of every node stay available through ``outputs(node_id)``.
        """
        import execution

        prompt_id = str(uuid.uuid4())
        valid = asyncio.run(execution.validate_prompt(prompt_id, prompt, None))
        if not valid[0]:
            raise PromptFailed(f"prompt invalid: {valid[1]} {json.dumps(valid[3], default=str)}", valid)
        server = _RecordingServer()
        if not hasattr(self, "_executor"):
            self._executor = execution.PromptExecutor(server, cache_type=execution.CacheType.CLASSIC,
                                                      cache_args={"lru": 0, "ram": 0, "ram_inactive": 0})
        ex = self._executor
        ex.server = server
        ex.execute(prompt, prompt_id, extra_data or {}, valid[2])
        self.messages = ex.status_messages
        if not ex.success:
            err = [d for e, d in ex.status_messages if e in ("execution_error", "execution_interrupted")]
            msg = err[0].get("exception_message", "interrupted") if err else "failed"
            raise PromptFailed(f"prompt failed: {msg}", err)
        return ex.history_result["outputs"]

    def outputs(self, node_id: str) -> list:
        """Raw outputs (one list per output socket) of a node of the last run."""
        entry = _resolve(self._executor.caches.outputs.get(str(node_id)))
        if entry is None:
            raise KeyError(f"node {node_id} has no cached outputs")
        return entry.outputs


# ---------------------------------------------------------------------------------------------
# real server
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientError:
    """An error text a ``Server`` sent to its client (``where``: "prompt" = the /prompt answer, "execution_error" =
    the websocket message, "history" = a failed prompt's status): ``text``, the strings the client itself sent
    in that prompt (they may come back in the message) and the server's base folder."""

    where: str
    text: str
    sent: frozenset[str]
    base: Path


CLIENT_ERRORS: list[ClientError] = []  # every error any Server of this session sent (tests/reliability)


def _strings(obj) -> set[str]:
    """Every string inside a prompt (input values, class types, node ids)."""
    if isinstance(obj, str):
        return {obj}
    if isinstance(obj, dict):
        return set().union(*(_strings(k) | _strings(v) for k, v in obj.items())) if obj else set()
    if isinstance(obj, (list, tuple)):
        return set().union(*(_strings(v) for v in obj)) if obj else set()
    return set()


def _error_texts(msg: dict) -> list[str]:
    """The texts of an ``execution_error`` payload the pack is answerable for: every string in it (message, type,
    node, the current inputs) but the ``traceback``. (The host formats the traceback itself, so its lines name the
    server's source files, ComfyUI's own frames included, whatever a node does.)"""
    return sorted(_strings({k: v for k, v in msg.items() if k != "traceback"}))


@dataclass
class Server:
    base: Path
    port: int
    proc: subprocess.Popen
    log_path: Path

    def _record(self, where: str, texts: list[str], prompt: dict | None) -> None:
        sent = frozenset(_strings(prompt or {}))
        CLIENT_ERRORS.extend(ClientError(where, t, sent, self.base) for t in texts if t)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output_dir(self) -> Path:
        return self.base / "output"

    @property
    def input_dir(self) -> Path:
        return self.base / "input"

    @property
    def models_dir(self) -> Path:
        return self.base / "models"

    @classmethod
    def start(cls, base: Path, extra_custom_nodes: list[Path] = (), timeout: float = 180.0,
              extra_args: list[str] = (), env: dict | None = None, pack: Path = ROOT) -> "Server":
        host_dir = require_host()
        make_base_dir(base, list(extra_custom_nodes), pack=pack)
        port = free_port()
        log_path = base / "server.log"
        extra_args = [*front_end_args(), *extra_args]
        proc = launch_server(host_dir, base, port, log_path, tuple(extra_args), env, timeout)
        return cls(base=base, port=port, proc=proc, log_path=log_path)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        stop_server(self.proc)

    # -- HTTP ------------------------------------------------------------------------------------
    def request(self, path: str, data: dict | None = None, timeout: float = 30.0) -> bytes:
        body = None if data is None else json.dumps(data).encode()
        req = urllib.request.Request(self.url + path, data=body,
                                     headers={"Content-Type": "application/json"} if body else {})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.read()

    def get_json(self, path: str, timeout: float = 30.0) -> Any:
        return json.loads(self.request(path, timeout=timeout))

    def post_prompt(self, prompt: dict, client_id: str | None = None) -> dict:
        """POST /prompt; returns the host's JSON answer (or its error JSON with ``_status``)."""
        payload = {"prompt": prompt, "client_id": client_id or str(uuid.uuid4())}
        try:
            return json.loads(self.request("/prompt", payload))
        except urllib.error.HTTPError as e:
            out = json.loads(e.read() or b"{}")
            self._record("prompt", [json.dumps(out)], prompt)
            out["_status"] = e.code
            return out

    def view(self, filename: str, subfolder: str = "", type: str = "output") -> bytes:
        q = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": type})
        return self.request(f"/view?{q}")

    def interrupt(self) -> None:
        self.request("/interrupt", {})

    def history(self, prompt_id: str) -> dict:
        h = self.get_json(f"/history/{prompt_id}").get(prompt_id, {})
        for kind, data in (h.get("status") or {}).get("messages") or []:
            if kind == "execution_error" and isinstance(data, dict):
                self._record("history", _error_texts(data), h.get("prompt", [None] * 3)[2] if isinstance(
                    h.get("prompt"), list) and len(h["prompt"]) > 2 else None)
        return h

    def wait_history(self, prompt_id: str, timeout: float = 300.0) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            h = self.history(prompt_id)
            if h.get("status", {}).get("completed") or h.get("status", {}).get("status_str") == "error":
                return h
            time.sleep(0.25)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout}s:\n{self.log()[-3000:]}")

    def run_ws(self, prompt: dict, timeout: float = 300.0, on_message=None) -> tuple[str, list[dict]]:
        """Queue ``prompt`` and follow it on the websocket until ``executing`` with node None.

        Returns (prompt_id, messages). Raises PromptFailed on a validation error, an
        ``execution_error`` or an ``execution_interrupted`` message.
        """
        import websocket  # websocket-client

        client_id = str(uuid.uuid4())
        ws = websocket.create_connection(f"ws://127.0.0.1:{self.port}/ws?clientId={client_id}", timeout=timeout)
        try:
            ans = self.post_prompt(prompt, client_id)
            if "prompt_id" not in ans:
                raise PromptFailed(f"prompt rejected: {json.dumps(ans)[:2000]}", ans)
            pid = ans["prompt_id"]
            messages: list[dict] = []
            deadline = time.time() + timeout
            while time.time() < deadline:
                raw = ws.recv()
                if isinstance(raw, bytes):
                    continue  # binary preview frames
                msg = json.loads(raw)
                messages.append(msg)
                if on_message is not None:
                    on_message(msg)
                data = msg.get("data", {})
                if data.get("prompt_id") not in (None, pid):
                    continue
                if msg["type"] == "execution_error":
                    self._record("execution_error", _error_texts(data), prompt)
                    raise PromptFailed(f"execution error: {data.get('exception_message')}", messages)
                if msg["type"] == "execution_interrupted":
                    raise PromptFailed(f"interrupted at node {data.get('node_id')}", messages)
                if msg["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == pid:
                    return pid, messages
            raise TimeoutError(f"prompt {pid} did not finish in {timeout}s")
        finally:
            ws.close()


def copy_into(path: Path, dest_dir: Path) -> str:
    dest_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, dest_dir / path.name)
    return path.name
