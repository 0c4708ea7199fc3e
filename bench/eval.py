"""The nano Full-4D on held-out synthetic scenes against baselines (issue 29); writes ``docs/results.md``.

    .venv/bin/python bench/eval.py                       # the table (8 held-out scenes, ~15 min on 2 free cores)
    .venv/bin/python bench/eval.py --scenes 1 --no-write # a quick look at one scene
    .venv/bin/python bench/eval.py --add --rows "full (ablation budget),no_projection"  # rows added to the last table

Scenes: ``make_capture(6, 9, 96, 160, seed)``, the paper's six views 60 degrees apart on the ring through the
source camera, for the held-out seeds ``--seeds`` (no training clip used a seed below
``training.nano.HELDOUT_BELOW``; the nano recipe's seeds start at 100,000). The source geometry is the source
view's own ray-cast depth (it stands in for DA3, whose weights are not here); every other input comes from the
source video alone, and the ray-cast truth of the five target views only scores.

Rows (one pipeline per row, same inputs): ``projection`` (the point-cloud render, holes black), ``projection +
inpainting`` (OpenCV Telea inpainting of the holes, covered pixels kept exactly), ``training-free`` (nano base,
``Full4DTrainingFreeSampler``'s defaults), ``zero-init`` (nano base + zero adapter through ``Full4DSampler``),
``full`` (nano base + nano adapter), the Tab. 4 ablations (each retrained from the same base with the same budget
and seed, beside a ``full`` retrained at that budget), and ``VAE round trip`` of the true views (the ceiling).
Two more rows are the trained adapter's mutation checks (does it use what the paper says it uses?): ``full
(projections swapped)``, views 1..5 given the projections of views 5..1 (view 3, opposite the source, keeps its
own), and ``full (cameras negated)``, the camera encoders' input negated; each is paired by scene against ``full``.
Models load through the host's own loaders, as core Load Diffusion Model / Load VAE and Full4DAdapterLoader do.

Columns (mean and spread over scenes; target views 1-5, all 9 frames): ``psnr_all`` / ``ssim_all`` over all pixels,
``psnr_uncovered`` / ``ssim_uncovered`` over the pixels the projection did not cover (SSIM map averaged there),
``psnr_covered`` over the pixels it did (what the model was given: the projection's own score there is what copying
it would get), ``reproj_l1`` cross-view consistency (mean |I_a(p) - I_b(q)| between two output views at the same
time, ``q`` the true-depth reprojection of ``p``, visible pixels; ``media.metrics.reprojection_error``), ``flicker``
temporal flicker above the truth's (``media.metrics.temporal_flicker``) and ``seconds`` per scene.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SEEDS = tuple(range(1, 9))
ABLATIONS = ("no_fused_attention", "no_projection", "no_intra_time", "no_cross_half")
CHECKS = ("full (projections swapped)", "full (cameras negated)")  # the adapter's mutation checks, against "full"
COLUMNS = ("psnr_all", "psnr_uncovered", "psnr_covered", "ssim_all", "ssim_uncovered", "reproj_l1", "flicker", "seconds")


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="held-out scene seeds (below 10000)")
    p.add_argument("--scenes", type=int, default=None, help="only the first N seeds")
    p.add_argument("--models", type=Path, default=ROOT / "models" / "nano", help="the shipped nano files")
    p.add_argument("--work", type=Path, default=ROOT / ".cache" / "nano",
                   help="the recipe's folder: ablation adapters in adapter_<name>/ (rows skipped when absent)")
    p.add_argument("--steps", type=int, default=20, help="sampling steps (Euler, simple schedule, cfg 1)")
    p.add_argument("--rows", default="", help="comma list of rows to run (default: all available)")
    p.add_argument("--comfyui", default=str(ROOT / ".cache" / "comfyui"))
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "results.md")
    p.add_argument("--json", type=Path, default=ROOT / "docs" / "results_nano.json")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--table-only", action="store_true", help="rewrite the tables from --json, sample nothing")
    p.add_argument("--add", action="store_true",
                   help="keep the other rows of --json (same seeds and steps) and add or replace only --rows")
    return p.parse_args(argv)


# ---- pixel scores ---------------------------------------------------------------------------

def score(out: torch.Tensor, truth: torch.Tensor, masks: torch.Tensor, depth: torch.Tensor, cams) -> dict:
    """out, truth (V-1, T, H, W, 3) in [0, 1]; masks (V-1, T, H, W) bool covered; depth (V-1, T, H, W) true
    depth and cams (V-1,) the targets' metric cameras. Returns the columns (module docstring) but seconds; the
    PSNR / SSIM definitions are ``media.metrics``' (what Full4DEvaluate reports)."""
    from comfyui_full4d.media.metrics import (psnr, psnr_masked, reprojection_error, ssim, ssim_masked,
                                              temporal_flicker)

    out = out.float().clamp(0, 1)
    hole = ~masks.bool()
    rep = reprojection_error(depth, cams, images=out, stride=2)
    return {"psnr_all": psnr(out, truth), "psnr_uncovered": psnr_masked(out, truth, hole),
            "psnr_covered": psnr_masked(out, truth, ~hole),
            "ssim_all": ssim(out, truth), "ssim_uncovered": ssim_masked(out, truth, hole),
            "reproj_l1": rep["photometric_l1"], "flicker": temporal_flicker(out, truth)}


