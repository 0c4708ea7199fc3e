"""The 4DGS fit as Full4DFit4DGS runs it (``gaussians.pipeline.fit_from_grid``) on the synthetic capture, with
the demo workflow's fit values: ours (init from every view's depth, the estimated background) side by side with
the node's init before issue 13 (source view's frame-0 depth only, black background) in the same run.

Prints a markdown table: training-view PSNR (all V x T images), PSNR of the App. B orbit against ray-cast
ground truth (the demo's orbit render: 48 cameras, time sweeping), wall time, Gaussian count, and the ratios.

    .venv/bin/python bench/fit_node.py                    # 6 views x 9 frames at 96x160 (the demo size)
    .venv/bin/python bench/fit_node.py --size 384x672 --frames 21 --only ours   # the paper's size
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from comfyui_full4d.gaussians import pipeline
from comfyui_full4d.media.metrics import psnr
from comfyui_full4d.geometry.rig import interpolate_rig_cameras
from comfyui_full4d.media.synthetic import make_capture, make_scene, render

DEMO = Path(__file__).resolve().parents[1] / "workflows" / "api" / "demo_synthetic_api.json"
BASELINE = "source: depth of frame 0"


def fit_values() -> dict:
    """The demo workflow's Full4DFit4DGS widget values and its Full4DFitOptions node's (the options' defaults where
    the demo connects none)."""
    from dataclasses import asdict

    prompt = json.loads(DEMO.read_text())
    node = next(v for v in prompt.values() if v["class_type"] == "Full4DFit4DGS")  # both demo fits: the same values
    values = {**asdict(pipeline.FitOptions()), **{k: v for k, v in node["inputs"].items() if not isinstance(v, list)}}
    if "options" in node["inputs"]:
        options = prompt[str(node["inputs"]["options"][0])]["inputs"]
        values.update({k: v for k, v in options.items() if not isinstance(v, list)})
    return values


def run(cap, values: dict, init: str, orbit_frames: int) -> dict:
    """One node-path fit (its own background rule: black for the source-view init, as before issue 13)."""
    fit_keys = ("iterations", "lr_means", "lr_planes", "lambda_dssim", "lambda_tv", "max_gaussians", "prune_opacity",
                "sh_degree")
    cfg = pipeline.node_fit_config(**{k: values[k] for k in fit_keys})
    t0 = time.time()
    scene, _, report = pipeline.fit_from_grid(cap.view_major, cap.rig, cfg, cap.geometry(), init=init)
    seconds = time.time() - t0
    frames = pipeline.render_rig(scene, interpolate_rig_cameras(cap.rig, 120), True, orbit_frames, 0.0, 1.0)
    cams = interpolate_rig_cameras(interpolate_rig_cameras(cap.rig, 120), orbit_frames).metric(cap.scale)
    times = torch.linspace(0.0, 1.0, orbit_frames)
    gt = torch.stack([render(make_scene(0), cams[i], times[i:i + 1])[0][0] for i in range(orbit_frames)])
    orbit = sum(psnr(a, b) for a, b in zip(frames, gt)) / orbit_frames
    return {"train": report.psnr, "orbit": orbit, "seconds": seconds, "count": report.count, "init": report.init}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="96x160", help="HxW of the views")
    ap.add_argument("--frames", type=int, default=9)
    ap.add_argument("--iterations", type=int, default=None, help="default: the demo workflow's")
    ap.add_argument("--orbit-frames", type=int, default=48)
    ap.add_argument("--only", choices=["ours", "baseline", "both"], default="both")
    a = ap.parse_args()
    H, W = map(int, a.size.split("x"))
    values = fit_values()
    if a.iterations:
        values["iterations"] = a.iterations
    torch.manual_seed(0)
    cap = make_capture(6, a.frames, H, W)
    rows = []
    if a.only in ("ours", "both"):
        rows.append(("ours (all views' depth, estimated background)", run(cap, values, "auto", a.orbit_frames)))
    if a.only in ("baseline", "both"):
        rows.append(("source view's depth only (black background)", run(cap, values, BASELINE, a.orbit_frames)))
    print(f"\n6 views x {a.frames} frames at {H}x{W}, {values['iterations']} iterations, SH {values['sh_degree']}, "
          f"max {values['max_gaussians']:,} Gaussians, {torch.get_num_threads()} CPU threads\n")
    print("| node path | init | training PSNR | orbit PSNR (ray-cast GT) | wall time | Gaussians |")
    print("|---|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['init']} | {r['train']:.2f} dB | {r['orbit']:.2f} dB | {r['seconds']:.0f} s (CPU) | "
              f"{r['count']:,} |")
    if len(rows) == 2:
        (_, o), (_, b) = rows
        print(f"| ours - source only | | {o['train'] - b['train']:+.2f} dB | {o['orbit'] - b['orbit']:+.2f} dB | "
              f"{o['seconds'] / b['seconds']:.2f}x | |")


if __name__ == "__main__":
    main()
