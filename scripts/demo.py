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

from comfyui_full4d.client.run import (WorkflowError, free_port, launch_server,  # noqa: E402
                                run_workflow, stop_server, _progress_printer)


def written_files(outputs: dict, out: Path) -> list[Path]:
    """Every file the prompt wrote: images / videos the host lists as {filename, subfolder}, and the files a
    Full4DSave4DGS node lists in its text (paths relative to the output folder), with their folder."""
    paths: list[Path] = []
    for node in outputs.values():
        for key, items in node.items():
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict) and "filename" in item and item.get("type", "output") == "output":
                    paths.append(out / item.get("subfolder", "") / item["filename"])
                elif key == "text" and isinstance(item, str):
                    rels = [line for line in item.splitlines() if line.endswith((".ply", ".safetensors"))]
                    if rels:
                        paths.append(out / Path(rels[0]).parent)
                        paths += [out / r for r in rels]
    return paths


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
        print(f"[demo] queueing {a.workflow}")
        server = f"http://127.0.0.1:{port}"
        pid, history = asyncio.run(run_workflow(server, prompt, on_message=_progress_printer()))
        outputs = history.get("outputs", {})
        print(f"\n[demo] done (prompt {pid}).")
        for nid, node in outputs.items():
            if prompt.get(nid, {}).get("class_type") == "Full4DFit4DGS":
                print(f"[demo] 4DGS fit: {' '.join(node.get('text', []))}")
        print(f"[demo] files written under {a.out}:")
        for path in written_files(outputs, a.out):
            print(f"  {path}")
        return 0
    except WorkflowError as e:
        print(f"\n[demo] failed: {e}\n(server log: {log})", file=sys.stderr)
        return 1
    finally:
        stop_server(proc)


if __name__ == "__main__":
    sys.exit(main())
