"""The main demo: start the real ComfyUI host headless, queue the demo workflow on the embedded
synthetic scene (no downloads), and write its outputs under ./output/.

    make demo            (or: .venv/bin/python scripts/demo.py [--workflow W] [--keep-server])
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))

from comfyui_full4d.run import (WorkflowError, free_port, launch_server,  # noqa: E402
                                run_workflow, stop_server, _progress_printer)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workflow", type=Path, default=ROOT / "workflows" / "api" / "demo_synthetic_api.json")
    ap.add_argument("--out", type=Path, default=ROOT / "output")
    ap.add_argument("--comfyui", type=Path, default=ROOT / ".cache" / "comfyui")
    a = ap.parse_args()
    base = ROOT / ".cache" / "demo_base"
    for sub in ("custom_nodes", "input", "models", "temp", "user"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / "comfyui-full4d"
    if not link.exists():
        link.symlink_to(ROOT, target_is_directory=True)
    a.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = base / "server.log"
    print(f"[demo] starting ComfyUI ({a.comfyui}) on 127.0.0.1:{port}; log: {log}")
    proc = launch_server(a.comfyui, base, port, log, ("--output-directory", str(a.out)))
    try:
        prompt = json.loads(a.workflow.read_text())
        print(f"[demo] queueing {a.workflow.relative_to(ROOT)}")
        server = f"http://127.0.0.1:{port}"
        pid, history = asyncio.run(run_workflow(server, prompt, on_message=_progress_printer()))
        files = [p for node in history.get("outputs", {}).values() for items in node.values()
                 if isinstance(items, list) for p in items if isinstance(p, dict) and "filename" in p]
        print(f"\n[demo] done (prompt {pid}). Outputs in {a.out}:")
        for f in files:
            print(f"  {a.out / f.get('subfolder', '') / f['filename']}")
        return 0
    except WorkflowError as e:
        print(f"\n[demo] failed: {e}\n(server log: {log})", file=sys.stderr)
        return 1
    finally:
        stop_server(proc)


if __name__ == "__main__":
    sys.exit(main())
