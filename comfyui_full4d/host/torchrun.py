"""Headless sharded Full-4D sampling under ``torchrun`` (one process per GPU, any number of nodes).

    torchrun --nproc-per-node 4 -m comfyui_full4d.host.torchrun --comfyui ~/ComfyUI \\
        --model ~/ComfyUI/models/diffusion_models/wan2.2_ti2v_5B_fp16.safetensors \\
        --adapter ~/ComfyUI/models/full4d/full4d.safetensors --scene scene.safetensors --out views.safetensors \\
        --layout 2x2 --steps 50 --cfg 5 --shift 5

Every rank loads the same files through the host's own loaders (``comfy.sd.load_diffusion_model``, the
adapter through ``patch.make_adapter``), builds the mesh (``parallel.Layout``: CFG split x Ulysses; NCCL
on CUDA, gloo on CPU) and runs ``sample_full4d`` on the same inputs; rank 0 writes the result
atomically. A 1-process run is the ordinary one-device path.

The scene file (``save_scene``): safetensors with ``source`` (1, C, T, h, w) and ``projections``
(V-1, C, T, h, w) VAE latents, ``cams`` (V, 12) camera numbers, ``positive`` / ``negative`` (1, L, 4096)
text embeddings (the tensors of the host's CONDITIONING). The output file holds ``samples``
(V-1, C, T, h, w), the target views' latents as Full4DSampler returns them (VAE-decode them as usual).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from ..common.io import save_tensors
from .boot import import_host

SCENE_KEYS = ("source", "projections", "cams", "positive", "negative")

__all__ = ["save_scene", "load_scene", "main"]


def save_scene(path: str, source, projections, cams, positive, negative) -> None:
    """Write a scene file (module docstring); positive / negative: host CONDITIONING or (1, L, 4096) tensors."""
    def text(c):
        return c[0][0] if isinstance(c, list) else c
    save_tensors(path, {"source": source, "projections": projections, "cams": cams, "positive": text(positive),
                  "negative": text(negative)})


def load_scene(path: str) -> dict:
    """The scene file's tensors; ValueError naming the file and the missing keys."""
    from safetensors.torch import load_file

    if not os.path.isfile(path):
        raise ValueError(f"--scene: {path!r} does not exist")
    try:
        sd = load_file(path)
    except Exception as e:
        raise ValueError(f"--scene: {path!r} is not a readable safetensors file: {e}") from None
    missing = [k for k in SCENE_KEYS if k not in sd]
    if missing:
        raise ValueError(f"--scene: {path!r} lacks {missing}; write it with comfyui_full4d.host.torchrun.save_scene")
    return sd


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="torchrun ... -m comfyui_full4d.host.torchrun", description=__doc__.split("\n")[0])
    p.add_argument("--comfyui", default=os.environ.get("FULL4D_COMFYUI_DIR"), help="ComfyUI folder (the host)")
    p.add_argument("--model", required=True, help="Wan2.2-TI2V-5B or Wan2.1-class diffusion model file")
    p.add_argument("--adapter", default=None, help="Full-4D adapter file (default: zero-init, the base model per view)")
    p.add_argument("--scene", required=True, help="scene file (save_scene)")
    p.add_argument("--out", required=True, help="output safetensors (written by rank 0)")
    p.add_argument("--layout", default="auto", help="CxU: C=2 CFG split, U-way Ulysses; auto: CFG split when even; "
                   "append :views or :tokens to choose how U splits a scene (default: views when U divides V)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--shift", type=float, default=5.0)
    p.add_argument("--sampler", default="euler")
    p.add_argument("--scheduler", default="simple")
    p.add_argument("--views-per-pass", type=int, default=0)
    p.add_argument("--dtype", default=None, choices=[None, "float32", "float16", "bfloat16"])
    p.add_argument("--cpu", action="store_true", help="CPU + gloo even when CUDA is there")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    import_host(a.comfyui, cpu=True if a.cpu else None)
    import comfy.sd
    import torch.distributed as dist

    from ..diffusion.parallel import Layout, Mesh
    from .parallel import with_mesh
    from .patch import attach_adapter, make_adapter
    from .sampling import sample_full4d

    world = int(os.environ.get("WORLD_SIZE", "1"))
    layout = Layout.parse(a.layout, world)
    if layout.world != world:
        raise SystemExit(f"--layout {a.layout}: needs {layout.world} processes, torchrun started {world}")
    if world > 1:
        dist.init_process_group("nccl" if torch.cuda.is_available() and not a.cpu else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    scene = load_scene(a.scene)
    opts = {} if a.dtype is None else {"dtype": getattr(torch, a.dtype)}
    base = comfy.sd.load_diffusion_model(a.model, model_options=opts)
    model = attach_adapter(base, make_adapter(base, a.adapter))
    mesh = Mesh.create(layout) if world > 1 else None
    model = with_mesh(model, mesh)

    def on_step(done: int, total: int) -> None:
        if rank == 0:
            print(f"step {done}/{total}", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    out = sample_full4d(model, [[scene["positive"], {}]], [[scene["negative"], {}]], scene["source"],
                        scene["projections"], scene["cams"], seed=a.seed, steps=a.steps, cfg=a.cfg, shift=a.shift,
                        sampler_name=a.sampler, scheduler=a.scheduler, views_per_pass=a.views_per_pass,
                        on_step=on_step)
    wall = time.perf_counter() - t0
    sent = dict(mesh.stats.sent) if mesh is not None else {}
    if rank == 0:
        meta = {"layout": layout.name, "wall_s": f"{wall:.3f}",
                **{f"bytes_sent_rank0_{k}": str(v) for k, v in sent.items()}}
        save_tensors(a.out, {"samples": out}, metadata=meta)
        print(f"full4d: {layout.name} on {world} process(es): {wall:.2f} s, rank 0 sent {sent}",
              file=sys.stderr, flush=True)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
