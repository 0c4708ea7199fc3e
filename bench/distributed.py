"""Sharded sampling (comfyui_full4d.diffusion.parallel): bytes per block per rank measured vs the formula, and wall time
of one process vs 2 / 4 gloo processes on this CPU machine, side by side as ratios.

    python bench/distributed.py                 # both tables (bytes at paper size, timing on the tiny model)
    python bench/distributed.py --bytes-only    # only the bytes table (paper size; ~1.5 GB RAM per rank)
    python bench/distributed.py --views 4 --frames 4 --h 8 --w 12

Bytes: each rank runs the all-to-alls of one block on real bf16 tensors of the paper's scene (V=6, T=21 -> 42
frame slots, S=252, N=63,504 tokens, C=3072, 24 heads) and counts what it hands to other ranks; the attention
itself is skipped (its result has the shape it would have). View layout: the fused branch's q, k, v out and o
back (whole views per rank). Token layout: the same for the base self-attention (each view's tokens gathered,
the views as batch rows) and for the fused branch (the scene's tokens gathered view-major), each rank holding
10,584 / U tokens of every view.
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


def _all_to_alls(rows: int, counts: list[int], segments: int, rank: int, stats) -> None:
    """q, k, v out and o back for one attention: (rows, H, segments * counts[rank], D) bf16 per rank."""
    from comfyui_full4d.diffusion.parallel import heads_to_tokens, tokens_to_heads

    p = PAPER
    D = p["C"] // p["H"]
    for _ in range(3):  # q, k, v
        x = torch.zeros(rows, p["H"], segments * counts[rank], D, dtype=torch.bfloat16)
        y = heads_to_tokens(x, counts, None, stats, segments)
        del x
    tokens_to_heads(y, counts, rank, None, stats, segments)  # the attention output has y's shape


def _bytes_worker(rank: int, world: int, port: int, shard: str, out: str) -> None:
    torch.set_num_threads(1)
    import torch.distributed as dist

    from comfyui_full4d.diffusion.parallel import CommStats, token_split, view_split

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    p = PAPER
    L = p["F"] * p["S"]
    stats = CommStats()
    if shard == "views":
        _all_to_alls(1, [(b - a) * L for a, b in view_split(p["V"], world)], 1, rank, stats)
    else:
        counts = [b - a for a, b in token_split(L, world)]
        _all_to_alls(p["V"], counts, 1, rank, stats)  # base self-attention: one view per row
        _all_to_alls(1, counts, p["V"], rank, stats)  # fused branch: the scene, view-major
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


def bytes_table(worlds=(2, 3, 4), shards=("views", "tokens")) -> str:
    from comfyui_full4d.diffusion.parallel import ulysses_bytes_per_block

    p = PAPER
    N = p["V"] * p["F"] * p["S"]
    rows = ["| layout | U | measured per rank (MB, rank 0 .. U-1) | formula (MB) | measured / formula (rank 0) |",
            "|---|---|---|---|---|"]
    for shard in shards:
        for U in worlds:
            got = _spawn(_bytes_worker, U, shard)
            want = ulysses_bytes_per_block(N, p["C"], U, p["e"], shard=shard)
            rows.append(f"| {shard} | {U} | {' / '.join(f'{g / 1e6:.1f}' for g in got)} | {want / 1e6:.1f} | "
                        f"{got[0] / want:.3f} |")
    return "\n".join(rows)


def time_table(views: int, frames: int, h: int, w: int,
               layouts=("1x1", "1x2", "2x1", "2x2", "1x4", "1x4:tokens", "1x3:views", "1x3:tokens")) -> str:
    from comfyui_full4d.diffusion.parallel import Layout

    rows = ["| layout | processes | wall (s) | 1 process / this |", "|---|---|---|---|"]
    base = None
    for layout in layouts:
        world = Layout.parse(layout).world
        job = dict(layout=layout, views=views, frames=frames, h=h, w=w)
        wall = _spawn(_time_worker, world, job)
        base = wall if base is None else base
        rows.append(f"| {layout} | {world} | {wall:.2f} | {base / wall:.2f} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bytes-only", action="store_true")
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--frames", type=int, default=4, help="latent frames T")
    ap.add_argument("--h", type=int, default=8)
    ap.add_argument("--w", type=int, default=12)
    a = ap.parse_args()
    print("Bytes one rank sends per block, all-to-alls (views: fused branch; tokens: base attention and fused branch), "
          "paper scene (V=6, N=63,504, C=3072, bf16), one scene per call (CFG split on):\n")
    print(bytes_table())
    if not a.bytes_only:
        print(f"\nWall time of a 2-step sample_full4d (tiny 12-head Wan2.2, V={a.views}, T={a.frames}, "
              f"latent {a.h}x{a.w}), CPU, gloo, {os.cpu_count()} cores:\n")
        print(time_table(a.views, a.frames, a.h, a.w))


if __name__ == "__main__":
    main()
