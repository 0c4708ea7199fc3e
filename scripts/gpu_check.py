"""Every CUDA path of the pack in one command, as a markdown table (issue 20). Sized for < 8 minutes on one
H100 / H200; each part runs in its own subprocess under its own time cap, so a crash, an OOM or a hang costs
that part's rows only and the table still prints.

    python scripts/gpu_check.py             # on the GPU machine (docs/benchmarks.md: what travels there)
    python scripts/gpu_check.py --dry-run   # CPU, tiny sizes, CUDA parts "skipped: no CUDA" (CI runs this)

Parts:
1. ``pytest -m cuda``: Flex vs exact attention forward + backward, gsplat vs the torch compositor forward and
   gradients, the fit on CUDA (every tensor on the GPU, gsplat), resume across devices, the sampler and the
   training-free sampler with the tiny random Wan2.2 on CUDA vs CPU, FMD with the teacher on the GPU;
2. fused T-V attention at V=6, T=21, S=252 (N=63,504), 24 heads x 128, bf16: Flex vs unmasked SDPA (Flash)
   vs the exact path, forward and forward+backward, peak memory, Flex's and exact's outputs compared;
3. the node-path fit at 384x672, 6 views x 21 frames, the demo's fit values with 3000 iterations and the
   default 120,000-Gaussian budget: it/s, wall time, training and orbit PSNR, peak VRAM; the torch
   compositor on the same GPU for its first iterations (it/s);
4. the host's memory manager: the tiny Wan2.2 + zero adapter through Full4DSampler with views_per_pass auto
   (0), peak VRAM against the model's own estimate (weights + ``diffusion.packing.activation_bytes``).

The table also goes to ``$OUT/gpu_check.md`` (and the rows to ``$OUT/gpu_check.json``) when ``OUT`` is set.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARK = "GPU_CHECK_ROWS "
NO_CUDA = "skipped: no CUDA"
CAPS = {"gsplat": 150, "tests": 110, "attention": 90, "fit": 200, "memory": 45}  # seconds per part on the GPU
BUDGET = 470  # seconds for all parts together: a part gets min(its cap, what is left)
CUDA_TEST_FILES = ["tests/test_cuda.py", "tests/test_attention.py", "tests/test_rasterize.py"]


def _row(part: str, check: str, status: str, result: str = "") -> dict:
    return {"part": part, "check": check, "status": status, "result": result}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


_SHIM: Path | None = None


def _env() -> dict:
    """The environment of the parts' subprocesses: ``comfyui_full4d`` importable without installing the pack
    (a folder holding only a link to it, so the repo's ``nodes/`` never shadows the host's)."""
    global _SHIM
    if _SHIM is None:  # one per run: a fixed path would outlive its checkout or point at another one
        _SHIM = Path(tempfile.mkdtemp(prefix="full4d_gpu_check_"))
        atexit.register(shutil.rmtree, _SHIM, True)
        (_SHIM / "comfyui_full4d").symlink_to(ROOT / "comfyui_full4d", target_is_directory=True)
    shim = _SHIM
    paths = [str(shim)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    # MAX_JOBS: gsplat's first-use kernel build (torch cpp_extension + ninja) on every core
    jobs = os.environ.get("MAX_JOBS", str(os.cpu_count()))
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "MAX_JOBS": jobs}


# ---- part 0: gsplat's CUDA kernels (built by nvcc on first use, cached after) ---------------------------
def part_gsplat(dry: bool) -> list[dict]:
    if dry or not _cuda():
        return [_row("0 gsplat", "build / load gsplat's CUDA kernels", NO_CUDA)]
    import torch

    from comfyui_full4d.gaussians.rasterize import rasterize

    t0 = time.perf_counter()
    n = 64
    g = torch.Generator(device="cuda").manual_seed(0)
    means = torch.randn(n, 3, device="cuda", generator=g) * 0.3 + torch.tensor([0.0, 0.0, 3.0], device="cuda")
    quats = torch.tensor([[1.0, 0, 0, 0]], device="cuda").expand(n, 4)
    rgb, _ = rasterize(means, quats, torch.full((n, 3), 0.05, device="cuda"), torch.full((n,), 0.8, device="cuda"),
                       torch.rand(n, 3, device="cuda", generator=g), torch.eye(4, device="cuda"),
                       torch.tensor([[50.0, 0, 32], [0, 50.0, 32], [0, 0, 1]], device="cuda"), 64, 64)
    ok = bool(torch.isfinite(rgb).all()) and float(rgb.sum()) > 0
    return [_row("0 gsplat", "build / load gsplat's CUDA kernels", "passed" if ok else "FAILED",
                 f"{time.perf_counter() - t0:.0f} s")]


# ---- part 1: the CUDA tests ------------------------------------------------------------------------------
def part_tests(dry: bool) -> list[dict]:
    env = {**os.environ, "FULL4D_TEST_HOST_DEVICE": "gpu" if _cuda() else "cpu"}
    with tempfile.TemporaryDirectory() as tmp:
        xml = os.path.join(tmp, "junit.xml")
        subprocess.run([sys.executable, "scripts/run_tests.py", *CUDA_TEST_FILES, "-m", "cuda", "-q",
                        "-p", "no:cacheprovider", f"--junitxml={xml}"], cwd=ROOT, env=env, capture_output=True)
        if not os.path.exists(xml):
            return [_row("1 tests", "pytest -m cuda", "FAILED", "pytest wrote no report (collection error?)")]
        cases = ET.parse(xml).getroot().iter("testcase")
        rows = []
        for c in cases:
            name = f"{c.get('classname', '').split('.')[-1]}::{c.get('name')}"
            secs = f"{float(c.get('time', 0)):.1f} s"
            skip, bad = c.find("skipped"), c.find("failure")
            bad = c.find("error") if bad is None else bad  # (an Element without children is falsy: no `or`)
            if bad is not None:
                rows.append(_row("1 tests", name, "FAILED", (bad.get("message") or "")[:160].replace("\n", " ")))
            elif skip is not None:
                why = NO_CUDA if not _cuda() else f"skipped: {skip.get('message', '')[:100]}"
                rows.append(_row("1 tests", name, why))
            else:
                rows.append(_row("1 tests", name, "passed", secs))
    return rows or [_row("1 tests", "pytest -m cuda", "FAILED", "no test collected")]


# ---- part 2: fused T-V attention at the paper's size -----------------------------------------------------
def _timed(fn, cuda: bool, reps: int = 3) -> tuple[float, float]:
    """(seconds per call, peak MiB above the start) of fn()."""
    import torch

    fn()  # warm-up (compiles Flex)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    if cuda:
        torch.cuda.synchronize()
    secs = (time.perf_counter() - t0) / reps
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if cuda else float("nan")
    return secs, peak


def part_attention(dry: bool) -> list[dict]:
    import torch
    import torch.nn.functional as F

    from comfyui_full4d.diffusion.attention import fused_tv_attention

    cuda = _cuda() and not dry
    V, T, S, H, D = (6, 21, 252, 24, 128) if cuda else (2, 2, 8, 2, 16)
    dev, dt = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    N = V * 2 * T * S
    g = torch.Generator(device=dev).manual_seed(0)
    q, k, v = (torch.randn(1, H, N, D, device=dev, dtype=dt, generator=g) for _ in range(3))
    size = f"V={V} T={T} S={S} N={N:,} {H}x{D} {str(dt).split('.')[-1]}"
    methods = {"flex": lambda a, b, c: fused_tv_attention(a, b, c, V, 2 * T, backend="flex"),
               "sdpa (unmasked)": lambda a, b, c: F.scaled_dot_product_attention(a, b, c),
               "exact": lambda a, b, c: fused_tv_attention(a, b, c, V, 2 * T, backend="exact")}
    rows, outs = [], {}
    for name, fn in methods.items():
        if name == "flex" and not cuda:
            rows.append(_row("2 attention", f"{name} fwd / fwd+bwd, {size}", NO_CUDA))
            continue
        try:
            with torch.no_grad():
                outs[name] = fn(q, k, v).float()
                fwd, peak_f = _timed(lambda: fn(q, k, v), cuda)
            leaves = [x.clone().requires_grad_(True) for x in (q, k, v)]
            both, peak_b = _timed(lambda: fn(*leaves).float().sum().backward(), cuda)
            rows.append(_row("2 attention", f"{name} fwd / fwd+bwd, {size}", "ran",
                             f"{fwd * 1e3:.1f} / {both * 1e3:.1f} ms"
                             + (f"; peak {peak_f:.0f} / {peak_b:.0f} MiB" if cuda else "")))
        except Exception as e:  # noqa: BLE001 - one method's failure is a row, not the end of the part
            rows.append(_row("2 attention", f"{name}, {size}", "FAILED", f"{type(e).__name__}: {e}"[:160]))
        if cuda:
            torch.cuda.empty_cache()
    if "flex" in outs and "exact" in outs:
        diff = float((outs["flex"] - outs["exact"]).abs().max())
        rows.append(_row("2 attention", "flex vs exact forward, max |diff|", "passed" if diff < 5e-2 else "FAILED",
                         f"{diff:.2e} (bf16)"))
    return rows


# ---- part 3: the node-path fit ---------------------------------------------------------------------------
class _Stop(Exception):
    """Raised from on_step to end a timing-only fit after its first iterations."""


def _fit_once(cap, values: dict, device: str, backend: str, iterations: int, stop_after: int | None) -> dict:
    """One ``fit_from_grid`` with the renders through ``backend``; loop it/s from the progress callback's
    timestamps (init and the final PSNR renders excluded). ``stop_after``: end after that many iterations."""
    import torch

    from comfyui_full4d.gaussians import pipeline

    rmod = importlib.import_module("comfyui_full4d.gaussians.rasterize")  # (the package exports the function)
    rmod.rasterize.__kwdefaults__["backend"] = backend  # the fit's renders through this backend
    cuda = device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    stamps: dict[int, float] = {}

    def on_step(done: int, total: int) -> None:
        if 2 <= done <= iterations + 1:  # done = 1 + iteration (pipeline.fit_from_grid)
            if cuda and done in (2, iterations + 1):
                torch.cuda.synchronize()
            stamps[done - 1] = time.perf_counter()
            if stop_after is not None and done - 1 >= stop_after:
                raise _Stop

    keys = ("lr_means", "lr_planes", "lambda_dssim", "lambda_tv", "max_gaussians", "prune_opacity", "sh_degree")
    cfg = pipeline.node_fit_config(iterations=iterations, **{k: values[k] for k in keys})
    t0 = time.perf_counter()
    scene = rep = None
    try:
        scene, _, rep = pipeline.fit_from_grid(cap.view_major, cap.rig, cfg, cap.geometry(), init="auto",
                                               orbit_frames=8, on_step=on_step, device=device,
                                               checkpoint_every=values.get("checkpoint_every", 500))
    except _Stop:
        pass
    if cuda:
        torch.cuda.synchronize()
    last = max(stamps)
    its = (last - 1) / max(stamps[last] - stamps[1], 1e-9)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    return {"scene": scene, "rep": rep, "secs": time.perf_counter() - t0, "its": its, "n": last, "peak": peak}


def _orbit_psnr(scene, cap, frames: int) -> float:
    """Mean PSNR of the App. B orbit render against ray-cast ground truth (bench/fit_node.py's measure)."""
    import torch

    from comfyui_full4d.gaussians import pipeline
    from comfyui_full4d.geometry.rig import interpolate_rig_cameras
    from comfyui_full4d.media.metrics import psnr
    from comfyui_full4d.media.synthetic import make_scene, render

    orb = interpolate_rig_cameras(cap.rig, 120)
    got = pipeline.render_rig(scene, orb, True, frames, 0.0, 1.0).cpu()
    cams = interpolate_rig_cameras(orb, frames).metric(cap.scale)
    times = torch.linspace(0.0, 1.0, frames)
    gt = [render(make_scene(0), cams[i], times[i:i + 1])[0][0] for i in range(frames)]
    return sum(psnr(a, b) for a, b in zip(got, gt)) / frames


def part_fit(dry: bool) -> list[dict]:
    sys.path.insert(0, str(ROOT / "bench"))
    from fit_node import fit_values

    from comfyui_full4d.media.synthetic import make_capture

    cuda = _cuda() and not dry
    V, T, H, W = (6, 21, 384, 672) if cuda else (3, 2, 24, 32)
    its, budget, torch_its = (3000, 120_000, 60) if cuda else (8, 1000, 4)
    values = {**fit_values(), "max_gaussians": budget}
    cap = make_capture(V, T, H, W)
    size = f"{V} x {T} images of {H}x{W}, {budget:,} Gaussians"
    rows = [] if cuda else [_row("3 fit", f"gsplat, {its} its, {size}", NO_CUDA)]
    runs = ([("gsplat", None)] if cuda else [("torch", None)]) + [("torch", torch_its)] * cuda
    for backend, stop in runs:
        what = f"{backend} compositor, {its} its{'' if stop is None else f' (timed over the first {stop})'}, {size}"
        try:
            r = _fit_once(cap, values, "cuda" if cuda else "cpu", backend, its, stop)
            text = f"{r['its']:.1f} it/s over {r['n']} its" + (f"; peak {r['peak']:.2f} GiB" if cuda else "")
            if r["rep"] is not None:
                text += (f"; {r['secs']:.0f} s in all; training {r['rep'].psnr:.2f} dB, orbit "
                         f"{_orbit_psnr(r['scene'], cap, 8):.2f} dB; {r['rep'].count:,} Gaussians")
            rows.append(_row("3 fit", what, "ran", text))
        except Exception as e:  # noqa: BLE001 - a failed backend is a row
            rows.append(_row("3 fit", what, "FAILED", f"{type(e).__name__}: {e}"[:160]))
    return rows


# ---- part 4: the host's memory manager through Full4DSampler ---------------------------------------------
def part_memory(dry: bool) -> list[dict]:
    if dry or not _cuda():
        return [_row("4 memory", "Full4DSampler, views_per_pass auto: peak VRAM vs estimate", NO_CUDA)]
    import torch

    os.environ["FULL4D_TEST_HOST_DEVICE"] = "gpu"
    sys.path.insert(0, str(ROOT / "tests"))
    from fixtures.wan import load_tiny_wan, random_rig_inputs
    from host import InProcessHost

    import comfy.model_management as mm
    from comfyui_full4d.host.patch import load_full4d
    from comfyui_full4d.diffusion.packing import activation_bytes

    host = InProcessHost.start(Path(tempfile.mkdtemp(prefix="gpu_check_host")))
    V, T, h, w = 6, 6, 24, 42
    rig, src, proj, pos, neg, _ = random_rig_inputs(V, T, h, w)
    model = load_full4d(load_tiny_wan(), "none (zero-init)")
    dm = model.model.diffusion_model
    weights = mm.module_size(model.model)
    estimate = weights + activation_bytes(V, T, h, w, dm.dim, dm.ffn_dim, 4)
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    node = host.node("Full4DSampler")
    (out,) = node.execute(model=model, positive=pos, negative=neg, source={"samples": src},
                          projections={"samples": proj}, rig=rig, seed=0, steps=2, cfg=5.0, shift=5.0,
                          sampler_name="euler", scheduler="simple", views_per_pass=0, include_source=False).result
    peak = torch.cuda.max_memory_allocated() - base
    ok = bool(torch.isfinite(out["samples"]).all())
    return [_row("4 memory", f"Full4DSampler V={V} T={T} {h}x{w} latents, views_per_pass auto",
                 "passed" if ok else "FAILED",
                 f"peak {peak / 2**20:.0f} MiB vs estimate {estimate / 2**20:.0f} MiB (ratio {peak / estimate:.2f}); "
                 f"weights {weights / 2**20:.0f} MiB, {mm.get_torch_device()}")]


LABELS = {"gsplat": "0 gsplat", "tests": "1 tests", "attention": "2 attention", "fit": "3 fit", "memory": "4 memory"}
PARTS = {"gsplat": part_gsplat, "tests": part_tests, "attention": part_attention, "fit": part_fit,
         "memory": part_memory}


def _run_part(name: str, dry: bool, left: float) -> list[dict]:
    """One part in a subprocess under its time cap (and within the ``left`` seconds of the whole run's budget);
    a crash or timeout becomes one FAILED row."""
    cap = max(10, int(min(CAPS[name], left))) if not dry else 300
    if not dry and left < 10:
        return [_row(LABELS[name], "part", "FAILED", f"not run: the {BUDGET} s budget was spent by earlier parts")]
    cmd = [sys.executable, str(Path(__file__).resolve()), "--part", name] + (["--dry-run"] if dry else [])
    t0 = time.time()
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=cap, env=_env())
    except subprocess.TimeoutExpired:
        return [_row(LABELS[name], "part", "FAILED", f"timed out after {cap} s")]
    for line in reversed(p.stdout.splitlines()):
        if line.startswith(MARK):
            rows = json.loads(line[len(MARK):])
            return rows + [_row(LABELS[name], "part wall time", "ran", f"{time.time() - t0:.0f} s")]
    tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
    return [_row(LABELS[name], "part", "FAILED", f"exit {p.returncode}: {tail}"[:200])]


def table(rows: list[dict]) -> str:
    lines = ["| part | check | status | result |", "|---|---|---|---|"]
    lines += [f"| {r['part']} | {r['check']} | {r['status']} | {r['result']} |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes; CUDA parts reported skipped")
    ap.add_argument("--part", choices=list(PARTS), help="run one part in this process (internal)")
    ap.add_argument("--parts", default=",".join(PARTS), help="comma-separated parts to run")
    a = ap.parse_args()
    if a.part:
        print(MARK + json.dumps(PARTS[a.part](a.dry_run)), flush=True)
        return 0
    rows: list[dict] = []
    start = time.time()
    for name in a.parts.split(","):
        rows += _run_part(name, a.dry_run, BUDGET - (time.time() - start))
    text = table(rows)
    print(text)
    if os.environ.get("OUT"):
        out = Path(os.environ["OUT"])
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_check.md").write_text(text + "\n")
        (out / "gpu_check.json").write_text(json.dumps(rows, indent=1))
    return 1 if any(r["status"] == "FAILED" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