def inpaint(renders: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """OpenCV Telea inpainting (radius 3) of the holes of every frame; covered pixels are kept as they are."""
    import cv2
    import numpy as np

    out = renders.clone()
    flat, m = out.reshape(-1, *out.shape[-3:]), masks.reshape(-1, *masks.shape[-2:])
    for i in range(flat.shape[0]):
        img = (flat[i].numpy() * 255).round().astype(np.uint8)
        holes = (~m[i]).numpy().astype(np.uint8) * 255
        filled = torch.from_numpy(cv2.inpaint(img, holes, 3, cv2.INPAINT_TELEA)).float() / 255
        flat[i] = torch.where(m[i][..., None], flat[i], filled)
    return out


# ---- the pipelines --------------------------------------------------------------------------

class Models:
    """The nano files loaded once through the host's loaders (core Load Diffusion Model / Load VAE)."""

    def __init__(self, models: Path):
        from comfyui_full4d.host.nano import load_base, load_vae
        from comfyui_full4d.training.nano import NANO_FILES

        self.base = load_base(models / NANO_FILES["base"])
        self.vae = load_vae(models / NANO_FILES["vae"])
        self.adapter_file = models / NANO_FILES["adapter"]
        self._patched: dict[str, object] = {}

    def patched(self, adapter: Path | None):
        from comfyui_full4d.host.patch import attach_adapter, make_adapter

        key = str(adapter)
        if key not in self._patched:
            self._patched[key] = attach_adapter(self.base, make_adapter(self.base, None if adapter is None else str(adapter)))
        return self._patched[key]

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, T, H, W, 3) -> (N, C, t, h, w) VAE latents (the host VAE, one video per call as VAEEncode)."""
        return torch.cat([self.vae.encode(f) for f in frames])

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(N, C, t, h, w) -> (N, T, H, W, 3)."""
        return torch.stack([self.vae.decode(z[i:i + 1])[0] for i in range(z.shape[0])]).float()


def run_row(row: str, inp: dict, models: Models, steps: int, work: Path) -> torch.Tensor:
    """(V-1, T, H, W, 3) target views of one row."""
    from comfyui_full4d.diffusion.adapter import negated_camera_features
    from comfyui_full4d.diffusion.nano import empty_context
    from comfyui_full4d.diffusion.training_free import TrainingFreeConfig
    from comfyui_full4d.host.sampling import generate_views
    from comfyui_full4d.host.training_free import sample_rig_training_free
    from comfyui_full4d.training.nano import SHIFT

    cap, renders, masks = inp["cap"], inp["renders"], inp["masks"]
    if row == "projection":
        return renders[1:]
    if row == "projection + inpainting":
        return inpaint(renders[1:], masks[1:])
    if row == "VAE round trip":
        return models.decode(models.encode(cap.views[1:]))
    cond = [[empty_context(), {}]]
    if row == "training-free":
        V, T = masks.shape[:2]
        src = {"samples": models.encode(cap.source[None])}
        proj = {"samples": models.encode(renders[1:])}
        lat = sample_rig_training_free(models.base, cond, cond, src, proj, masks.reshape(V * T, *masks.shape[2:]).float(),
                                       cap.rig, config=TrainingFreeConfig(), seed=0, steps=steps, cfg=1.0, shift=SHIFT,
                                       sampler_name="euler", scheduler="simple")
        return models.decode(lat["samples"])
    if row in CHECKS:
        projections = renders[1:].flip(0) if row == CHECKS[0] else renders[1:]
        with negated_camera_features() if row == CHECKS[1] else contextlib.nullcontext():
            return generate_views(models.patched(models.adapter_file), models.vae, cap.source, projections, cap.rig,
                                  cond, steps=steps, shift=SHIFT)
    name = "full" if row.startswith("full") else row  # "full (ablation budget)": the full run beside the ablations
    adapter = {"zero-init": None, "full": models.adapter_file}.get(row, work / f"adapter_ab_{name}" / "adapter.safetensors")
    return generate_views(models.patched(adapter), models.vae, cap.source, renders[1:], cap.rig, cond, steps=steps,
                          shift=SHIFT, ablation="full" if row == "zero-init" else name)


