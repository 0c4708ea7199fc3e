"""The main demo: start the real ComfyUI host headless, queue the demo workflow on the embedded
synthetic scene (no downloads), and write its outputs under ./output/.

The demo graph is the paper's pipeline on a synthetic scene held out from the nano model's training: the
source video and its depth -> projection into the rig -> the embedded nano Full-4D (base + adapter + VAE through
core's loaders) -> a 4D Gaussian fit of the generated views -> orbit, export. The scene's truth only scores: at
the end the demo prints the generated views' PSNR (all pixels / pixels the projection did not cover) beside the
projection's, the fit's training PSNR and the orbit PSNR against the ray-cast truth beside the same fit on the
true views, and writes one side-by-side video.

    make demo            (or: .venv/bin/python scripts/demo.py [--workflow W] [--keep-server])
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))

from comfyui_full4d.client.run import (WorkflowError, free_port, launch_server,  # noqa: E402
                                progress_printer, run_workflow, stop_server)


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


def scores(prompt: dict, outputs: dict) -> list[str]:
    """The demo's summary lines: each Full4DEvaluate row (its JSON, shown as the node's text) and each fit's
    report, in the prompt's order."""
    lines, ref = [], {}
    for nid in sorted(outputs, key=lambda n: int(n) if n.isdigit() else 0):
        node, ct = outputs[nid], prompt.get(nid, {}).get("class_type")
        text = " ".join(node.get("text", []))
        if ct == "Full4DEvaluate" and text:
            row = json.loads(text)
            parts = [f"PSNR {row['psnr']:5.2f} dB" if "psnr" in row else ""]
            if "psnr_uncovered" in row:
                parts.append(f"uncovered {row['psnr_uncovered']:5.2f} dB")
            if "ssim" in row:
                parts.append(f"SSIM {row['ssim']:.3f}")
            ref[row["run"]] = row.get("psnr")
            lines.append(f"  {row['run']:<34} " + "  ".join(p for p in parts if p))
        elif ct == "Full4DFit4DGS" and text:
            title = prompt[nid].get("_meta", {}).get("title", f"fit {nid}")
            lines.append(f"  {title}: {text.splitlines()[0] if text else ''}")
    gen, proj = ref.get("generated views"), ref.get("projection only")
    if gen is not None and proj is not None:
        lines.append(f"  generated views beat the projection by {gen - proj:+.2f} dB (all target pixels)")
    return lines


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
        t0 = time.monotonic()
        pid, history = asyncio.run(run_workflow(server, prompt, on_message=progress_printer(prompt, sys.stdout)))
        outputs = history.get("outputs", {})
        print(f"\n[demo] done in {time.monotonic() - t0:.0f} s (prompt {pid}). Scores against the truth:")
        for line in scores(prompt, outputs):
            print(line)
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
