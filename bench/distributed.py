"""Sharded sampling (comfyui_full4d.diffusion.parallel): bytes per block per rank measured vs the formula, and wall time
of one process vs 2 / 4 gloo processes on this CPU machine, side by side as ratios.

    python bench/distributed.py                 # both tables (bytes at paper size, timing on the tiny model)
    python bench/distributed.py --bytes-only    # only the bytes table (paper size; ~1.5 GB RAM per rank)
    python bench/distributed.py --views 4 --frames 4 --steps 3

Bytes: each rank runs the two all-to-alls of one fused branch (q, k, v out, o back) on real bf16 tensors
of the paper's scene (V=6, T=21 -> 42 frame slots, S=252, N=63,504 tokens, C=3072, 24 heads) and counts
what it hands to other ranks; the attention itself is skipped (its result has the shape it would have).
Timing: a 2-step ``sample_full4d`` of a tiny 12-head Wan2.2 + random adapter (tests/fixtures/parallel.py)
in every layout, OMP 1 thread per process. On 2 shared cores the multi-process rows measure overhead,
not speed-up; GPU numbers belong here when a GPU machine runs it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

PAPER = dict(V=6, F=42, S=252, C=3072, H=24, e=2)


def _bytes_worker(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    import torch.distributed as dist

    from comfyui_full4d.diffusion.parallel import CommStats, heads_to_tokens, tokens_to_heads, view_split

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    p = PAPER
    L = p["F"] * p["S"]
    counts = [(b - a) * L for a, b in view_split(p["V"], world)]
    stats = CommStats()
    D = p["C"] // p["H"]
    for _ in range(3):  # q, k, v
        x = torch.zeros(1, p["H"], counts[rank], D, dtype=torch.bfloat16)
        y = heads_to_tokens(x, counts, None, stats)
        del x
    tokens_to_heads(y, counts, rank, None, stats)  # the attention output has y's shape
    box = [None] * world
    dist.all_gather_object(box, stats.sent["ulysses"])
    if rank == 0:
        torch.save(box, out)
    dist.destroy_process_group()


def _time_worker(rank: int, world: int, port: int, job: dict, out: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    import torch.distributed as dist

    from fixtures import parallel as fx
    from comfyui_full4d.host.boot import import_host

    import_host(fx.HOST_DIR, cpu=True)
    from comfyui_full4d.diffusion.parallel import Layout, Mesh

    fx.T, fx.H, fx.W = job["frames"], job["h"], job["w"]
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    model = fx.random_adapter_model(fx.tiny_wan_heads())
    mesh = Mesh.create(Layout.parse(job["layout"])) if world > 1 else None
    fx.run_case(model, "sample", job["views"], mesh)  # warm-up
    t0 = time.perf_counter()
    fx.run_case(model, "sample", job["views"], mesh)
    wall = time.perf_counter() - t0
    if rank == 0:
        torch.save(wall, out)
    if world > 1:
        dist.destroy_process_group()


def _spawn(fn, world: int, *args):
    import torch.multiprocessing as mp

    from comfyui_full4d.client.run import free_port

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "r.pt")
        mp.start_processes(fn, args=(world, free_port(), *args, out), nprocs=world, start_method="spawn")
        return torch.load(out)


def bytes_table(worlds=(2, 3, 4)) -> str:
    from comfyui_full4d.diffusion.parallel import ulysses_bytes_per_block

    p = PAPER
    N = p["V"] * p["F"] * p["S"]
    rows = ["| U | measured per rank (MB, rank 0 .. U-1) | formula 4 N/U C (U-1)/U e (MB) | measured / formula (rank 0) |",
            "|---|---|---|---|"]
    for U in worlds:
        got = _spawn(_bytes_worker, U)
        want = ulysses_bytes_per_block(N, p["C"], U, p["e"])
        rows.append(f"| {U} | {' / '.join(f'{g / 1e6:.1f}' for g in got)} | {want / 1e6:.1f} | {got[0] / want:.3f} |")
    return "\n".join(rows)


def time_table(views: int, frames: int, h: int, w: int, layouts=("1x1", "1x2", "2x1", "2x2", "1x4")) -> str:
    rows = ["| layout | processes | wall (s) | 1 process / this |", "|---|---|---|---|"]
    base = None
    for layout in layouts:
        c, u = (int(x) for x in layout.split("x"))
        job = dict(layout=layout, views=views, frames=frames, h=h, w=w)
        wall = _spawn(_time_worker, c * u, job)
        base = wall if base is None else base
        rows.append(f"| {layout} | {c * u} | {wall:.2f} | {base / wall:.2f} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bytes-only", action="store_true")
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--frames", type=int, default=4, help="latent frames T")
    ap.add_argument("--h", type=int, default=8)
    ap.add_argument("--w", type=int, default=12)
    a = ap.parse_args()
    print("Bytes one rank sends per block, fused branch all-to-alls, paper scene (V=6, N=63,504, C=3072, bf16), "
          "one scene per call (CFG split on):\n")
    print(bytes_table())
    if not a.bytes_only:
        print(f"\nWall time of a 2-step sample_full4d (tiny 12-head Wan2.2, V={a.views}, T={a.frames}, "
              f"latent {a.h}x{a.w}), CPU, gloo, {os.cpu_count()} cores:\n")
        print(time_table(a.views, a.frames, a.h, a.w))


if __name__ == "__main__":
    main()