ABLATION_REFERENCE = "full (ablation budget)"
ROWS = ("projection", "projection + inpainting", "training-free", "zero-init", "full", *CHECKS, ABLATION_REFERENCE,
        *ABLATIONS, "VAE round trip")  # the table's order


def available_rows(work: Path) -> list[str]:
    """``ROWS`` but the ablation-budget adapters not trained in ``work``."""
    def trained(row: str) -> bool:
        name = "full" if row == ABLATION_REFERENCE else row
        return (work / f"adapter_ab_{name}" / "adapter.safetensors").is_file()

    return [r for r in ROWS if (r != ABLATION_REFERENCE and r not in ABLATIONS) or trained(r)]


# ---- the table ------------------------------------------------------------------------------

def aggregate(per_scene: dict[str, list[dict]]) -> list[dict]:
    """Mean and sample standard deviation over scenes per row and column."""
    rows = []
    for name, items in per_scene.items():
        row = {"row": name}
        for c in COLUMNS:
            vals = [x[c] for x in items if x.get(c) is not None and math.isfinite(x[c])]
            row[c] = (statistics.fmean(vals) if vals else float("nan"),
                      statistics.stdev(vals) if len(vals) > 1 else 0.0)
        rows.append(row)
    return rows


PAIRED = ("psnr_all", "psnr_uncovered", "psnr_covered", "reproj_l1")


def paired_markdown(per_scene: dict[str, list[dict]], ref: str = ABLATION_REFERENCE, names: tuple = ABLATIONS,
                    label: str = "ablation minus full (same budget)") -> str:
    """Each row of ``names`` (default: the Tab. 4 ablations) minus ``ref`` (the full adapter trained at their
    budget), scene by scene: mean ± standard deviation of the differences and how many scenes got worse (PSNR down,
    reprojection error up); empty without them."""
    rows = [r for r in per_scene if r in names]
    if ref not in per_scene or not rows:
        return ""
    head = f"| {label} | " + " | ".join(f"{c} (scenes worse)" for c in PAIRED) + " |\n"
    out = head + "|---|" + "---|" * len(PAIRED) + "\n"
    for r in rows:
        cells = []
        for c in PAIRED:
            diffs = [a[c] - b[c] for a, b in zip(per_scene[r], per_scene[ref]) if c in a and c in b]
            if not diffs:  # a column added after these rows were scored (``--add`` on an older json)
                cells.append("n/a")
                continue
            worse = sum(d > 0 if c == "reproj_l1" else d < 0 for d in diffs)
            sd = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
            cells.append(f"{statistics.fmean(diffs):+.3f} ± {sd:.3f} ({worse}/{len(diffs)})")
        out += f"| {r} | " + " | ".join(cells) + " |\n"
    return out


def markdown(rows: list[dict]) -> str:
    head = "| row | " + " | ".join(COLUMNS) + " |\n|---|" + "---|" * len(COLUMNS) + "\n"
    fmt = lambda m, s: "n/a" if not math.isfinite(m) else f"{m:.3f} ± {s:.3f}"  # noqa: E731
    return head + "".join("| " + r["row"] + " | " + " | ".join(fmt(*r[c]) for c in COLUMNS) + " |\n" for r in rows)


