"""Fused time-view attention (SPEC 2): ours vs dense masked SDPA at the same shape.

    python bench/attention.py                      # CPU defaults, V in {2,4,6}, T=21, S in {16,32} (< 1 min)
    python bench/attention.py --S 32 --heads 2     # bigger
    python bench/attention.py --device cuda        # exact and Flex paths plus the paper's S=252

Each measurement runs in a fresh subprocess so its peak memory is its own: CPU peak = growth of
the process' max RSS during the call; CUDA peak = torch.cuda.max_memory_allocated growth.
Prints a markdown table (time and peak memory, dense / ours ratios, rule density).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _worker(method: str, B: int, H: int, V: int, T: int, S: int, D: int, device: str, dtype: str, reps: int) -> dict:
    import torch

    from comfyui_full4d.diffusion.attention import fused_tv_attention, fused_tv_attention_reference

    dt = getattr(torch, dtype)
    N = V * 2 * T * S
    q, k, v = (torch.randn(B, H, N, D, device=device, dtype=dt) for _ in range(3))
    if method == "dense":
        def fn():
            return fused_tv_attention_reference(q, k, v, V, 2 * T)
    else:
        def fn():
            return fused_tv_attention(q, k, v, V, 2 * T, backend=method)
    cuda = device.startswith("cuda")

    def sync():
        if cuda:
            torch.cuda.synchronize()
    with torch.no_grad():
        if cuda:  # warm-up (compile) first, then measure memory on a clean slate
            fn()
            sync()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        t0 = time.perf_counter()
        out = fn()
        sync()
        first = time.perf_counter() - t0
        peak = (torch.cuda.max_memory_allocated() if cuda else
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) - base
        del out
        times = [first]
        for _ in range(reps - 1):
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
    return {"time": min(times), "peak": max(peak, 0), "N": N}


def _measure(method: str, a: argparse.Namespace, V: int, S: int) -> dict | None:
    cmd = [sys.executable, __file__, "--worker", method, "--B", str(a.B), "--heads", str(a.heads), "--views", str(V),
           "--T", str(a.T), "--S", str(S), "--D", str(a.D), "--device", a.device, "--dtype", a.dtype,
           "--reps", str(a.reps)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        print(f"# {method} V={V} S={S} failed: {res.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


def _fmt_mb(x: float) -> str:
    return f"{x / 2**20:.1f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--views", type=int, nargs="+", default=[2, 4, 6])
    p.add_argument("--T", type=int, default=21, help="latent frames per half (F = 2T)")
    p.add_argument("--S", type=int, nargs="+", default=None, help="tokens per frame (default 16 32 CPU, 64 252 CUDA)")
    p.add_argument("--B", type=int, default=1)
    p.add_argument("--heads", type=int, default=1)
    p.add_argument("--D", type=int, default=64, help="head dim")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, help="float32 (CPU default) / bfloat16 (CUDA default)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--no-dense-above", type=int, default=70_000,
                   help="skip the dense baseline when N exceeds this (its N x N mask is N^2 bytes)")
    p.add_argument("--create-block-mask-above", type=int, default=10_000,
                   help="skip torch's create_block_mask when N exceeds this (it builds an N x N bool mask)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    cuda = a.device.startswith("cuda")
    a.dtype = a.dtype or ("bfloat16" if cuda else "float32")
    if a.worker:
        print(json.dumps(_worker(a.worker, a.B, a.heads, a.views[0], a.T, a.S[0], a.D, a.device, a.dtype, a.reps)))
        return

    from comfyui_full4d.diffusion.attention import frame_visibility

    sizes = a.S or ([64, 252] if cuda else [16, 32])
    methods = ["exact", "flex"] if cuda else ["exact"]
    print(f"device={a.device} dtype={a.dtype} B={a.B} heads={a.heads} D={a.D} T={a.T}; time = best of {a.reps}, "
          f"peak = memory growth during one call (MiB)\n")
    print("| V | S | N | density | method | ours s | dense s | speed-up | ours MiB | dense MiB | mem ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for S in sizes:
        for V in a.views:
            dens = frame_visibility(V, 2 * a.T).float().mean().item()
            N = V * 2 * a.T * S
            dense = _measure("dense", a, V, S) if N <= a.no_dense_above else None
            for m in methods:
                ours = _measure(m, a, V, S)
                if ours is None:
                    continue
                d_t = f"{dense['time']:.3f}" if dense else "-"
                d_m = _fmt_mb(dense["peak"]) if dense else "-"
                sp = f"{dense['time'] / ours['time']:.2f}x" if dense else "-"
                mr = f"{dense['peak'] / max(ours['peak'], 1):.1f}x" if dense else "-"
                print(f"| {V} | {S} | {N} | {dens:.3f} | {m} | {ours['time']:.3f} | {d_t} | {sp} | "
                      f"{_fmt_mb(ours['peak'])} | {d_m} | {mr} |", flush=True)
    _block_mask_table(a, sorted(set(sizes) | {252}))


def _block_mask_table(a: argparse.Namespace, sizes: list[int]) -> None:
    """Flex BlockMask from the frame rule vs torch's create_block_mask (which evaluates N x N pairs)."""
    from torch.nn.attention.flex_attention import create_block_mask

    import comfyui_full4d.diffusion.attention as att

    print("\nFlex BlockMask (128-token tiles, CPU build): ours from the frame rule vs create_block_mask\n")
    print("| V | S | N | rule density | tiles computed | ours s | create_block_mask s | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for S in sizes:
        for V in a.views:
            F = 2 * a.T
            N = V * F * S
            t0 = time.perf_counter()
            bm = att._block_mask.__wrapped__(V, F, S, True, True, "cpu")
            ours = time.perf_counter() - t0
            theirs = None
            if N <= a.create_block_mask_above:
                t0 = time.perf_counter()
                create_block_mask(att._mask_mod(V, F, S, True, True), None, None, N, N, device="cpu")
                theirs = time.perf_counter() - t0
            dens = att.frame_visibility(V, F).float().mean().item()
            tiles = 1 - bm.sparsity() / 100
            c_s = f"{theirs:.3f}" if theirs is not None else "-"
            sp = f"{theirs / ours:.1f}x" if theirs is not None else "-"
            print(f"| {V} | {S} | {N} | {dens:.3f} | {tiles:.3f} | {ours:.3f} | {c_s} | {sp} |", flush=True)


if __name__ == "__main__":
    main()
