"""The VAE and base-model stages of the one training loop (``train.run``); the adapter stage is
``train.AdapterStage``. Plain torch: the host objects come in through the ``VAETrainModel`` /
``BaseTrainModel`` protocols (``host.nano`` implements them).

Data: a folder of videos (``find_videos``: every ``*.mp4`` below it, scene folders included), clips of
``frames`` consecutive frames.

* VAE (autoencoder): random ``crop`` windows of ``frames`` frames, pixels in [-1, 1];
  ``loss = |D(z) - x|_1 + lambda_chroma |c(D(z)) - c(x)|_1 + lambda_dssim (1 - SSIM) + lambda_moments M(z)``
  with ``c(x) = x - mean_rgb(x)`` the colour of a pixel without its grey level (a small autoencoder learns grey
  levels first and colour slowly: the term weights colour up) and ``z = E(x) + sigma eps``,
  ``sigma ~ U(0, latent_noise)`` (the decoder learns to take slightly wrong latents, as diffusion samples
  are) and ``M(z) = mean_c (mean(z_c)^2 + (std(z_c) - 1)^2)`` over the batch (the normalised latents stay
  unit-scaled per channel, as rectified flow assumes).
* Base (rectified flow, the host's schedule, SPEC 5 on one view): latents of whole clips, encoded once by the
  frozen VAE (``LatentSet``), ``tau`` from ``train.sample_tau`` per clip, ``z_tau = (1 - tau) z0 + tau eps``,
  ``loss = mean || v - (eps - z0) ||^2``.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import torch
from torch import Tensor, nn

from ..common.io import save_tensors
from ..common.progress import StepFn, report
from .train import TrainConfig, sample_tau

__all__ = ["VAELoss", "VAETrainModel", "BaseTrainModel", "VAEStage", "BaseStage", "LatentSet", "find_videos",
           "read_clip", "encode_videos", "video_frames"]


def find_videos(root: str | os.PathLike) -> list[Path]:
    """Every ``*.mp4`` below ``root`` (sorted); ValueError when there is none."""
    vids = sorted(Path(root).rglob("*.mp4"))
    if not vids:
        raise ValueError(f"data folder {root}: no .mp4 videos found below it")
    return vids


def video_frames(path: Path) -> int:
    """Frame count of a video (demuxed)."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return int(s.frames or 0) or sum(1 for p in c.demux(s) if p.size > 0)


def read_clip(path: Path, start: int, length: int) -> Tensor:
    """(length, H, W, 3) float32 in [0, 1]."""
    from .dataset import read_video

    return read_video(path, start, length)


@dataclass(frozen=True)
class VAELoss:
    """The autoencoder's loss and batch (module docstring)."""

    frames: int = 5
    crop: tuple[int, int] = (64, 80)
    batch: int = 4
    lambda_dssim: float = 0.2
    lambda_moments: float = 0.1
    latent_noise: float = 0.1
    lambda_chroma: float = 0.0


class VAETrainModel(Protocol):
    trainable: nn.Module

    def encode(self, x: Tensor) -> Tensor:
        """x (B, 3, L, H, W) in [-1, 1] -> normalised latents (B, C, T, h, w)."""

    def decode(self, z: Tensor) -> Tensor:
        """normalised latents -> (B, 3, L, H, W)."""

    def save(self, path: Path, state_dict: dict[str, Tensor] | None = None) -> None: ...


class BaseTrainModel(Protocol):
    trainable: nn.Module

    def velocity(self, x: Tensor, tau: Tensor) -> Tensor:
        """x (B, C, T, h, w), tau (B,) -> v (B, C, T, h, w)."""

    def save(self, path: Path, state_dict: dict[str, Tensor] | None = None) -> None: ...


def _moments(z: Tensor) -> Tensor:
    """``mean_c (mean(z_c)^2 + (std(z_c) - 1)^2)`` over batch, time and space. z (B, C, T, h, w)."""
    zc = z.transpose(0, 1).reshape(z.shape[1], -1)
    return (zc.mean(1) ** 2 + (zc.std(1) - 1) ** 2).mean()