def main(argv=None) -> int:
    a = _args(argv)
    if a.table_only:
        from comfyui_full4d.common.io import write_text

        old = json.loads(a.json.read_text())
        text = tables(old["per_scene"])
        print(text)
        if not a.no_write:
            write_text(a.out, results_markdown(text, old["seeds"], old["steps"], a.out))
        return 0
    from comfyui_full4d.host.boot import import_host

    import_host(a.comfyui, cpu=not torch.cuda.is_available())
    seeds = [int(s) for s in a.seeds.split(",") if s.strip()][:a.scenes]
    from comfyui_full4d.training.nano import HELDOUT_BELOW, heldout_scene

    if any(s >= HELDOUT_BELOW for s in seeds):
        raise SystemExit(f"--seeds must be held out (below {HELDOUT_BELOW})")
    models = Models(a.models)
    rows = [r.strip() for r in a.rows.split(",") if r.strip()] or available_rows(a.work)
    per_scene: dict[str, list[dict]] = {r: [] for r in rows}
    t_all = time.time()
    for seed in seeds:
        inp = heldout_scene(seed)
        cap = inp["cap"]
        cams = cap.metric_cameras[1:]
        for row in rows:
            t0 = time.time()
            with torch.inference_mode():
                out = run_row(row, inp, models, a.steps, a.work)
            res = score(out, cap.views[1:], inp["masks"][1:], cap.depth[1:], cams)
            res["seconds"] = time.time() - t0
            per_scene[row].append(res)
            print(f"[eval] seed {seed} {row}: " + ", ".join(f"{k} {v:.3f}" for k, v in res.items()), flush=True)
    if a.add:
        per_scene = merged_rows(a.json, per_scene, seeds, a.steps)
    text = tables(per_scene)
    print("\n" + text)
    if not a.no_write:
        from comfyui_full4d.common.io import write_json, write_text

        write_json(a.json, {"seeds": seeds, "steps": a.steps, "per_scene": per_scene,
                            "seconds_total": time.time() - t_all})
        write_text(a.out, results_markdown(text, seeds, a.steps, a.out))
    return 0


def merged_rows(path: Path, new: dict[str, list[dict]], seeds: list[int], steps: int) -> dict[str, list[dict]]:
    """The per-scene rows of an earlier run (``path``, its JSON) with ``new`` added or replacing rows of the same
    name, in ``ROWS``' order; the earlier run must have scored the same seeds at the same steps."""
    old = json.loads(path.read_text())
    if old["seeds"] != seeds or old["steps"] != steps:
        raise SystemExit(f"--add: {path} scored seeds {old['seeds']} at {old['steps']} steps, this run {seeds} at "
                         f"{steps}: run the whole table instead")
    rows = {**old["per_scene"], **new}
    order = {r: i for i, r in enumerate(ROWS)}
    return dict(sorted(rows.items(), key=lambda kv: order.get(kv[0], len(order))))


def tables(per_scene: dict[str, list[dict]]) -> str:
    """The markdown of the main table and, with their rows, the paired ones under it (the mutation checks against
    ``full``, the Tab. 4 ablations against ``full (ablation budget)``)."""
    checks = paired_markdown(per_scene, "full", CHECKS, "check minus full")
    paired = paired_markdown(per_scene)
    note = (f"\nThe adapter's mutation checks, paired by scene against `full`:\n\n{checks}" if checks else "") + \
        (f"\nTab. 4 ablations, paired by scene against `{ABLATION_REFERENCE}`:\n\n{paired}" if paired else "")
    return markdown(aggregate(per_scene)) + note


def results_markdown(table: str, seeds: list[int], steps: int, path: Path) -> str:
    """docs/results.md with this table in its section (the rest of the file is kept)."""
    body = (f"## Nano Full-4D on held-out scenes (issue 29)\n\nProduced by `python bench/eval.py` "
            f"(seeds {', '.join(map(str, seeds))}; {steps} Euler steps, cfg 1, shift 3; mean ± standard deviation "
            f"over scenes). Rows and columns: the docstring of `bench/eval.py`.\n\n{table}")
    return replace_section(path, "nano-eval", body)


def replace_section(path: Path, name: str, body: str) -> str:
    """The text of ``path`` with ``body`` between its ``<!-- name:start -->`` / ``<!-- name:end -->`` markers
    (appended with them when absent); the rest of the file is kept."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    old = path.read_text() if path.is_file() else "# Results\n"
    text = f"{start}\n{body}\n{end}"
    if start in old and end in old:
        return old[:old.index(start)] + text + old[old.index(end) + len(end):]
    return old.rstrip() + "\n\n" + text + "\n"


if __name__ == "__main__":
    sys.exit(main())
