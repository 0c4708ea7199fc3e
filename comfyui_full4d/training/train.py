"""Adapter training (paper section 4.2, SPEC 1-5): ``python -m comfyui_full4d.training.train --help``.

Recipe, per step (one scene clip per rank, all its views in one batch):

1. Sample a clip of ``4k+1`` frames from a random scene: one random view is the source (view 0),
   the others are targets in random order (``dataset.sample_clip``); projection renders of the
   source (cached once per clip) condition the targets.
2. Encode with the VAE: ``z0`` (V, C, T, h, w) per view, ``c`` (V, C, T, h, w) the condition halves
   (view 0: the source latent itself, targets: the latent of their projection render).
3. ``tau = shift * u / (1 + (shift - 1) * u)``, ``u ~ U(0, 1)``: one tau per scene, the same
   shifted schedule as inference (Wan's shift 5), so training sees the noise levels sampling uses.
4. ``z_tau = (1 - tau) z0 + tau eps`` on target views; view 0 stays clean (timestep 0), condition
   halves are clean (SPEC 5).
5. The patched model (host Wan2.2 + the same adapter as inference) predicts ``v``;
   loss = ``mean || v - (eps - z0) ||^2`` over the target halves of the target views only.

Only the adapter trains by default (camera encoders and projectors zero-initialised, fused
attention copies initialised from the base self-attention). Steps are reproducible from
``(seed, step)`` alone (data order and noise), so a resumed run equals an uninterrupted one.
Multi-GPU (``torchrun``): DDP, or FSDP2 with ``fsdp=True`` (``host.training``); checkpoints always hold
full tensors (``gather_full`` / ``shard_like``), so they do not depend on the world size or on FSDP.
The host-dependent parts (loading Wan2.2 and its VAE, patching) live in
``comfyui_full4d.host.training``; this module is plain torch.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Iterable, Protocol

import torch
from torch import Tensor, nn

from ..common.io import atomic_path
from ..common.progress import StepFn, report
from ..diffusion.ablation import Ablation
from .checkpoint import load_checkpoint, save_checkpoint
from .schedule import EMA, learning_rate

__all__ = ["TrainConfig", "TrainModel", "Stage", "AdapterStage", "EMA", "learning_rate", "sample_tau", "noisy_latents",
           "flow_matching_loss", "oracle_condition", "train", "run", "main"]


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters (defaults: the paper's 384x672, 81 frames, 6 views; lr as in common
    adapter fine-tuning, the paper does not state it). Schedule: ``warmup`` linear steps, then a cosine
    to ``lr * lr_final`` (1: constant); ``ema``: decay of the weights' moving average that the inference
    file holds (0: off, the last weights). ``point_radius``: the projection renders' splat radius, as
    ``Full4DProjectToCameras`` takes it (an adapter should be sampled with the radius it was trained on).
    ``oracle_steps``: a curriculum, not in the paper (0: off). For the first ``oracle_steps`` steps each target's
    condition half is its own clean latent (a perfect, fully covered projection), so the zero-initialised
    projector first learns to carry the condition into the view, then learns from the real, partial projections
    which of it to trust (the nano recipe uses it: without it the nano adapter learned to ignore its projections,
    docs/results.md)."""

    data: str
    out: str
    steps: int = 10_000
    lr: float = 1e-4
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    frames: int = 81
    views: int = 6
    height: int = 384
    width: int = 672
    shift: float = 5.0
    bf16: bool = True
    grad_checkpointing: bool = False
    save_every: int = 500
    latent_cache: int = 256
    lora_rank: int = 0
    seed: int = 0
    prompt: str = ""
    ablation: str = "full"
    fsdp: bool = False
    warmup: int = 0
    lr_final: float = 1.0
    ema: float = 0.0
    point_radius: int = 0
    oracle_steps: int = 0

    def __post_init__(self) -> None:
        Ablation.named(self.ablation)
        if self.frames < 1 or (self.frames - 1) % 4:
            raise ValueError(f"frames must be 4k+1 (81, 49, 17, 5, ...), got {self.frames}")
        if self.height % 16 or self.width % 16:
            raise ValueError(f"height and width must be multiples of 16 (one token per 16 px: the Wan2.2 VAE's x16, "
                             f"or the Wan2.1 VAE's x8 times the 2x2 patch), got {self.height}x{self.width}")
        if self.views < 2:
            raise ValueError(f"views must be >= 2 (source + targets), got {self.views}")
        for name in ("steps", "save_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and self.shift > 0):
            raise ValueError(f"lr and shift must be positive, got lr={self.lr}, shift={self.shift}")
        if self.ema > 0 and self.fsdp:
            raise ValueError("ema with fsdp is not supported (the average would need the full weights on every rank); "
                             "use DDP (--fsdp false) or --ema 0")
        if not 0 <= self.point_radius <= 4:
            raise ValueError(f"point_radius must be in [0, 4] (Full4DProjectToCameras' range), got {self.point_radius}")
        if not 0 <= self.oracle_steps < self.steps:
            raise ValueError(f"oracle_steps must be in [0, steps) so that training ends on real projections, got "
                             f"oracle_steps={self.oracle_steps}, steps={self.steps}")
        if self.warmup < 0 or not 0.0 <= self.lr_final <= 1.0 or not 0.0 <= self.ema < 1.0:
            raise ValueError(f"warmup must be >= 0, lr_final in [0, 1] and ema in [0, 1), got warmup={self.warmup}, "
                             f"lr_final={self.lr_final}, ema={self.ema}")


class _LatentCache:
    """LRU of VAE latents (the VAE is frozen, so a clip's latents never change): source-view
    latents keyed by (scene, view, start), render latents by (scene, source, view, start).

    folder: also keep every latent on disk there (one safetensors file per key), so later runs with the same
    VAE and data (resumed runs, ablations) skip the encoder; the caller names a folder per VAE."""

    def __init__(self, capacity: int, folder: str | os.PathLike | None = None):
        from collections import OrderedDict

        self.capacity, self.items = int(capacity), OrderedDict()
        self.folder = Path(folder) if folder is not None else None

    def get(self, key, make: Callable[[], Tensor]) -> Tensor:
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        val = self._disk(key, make) if self.folder is not None else make()
        if self.capacity > 0:
            self.items[key] = val
            while len(self.items) > self.capacity:
                self.items.popitem(last=False)
        return val

    def _disk(self, key, make: Callable[[], Tensor]) -> Tensor:
        import hashlib

        from safetensors.torch import load_file

        from ..common.io import save_tensors

        path = self.folder / (hashlib.sha1(repr(key).encode()).hexdigest()[:24] + ".safetensors")
        if path.is_file():
            return load_file(str(path))["z"]
        val = make()
        self.folder.mkdir(parents=True, exist_ok=True)
        save_tensors(path, {"z": val.detach().cpu()})
        return val


def encode_clip(model: "TrainModel", clip, cfg: TrainConfig, cache: _LatentCache, scene_key: str) -> tuple[Tensor, Tensor]:
    """z0 (V, C, T, h, w) of the clip's views and cond (V, C, T, h, w): view 0 its own latent,
    targets the latent of their projection render (SPEC 1)."""
    frames = _resize(clip.frames, cfg.height, cfg.width)
    renders = _resize(clip.renders, cfg.height, cfg.width)
    src, start = clip.views[0], clip.start
    size = (cfg.frames, cfg.height, cfg.width)
    dev = getattr(model, "device", None)
    get = (lambda key, make: cache.get(key, make).to(dev)) if dev is not None else cache.get
    with torch.no_grad():
        z0 = torch.cat([get((scene_key, v, start, *size), lambda i=i: model.encode(frames[i:i + 1]).float())
                        for i, v in enumerate(clip.views)])
        radius = (f"r{cfg.point_radius}",) if cfg.point_radius else ()  # radius 0: the older caches' keys
        cond = torch.cat([z0[:1]] + [get((scene_key, src, v, start, *size, *radius),
                                         lambda i=i: model.encode(renders[i:i + 1]).float())
                                     for i, v in enumerate(clip.views) if i > 0])
    return z0, cond


class TrainModel(Protocol):
    """What the loop needs from the (host) model; ``host.training.HostTrainModel`` implements it."""

    trainable: nn.Module  # the parameters that train (the adapter, wrapped by DDP when distributed)

    def encode(self, frames: Tensor) -> Tensor:
        """frames (V, L, H, W, 3) in [0, 1] -> latents (V, C, T, h, w)."""

    def velocity(self, x: Tensor, cond: Tensor, tau: Tensor, cams: Tensor) -> Tensor:
        """x (V, C, T, h, w) target halves (view 0 clean), cond (V, C, T, h, w) condition halves,
        tau (V,) noise level of each view's target half (0 for view 0), cams (V, 12) -> v (V, C, T, h, w)."""

    def save_adapter(self, path: Path) -> None:
        """Write the adapter file that ``Full4DAdapterLoader`` reads."""


def sample_tau(shift: float, generator: torch.Generator) -> float:
    """``tau = shift u / (1 + (shift - 1) u)``, ``u ~ U(0, 1)`` (the shifted flow schedule)."""
    u = float(torch.rand((), generator=generator))
    return shift * u / (1 + (shift - 1) * u)


def noisy_latents(z0: Tensor, eps: Tensor, tau: float) -> tuple[Tensor, Tensor]:
    """``z_tau = (1 - tau) z0 + tau eps`` on target views (1..V-1), view 0 clean.

    z0, eps: (V, C, T, h, w). Returns x (V, C, T, h, w) and per-view tau (V,) (0 for view 0).
    """
    taus = torch.full((z0.shape[0],), float(tau), dtype=z0.dtype, device=z0.device)
    taus[0] = 0
    t = taus.view(-1, *([1] * (z0.dim() - 1)))
    return (1 - t) * z0 + t * eps, taus


def oracle_condition(cond: Tensor, z0: Tensor) -> Tensor:
    """cond, z0 (V, C, T, h, w) -> the condition halves with each target's (views 1..V-1) replaced by its own clean
    latent: a perfect projection (``TrainConfig.oracle_steps``); view 0 keeps the source latent (SPEC 1)."""
    return torch.cat([cond[:1], z0[1:]])


def flow_matching_loss(v: Tensor, z0: Tensor, eps: Tensor) -> Tensor:
    """``mean || v - (eps - z0) ||^2`` over target views 1..V-1 (target halves). v, z0, eps (V, C, T, h, w)."""
    if v.shape != z0.shape or eps.shape != z0.shape:
        raise ValueError(f"v {tuple(v.shape)}, z0 {tuple(z0.shape)}, eps {tuple(eps.shape)} must match")
    return ((v[1:].float() - (eps[1:] - z0[1:]).float()) ** 2).mean()


# ---- the loop ---------------------------------------------------------------------------------

def _resize(frames: Tensor, height: int, width: int) -> Tensor:
    """(V, L, H, W, 3) -> (V, L, height, width, 3) (bilinear, antialiased)."""
    V, L, H, W, _ = frames.shape
    if (H, W) == (height, width):
        return frames
    x = frames.reshape(V * L, H, W, 3).permute(0, 3, 1, 2)
    x = nn.functional.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return x.permute(0, 2, 3, 1).reshape(V, L, height, width, 3)


def _tensorboard(out: Path):
    """A TensorBoard SummaryWriter in ``out/tb`` when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional; log.csv always exists
        return None
    return SummaryWriter(str(out / "tb"))


def _dist() -> tuple[int, int]:
    """(rank, world size) under torchrun, (0, 1) otherwise."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class Stage(Protocol):
    """One training stage for the loop (``run``): the VAE, the base model or the adapter (``AdapterStage``;
    the others in ``training.stages``). ``loss`` draws its own batch from ``rng`` / ``gen`` (so a step is a
    function of ``(seed, step)`` alone) and returns the scalar loss and the noise level it used (nan: none);
    ``step`` (0-based, the loop's) is for curricula (``TrainConfig.oracle_steps``)."""

    trainable: nn.Module
    output_name: str  # the inference file written at the end (and in every checkpoint)

    def loss(self, rng: random.Random, gen: torch.Generator, step: int = 0) -> tuple[Tensor, float]:
        ...

    def save(self, path: Path, state_dict: dict[str, Tensor] | None = None) -> None:
        """Write the inference file; ``state_dict``: the trainable weights to write instead of the live ones
        (the EMA average)."""


class AdapterStage:
    """The adapter step (module docstring, steps 1-5) over scene folders: ``TrainModel`` + ``dataset``."""

    output_name = "adapter.safetensors"

    def __init__(self, cfg: TrainConfig, model: TrainModel, scenes: list, depth_fn=None,
                 cache: "_LatentCache | None" = None):
        if not scenes:
            raise ValueError(f"no scenes found under {cfg.data!r}")
        self.cfg, self.model, self.scenes, self.depth_fn = cfg, model, scenes, depth_fn
        self.cache = _LatentCache(cfg.latent_cache) if cache is None else cache
        self.trainable = model.trainable

    def loss(self, rng: random.Random, gen: torch.Generator, step: int = 0) -> tuple[Tensor, float]:
        from . import dataset as ds
        from ..diffusion.adapter import camera_features

        cfg = self.cfg
        scene = self.scenes[rng.randrange(len(self.scenes))]
        clip = ds.sample_clip(scene, cfg.frames, rng, max_views=cfg.views, depth_fn=self.depth_fn,
                              point_radius=cfg.point_radius)
        z0, cond = encode_clip(self.model, clip, cfg, self.cache, str(scene.root))
        if step < cfg.oracle_steps:  # the curriculum's first phase: perfect projections (TrainConfig)
            cond = oracle_condition(cond, z0)
        if not Ablation.named(cfg.ablation).projection:
            cond = torch.cat([cond[:1], torch.zeros_like(cond[1:])])
        eps = torch.randn(z0.shape, generator=gen).to(z0.device)
        tau = sample_tau(cfg.shift, gen)
        x, taus = noisy_latents(z0, eps, tau)
        cams = camera_features(clip.cameras.R, clip.cameras.t).to(z0.device)
        with torch.autocast(z0.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            v = self.model.velocity(x, cond, taus, cams)
        return flow_matching_loss(v, z0, eps), tau

    def save(self, path: Path, state_dict: dict[str, Tensor] | None = None) -> None:
        if state_dict is None:
            self.model.save_adapter(path)
            return
        live = {k: v.detach().clone() for k, v in self.trainable.state_dict().items()}
        self.trainable.load_state_dict(state_dict, strict=False)
        try:
            self.model.save_adapter(path)
        finally:
            self.trainable.load_state_dict(live)


def train(cfg: TrainConfig, model: TrainModel, scenes: list, *, depth_fn=None, resume: bool = True,
          on_step: StepFn | None = None, log: Callable[[str], None] | None = None,
          cache: _LatentCache | None = None) -> dict:
    """Train the adapter (``AdapterStage``) for ``cfg.steps`` steps with ``run``.

    scenes: list of ``dataset.SceneInfo``. cache: share VAE latents between runs with the same VAE. Writes
    ``out/checkpoint/`` every ``save_every`` steps and at the end, ``out/adapter.safetensors`` (final) and
    ``out/log.csv`` (step, loss, tau, seconds, clips/s). Returns {"step", "losses", "seconds"} of this run.
    """
    return run(cfg, AdapterStage(cfg, model, scenes, depth_fn, cache), resume=resume, on_step=on_step, log=log)


def run(cfg: TrainConfig, stage: Stage, *, resume: bool = True, on_step: StepFn | None = None,
        log: Callable[[str], None] | None = None) -> dict:
    """The one training loop of every stage (VAE, base, adapter): AdamW with ``learning_rate``'s schedule,
    gradient clipping, an optional EMA of the weights (``cfg.ema``: the inference file holds the average),
    resumable checkpoints in ``out/checkpoint/`` (every ``save_every`` steps and at the end; a resumed run
    equals an uninterrupted one: the batch and noise of a step come from ``(seed, step, rank)`` only),
    ``out/log.csv`` and ``out/<stage.output_name>``. Returns {"step", "losses", "seconds"} of this run."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    rank, world = _dist()
    params = [p for p in stage.trainable.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = EMA(stage.trainable, cfg.ema) if cfg.ema > 0 else None
    ckpt = out / "checkpoint"
    step = load_checkpoint(ckpt, stage.trainable, opt, ema) if resume and (ckpt / "state.json").is_file() else 0
    csv_path = out / "log.csv"
    new_log = not csv_path.is_file() or step == 0
    if not new_log and rank == 0:  # drop rows logged after the checkpoint (a run cut off between saves)
        with open(csv_path, newline="") as fh:
            kept = [r for i, r in enumerate(csv.reader(fh)) if i == 0 or (r and int(r[0]) <= step)]
        with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as fh:
            csv.writer(fh).writerows(kept)
    losses = []
    tb = _tensorboard(out) if rank == 0 else None
    log_path = csv_path if rank == 0 else os.devnull  # one writer: other ranks must not truncate rank 0's log
    with open(log_path, "w" if new_log else "a", newline="") as fh:
        writer = csv.writer(fh)
        if new_log:
            writer.writerow(["step", "loss", "tau", "seconds", "clips_per_s"])
        t_start = time.perf_counter()
        while step < cfg.steps:
            t0 = time.perf_counter()
            rng = random.Random(cfg.seed * 1_000_003 + step * 7919 + rank)  # per-(step, rank) stream
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step * 7919 + rank)
            for group in opt.param_groups:
                group["lr"] = learning_rate(cfg, step)
            loss, tau = stage.loss(rng, gen, step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            if ema is not None:
                ema.update()
            step += 1
            dt = time.perf_counter() - t0
            losses.append(float(loss.detach()))
            if rank == 0:
                writer.writerow([step, f"{losses[-1]:.6g}", f"{tau:.4f}", f"{dt:.3f}", f"{world / dt:.3f}"])
                fh.flush()
                if tb is not None:
                    tb.add_scalar("loss", losses[-1], step)
                    tb.add_scalar("clips_per_s", world / dt, step)
                if log is not None:
                    log(f"step {step}/{cfg.steps} loss {losses[-1]:.4f} {world / dt:.2f} clips/s")
            if step % cfg.save_every == 0 or step == cfg.steps:  # every rank: FSDP gathers its shards
                save_checkpoint(ckpt, step, stage, opt, cfg, ema, write=rank == 0)
            report(on_step, step, cfg.steps)
    if tb is not None:
        tb.close()
    stage.save(out / stage.output_name, None if ema is None else ema.state_dict())  # every rank; rank 0 writes
    return {"step": step, "losses": losses, "seconds": time.perf_counter() - t_start}


def main(argv: Iterable[str] | None = None) -> int:
    """CLI entry point; see ``docs/training.md``."""
    p = argparse.ArgumentParser(prog="python -m comfyui_full4d.training.train", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="a scene folder or a folder of scene folders (docs/training.md)")
    p.add_argument("--out", required=True, help="output folder: checkpoint/, adapter.safetensors, log.csv")
    p.add_argument("--model", required=True, help="Wan2.2-TI2V-5B or Wan2.1-class diffusion model .safetensors")
    p.add_argument("--vae", required=True, help="its VAE .safetensors (Wan2.2 VAE; Wan2.1 VAE for a Wan2.1-class model)")
    p.add_argument("--text-encoder", default=None, help="umT5-XXL .safetensors (omit: use --context or zeros)")
    p.add_argument("--context", default=None, help="safetensors with key 'context' (1, L, 4096): a pre-encoded prompt")
    p.add_argument("--da3", default=None, help="Depth Anything 3 folder (model.safetensors + config.json): source "
                   "depth for scenes without depth.safetensors (camera translations must then be metric)")
    p.add_argument("--no-resume", action="store_true", help="start from step 0 even if out/checkpoint exists")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    for f in fields(TrainConfig):
        if f.name in ("data", "out"):
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            p.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes", "on"), default=f.default,
                           help=f"true/false (default {f.default})")
        else:
            p.add_argument(flag, type=type(f.default), default=f.default, help=f"(default {f.default})")
    a = p.parse_args(list(argv) if argv is not None else None)
    cfg = TrainConfig(**{f.name: getattr(a, f.name) for f in fields(TrainConfig)})
    from . import dataset as ds
    from ..host import training as host_training

    distributed = host_training.init_distributed()
    model = host_training.load_train_model(a.model, a.vae, cfg, device=a.device, text_encoder=a.text_encoder,
                                           context_file=a.context, distributed=distributed)
    scenes = ds.find_scenes(cfg.data)
    depth_fn = None
    if a.da3 is not None:
        from ..geometry.depth import estimate_depth, load_da3

        da3 = load_da3(a.da3, device=a.device)
        depth_fn = lambda frames: estimate_depth(da3, frames.to(a.device)).depth.cpu()  # noqa: E731
    bar = host_training.progress_bar(cfg.steps)
    res = train(cfg, model, scenes, depth_fn=depth_fn, resume=not a.no_resume, on_step=bar.update_to,
                log=bar.set_description)
    bar.close()
    print(f"done: step {res['step']}, adapter at {Path(cfg.out) / 'adapter.safetensors'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