class VAEStage:
    """Autoencoder step on random crops of video clips (module docstring)."""

    output_name = "vae.safetensors"

    def __init__(self, cfg: TrainConfig, model: VAETrainModel, videos: list[Path], loss: VAELoss = VAELoss()):
        if not videos:
            raise ValueError(f"no videos under {cfg.data!r}")
        self.cfg, self.model, self.videos, self.spec = cfg, model, videos, loss
        self.trainable = model.trainable
        self._lengths: dict[Path, int] = {}

    def batch(self, rng: random.Random) -> Tensor:
        """(B, 3, L, h, w) in [-1, 1]: random video, start, crop window and horizontal flip per item."""
        sp = self.spec
        out = []
        for _ in range(sp.batch):
            path = self.videos[rng.randrange(len(self.videos))]
            n = self._lengths.setdefault(path, video_frames(path))
            clip = read_clip(path, rng.randrange(n - sp.frames + 1), sp.frames)  # (L, H, W, 3)
            H, W = clip.shape[1:3]
            ch, cw = min(sp.crop[0], H), min(sp.crop[1], W)
            y, x = rng.randrange(H - ch + 1), rng.randrange(W - cw + 1)
            clip = clip[:, y:y + ch, x:x + cw]
            if rng.random() < 0.5:
                clip = clip.flip(2)
            out.append(clip.permute(3, 0, 1, 2))
        return torch.stack(out) * 2 - 1

    def loss(self, rng: random.Random, gen: torch.Generator, step: int = 0) -> tuple[Tensor, float]:
        from ..gaussians.losses import ssim

        sp = self.spec
        x = self.batch(rng)
        z = self.model.encode(x)
        sigma = torch.rand(z.shape[0], 1, 1, 1, 1, generator=gen) * sp.latent_noise
        y = self.model.decode(z + sigma.to(z.device) * torch.randn(z.shape, generator=gen).to(z.device))
        x = x.to(y.device)
        rec = (y - x).abs().mean()
        if sp.lambda_chroma > 0:
            rec = rec + sp.lambda_chroma * ((y - y.mean(1, keepdim=True)) - (x - x.mean(1, keepdim=True))).abs().mean()
        if sp.lambda_dssim > 0:  # SSIM per frame in [0, 1]
            a = (y.transpose(1, 2).flatten(0, 1) + 1) / 2
            b = (x.transpose(1, 2).flatten(0, 1) + 1) / 2
            rec = rec + sp.lambda_dssim * (1 - ssim(a.clamp(0, 1), b))
        return rec + sp.lambda_moments * _moments(z), float(sigma.mean())

    def save(self, path: Path, state_dict: dict[str, Tensor] | None = None) -> None:
        self.model.save(path, state_dict)


class LatentSet:
    """Normalised VAE latents of whole clips, (N, C, T, h, w), as one safetensors file (``encode_videos``)."""

    def __init__(self, path: str | os.PathLike):
        from safetensors.torch import load_file

        d = load_file(str(path))
        if "latents" not in d:
            raise ValueError(f"{path}: not a latent set (no 'latents' tensor); make it with encode_videos")
        self.latents = d["latents"].float()

    def __len__(self) -> int:
        return self.latents.shape[0]


@torch.no_grad()
def encode_videos(encode: Callable[[Tensor], Tensor], videos: list[Path], frames: int, path: str | os.PathLike,
                  *, on_step: StepFn | None = None, chunk: int = 8) -> LatentSet:
    """Encode the first ``frames`` frames of every video with ``encode`` ((B, 3, L, H, W) in [-1, 1] ->
    normalised latents) into a ``LatentSet`` file at ``path`` (float16). Resumable: finished chunks are kept in
    ``path``'s ``.parts`` folder until the set is whole."""
    parts = Path(str(path) + ".parts")
    parts.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import load_file

    done = []
    for i in range(0, len(videos), chunk):
        part = parts / f"{i:07d}.safetensors"
        if not part.is_file():
            x = torch.stack([read_clip(v, 0, frames).permute(3, 0, 1, 2) for v in videos[i:i + chunk]]) * 2 - 1
            save_tensors(part, {"latents": encode(x).float().cpu().half()})
        done.append(load_file(str(part))["latents"])
        report(on_step, min(i + chunk, len(videos)), len(videos))
    save_tensors(path, {"latents": torch.cat(done)})
    for p in parts.iterdir():
        p.unlink()
    parts.rmdir()
    return LatentSet(path)


class BaseStage:
    """Rectified-flow step of the base on ``batch`` random clips of a ``LatentSet`` (module docstring)."""

    output_name = "base.safetensors"

    def __init__(self, cfg: TrainConfig, model: BaseTrainModel, latents: LatentSet, batch: int = 8):
        if len(latents) == 0:
            raise ValueError("the latent set is empty")
        self.cfg, self.model, self.latents, self.batch = cfg, model, latents, int(batch)
        self.trainable = model.trainable

    def loss(self, rng: random.Random, gen: torch.Generator, step: int = 0) -> tuple[Tensor, float]:
        idx = [rng.randrange(len(self.latents)) for _ in range(self.batch)]
        z0 = self.latents.latents[idx]
        eps = torch.randn(z0.shape, generator=gen)
        tau = torch.tensor([sample_tau(self.cfg.shift, gen) for _ in idx])
        t = tau.view(-1, 1, 1, 1, 1)
        x = (1 - t) * z0 + t * eps
        v = self.model.velocity(x, tau)
        return ((v.float() - (eps - z0).to(v.device)) ** 2).mean(), float(tau.mean())

    def save(self, path: Path, state_dict: dict[str, Tensor] | None = None) -> None:
        self.model.save(path, state_dict)
