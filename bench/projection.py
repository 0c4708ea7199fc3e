"""Point-cloud projection benchmark (SPEC 3): the batched scatter-min z-buffer vs the per-frame,
per-view reference loop.

    .venv/bin/python bench/projection.py          # 9 frames x 6 views x 96x168, < 1 min on the project's CPU
    .venv/bin/python bench/projection.py --full   # 81 frames x 6 views x 384x672 (the paper's setting)

Scene: a smooth random depth surface 0.8..1.6 m with noise, random colours, the ``ring_rig`` of V views
(radius 1 scene unit). Each measurement runs in a fresh process, so its peak memory (VmHWM, reset after setup,
above the RSS before the call) is its own. Times are the best of ``--repeat`` runs; outputs are checked equal.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

import torch


def make_scene(T: int, V: int, H: int, W: int, seed: int = 0) -> tuple:
    from comfyui_full4d.geometry.cameras import intrinsics_from_fov
    from comfyui_full4d.geometry.rig import ring_rig

    g = torch.Generator().manual_seed(seed)
    K = intrinsics_from_fov(50.0, W, H)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    phase = torch.rand(T, 1, 1, generator=g) * 6.28
    depth = 1.2 + 0.3 * torch.sin(3 * xx + phase) * torch.cos(2 * yy) + 0.02 * torch.rand(T, H, W, generator=g)
    images = torch.rand(T, H, W, 3, generator=g)
    rig = ring_rig(V, K, W, H).metric(float(depth[0].median()))
    return images, depth, K, torch.eye(4), rig.K, rig.viewmat


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def _reset_peak() -> None:
    """Reset the kernel's peak-RSS counter (VmHWM) so setup temporaries do not count."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _peak_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(args: tuple) -> tuple[float, float, float]:
    which, T, V, H, W, repeat = args
    from comfyui_full4d.geometry.projection import project_to_cameras, project_to_cameras_reference

    scene = make_scene(T, V, H, W)
    fn = project_to_cameras if which == "ours" else project_to_cameras_reference
    fn(*(x[:1] if i < 2 else x for i, x in enumerate(scene)))  # warm-up on one frame
    base = _rss_mb()
    _reset_peak()
    best, check = float("inf"), 0.0
    for _ in range(repeat):
        t0 = time.perf_counter()
        renders, masks = fn(*scene)
        best = min(best, time.perf_counter() - t0)
        check = float(renders.sum()) + float(masks.sum())  # identical outputs give identical sums
    peak = _peak_mb()
    return best, max(0.0, peak - base), check


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="81 frames x 6 views x 384x672")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--skip-reference", action="store_true", help="time only ours (the reference is slow at --full)")
    a = ap.parse_args()
    T, V, H, W = (81, 6, 384, 672) if a.full else (9, 6, 96, 168)
    ctx = mp.get_context("spawn")
    rows = {}
    for which in ["ours"] + ([] if a.skip_reference else ["reference"]):
        with ctx.Pool(1) as pool:
            rows[which] = pool.apply(_measure, ((which, T, V, H, W, a.repeat),))
    print(f"projection: T={T} frames x V={V} views at {H}x{W} ({T * H * W / 1e6:.2f} M source points)")
    print(f"{'method':<12}{'time s':>10}{'peak MB':>10}{'ratio':>8}")
    for which, (sec, mem, _) in rows.items():
        ratio = rows[which][0] / rows["ours"][0]
        print(f"{which:<12}{sec:>10.2f}{mem:>10.0f}{ratio:>8.2f}")
    if "reference" in rows:
        same = abs(rows["ours"][2] - rows["reference"][2]) < 1e-6 * max(1.0, abs(rows["ours"][2]))
        print(f"outputs equal: {same}")


if __name__ == "__main__":
    main()
