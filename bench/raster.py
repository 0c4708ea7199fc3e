"""Rasteriser benchmark: tiled torch compositor vs the brute-force per-pixel reference (and gsplat on CUDA).

    .venv/bin/python bench/raster.py          # small sizes, < 2 min on the project's CPU
    .venv/bin/python bench/raster.py --full   # 10k / 50k / 120k Gaussians at 384x672

Scene: N Gaussians spread over the view frustum at depth 2..4, about 2 px screen sigma (a point-cloud
initialisation), random rotations and opacities. Each CPU measurement runs in a fresh process so that its peak
memory (ru_maxrss above the post-setup RSS) is its own. Times are the best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

import torch


def make_scene(N: int, W: int, H: int, device: str = "cpu", seed: int = 0) -> list:
    g = torch.Generator().manual_seed(seed)
    f = 0.8 * W
    z = 2 + 2 * torch.rand(N, generator=g)
    u = torch.rand(N, generator=g) * W * 1.1 - 0.05 * W
    v = torch.rand(N, generator=g) * H * 1.1 - 0.05 * H
    means = torch.stack([(u - W / 2) * z / f, (v - H / 2) * z / f, z], -1)
    quats = torch.randn(N, 4, generator=g)
    scales = (2.0 * z / f)[:, None] * (0.5 + torch.rand(N, 3, generator=g))
    opacities = torch.rand(N, generator=g) * 0.9 + 0.05
    colors = torch.rand(N, 3, generator=g)
    K = torch.tensor([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1.0]])
    tensors = [x.to(device) for x in (means, quats, scales, opacities, colors, torch.eye(4), K)]
    return tensors + [W, H]


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def _time(fn, scene, backward: bool, repeat: int, device: str) -> float:
    best = float("inf")
    for _ in range(repeat):
        inputs = [x.detach().requires_grad_(backward) for x in scene[:5]] + scene[5:]
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.set_grad_enabled(backward):
            rgb, alpha = fn(*inputs)
            if backward:
                (rgb.sum() + alpha.sum()).backward()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def _fn(name: str):
    from comfyui_full4d.gaussians.rasterize import rasterize, rasterize_reference

    if name == "reference":
        return rasterize_reference
    backend = "gsplat" if name == "gsplat" else "torch"
    return lambda *a: rasterize(*a, backend=backend)


def _cpu_worker(name, N, W, H, backward, repeat, threads, queue) -> None:
    if threads:
        torch.set_num_threads(threads)
    scene = make_scene(N, W, H)
    fn = _fn(name)
    base = _rss_mb()
    t = _time(fn, scene, backward, repeat, "cpu")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    queue.put((t, max(peak, 0.0)))


def measure_cpu(
    name: str, N: int, W: int, H: int, backward: bool, repeat: int, threads: int = 0
) -> tuple[float, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_cpu_worker, args=(name, N, W, H, backward, repeat, threads, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def measure_cuda(name: str, N: int, W: int, H: int, backward: bool, repeat: int) -> tuple[float, float]:
    scene = make_scene(N, W, H, device="cuda")
    fn = _fn(name)
    _time(fn, scene, backward, 1, "cuda")  # warm-up (kernel load)
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    t = _time(fn, scene, backward, repeat, "cuda")
    return t, (torch.cuda.max_memory_allocated() - base) / 2**20


def reference_skip_reason(N: int, W: int, H: int, backward: bool, max_ref_s: float) -> str | None:
    """The reference loops over N Gaussians with a dozen full-image ops each; with autograd it keeps ~8 images
    per Gaussian. Its time is extrapolated from 200 Gaussians at the same size."""
    if backward and N * W * H * 8 * 4 > 4 * 2**30:
        return f"autograd would keep ~{N * W * H * 32 / 2**30:.0f} GiB of per-Gaussian images"
    from comfyui_full4d.gaussians.rasterize import rasterize_reference

    scene = make_scene(200, W, H)
    with torch.no_grad():
        rasterize_reference(*make_scene(5, W, H))  # warm-up
        t0 = time.perf_counter()
        rasterize_reference(*scene)
        est = (time.perf_counter() - t0) / 200 * N * (3 if backward else 1)
    if est > max_ref_s:
        return f"estimated {est:.0f} s > --max-ref-seconds {max_ref_s:.0f}"
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="10k/50k/120k Gaussians at 384x672")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--max-ref-seconds", type=float, default=None, help="skip reference runs estimated slower")
    args = ap.parse_args()
    if args.full:
        cases = [(n, 672, 384, bw) for n in (10_000, 50_000, 120_000) for bw in (False, True)]
        max_ref = 300.0 if args.max_ref_seconds is None else args.max_ref_seconds
    else:
        cases = [(1_000, 80, 48, False), (1_000, 80, 48, True), (10_000, 160, 96, False), (10_000, 160, 96, True),
                 (50_000, 336, 192, False), (50_000, 336, 192, True)]
        max_ref = 30.0 if args.max_ref_seconds is None else args.max_ref_seconds
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads\n")
    print("| device | Gaussians | H x W | pass | ours (s) | ours peak MiB | baseline | baseline (s) "
          "| baseline peak MiB | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = [("cpu", "reference", lambda *a: measure_cpu(*a, threads=args.threads))]
    if torch.cuda.is_available():
        rows.append(("cuda", "gsplat", measure_cuda))
    for device, base_name, measure in rows:
        for N, W, H, bw in cases:
            pass_name = "fwd+bwd" if bw else "fwd"
            ours_name = "torch"
            t_ours, m_ours = measure(ours_name, N, W, H, bw, args.repeat)
            skip = reference_skip_reason(N, W, H, bw, max_ref) if base_name == "reference" else None
            if skip:
                base_cols = f"{base_name} | n/a | n/a | n/a ({skip})"
            else:
                t_b, m_b = measure(base_name, N, W, H, bw, 1 if base_name == "reference" else args.repeat)
                base_cols = f"{base_name} | {t_b:.3f} | {m_b:.0f} | {t_b / t_ours:.1f}x"
            print(f"| {device} | {N} | {H} x {W} | {pass_name} | {t_ours:.3f} | {m_ours:.0f} | {base_cols} |",
                  flush=True)
    print("\nspeed-up = baseline time / ours. On CUDA the baseline is gsplat (fused kernels), so < 1x is expected.")


if __name__ == "__main__":
    main()
