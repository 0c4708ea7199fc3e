"""Flow Matching Distillation (SPEC 8, paper Eq. 12-13), host-free.

``tau ~ U[tau_min, tau_max]``, ``eps ~ N(0, I)``, ``z_tau = (1 - tau) z + tau eps``,
``z0_hat = z_tau - tau v(z_tau, tau, camera)``, ``L = w(tau) mean((stopgrad(z0_hat) - z)^2)`` with
``z = encode(render(camera))``. The frozen model (``velocity_fn``) and the VAE (``encode_fn``) are
injected callables, so gradients reach the Gaussians through the encoder and the renderer only.

Host wiring: pass ``FMDConfig(encode_fn=..., velocity_fn=...)`` to ``fit_4dgs``; ``encode_fn(frames
(T, H, W, 3) in [0, 1]) -> z`` must be differentiable and return ``z`` in the space the teacher's flow
was trained in (noise, teacher call and loss all happen there; for the host model that is the
normalised latent ``process_latent_in(VAE(frames))``, see ``host.fmd``); ``velocity_fn(z_tau, tau
(float), camera)`` may run under ``torch.no_grad`` (its output is detached here anyway).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..geometry.cameras import Camera

__all__ = ["FMDConfig", "fmd_loss", "pool_encoder", "StandInVelocity"]


def _unit_weight(tau: float) -> float:
    return 1.0


@dataclass(frozen=True)
class FMDConfig:
    """encode_fn, velocity_fn: see module docstring. ``cameras``: the poses to sample (batched (P,),
    metric); default ``interpolate_rig`` of the training cameras with ``num_poses`` (120, App. B).
    The loss weight ``lambda_fmd`` lives in ``FitConfig``; FMD runs every ``every`` iterations from ``start``."""

    encode_fn: Callable[[Tensor], Tensor]
    velocity_fn: Callable[[Tensor, float, Camera], Tensor]
    weight: Callable[[float], float] = _unit_weight
    cameras: Camera | None = None
    num_poses: int = 120
    tau_min: float = 0.02
    tau_max: float = 0.98
    every: int = 1
    start: int = 0
    extras: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not (0.0 <= self.tau_min < self.tau_max <= 1.0):
            raise ValueError(f"FMD tau range must satisfy 0 <= tau_min < tau_max <= 1, got "
                             f"[{self.tau_min}, {self.tau_max}]")
        if self.every < 1 or self.num_poses < 1:
            raise ValueError(f"FMD every and num_poses must be >= 1, got {self.every}, {self.num_poses}")


def fmd_loss(render_fn: Callable[[Camera], Tensor], encode_fn: Callable[[Tensor], Tensor],
             velocity_fn: Callable[[Tensor, float, Camera], Tensor], camera: Camera,
             generator: torch.Generator | None = None, w: Callable[[float], float] = _unit_weight,
             tau_range: tuple[float, float] = (0.02, 0.98)) -> tuple[Tensor, dict]:
    """One FMD term (module docstring). render_fn(camera) -> frames (T, H, W, 3). Returns (loss, info)."""
    frames = render_fn(camera)
    z = encode_fn(frames)
    lo, hi = tau_range
    tau = float(lo + (hi - lo) * torch.rand((), generator=generator))
    eps = torch.randn(z.shape, generator=generator, dtype=z.dtype).to(z.device)
    z_tau = (1 - tau) * z.detach() + tau * eps
    with torch.no_grad():
        v = velocity_fn(z_tau, tau, camera)
    z0_hat = (z_tau - tau * v).detach()
    loss = float(w(tau)) * (z0_hat - z).pow(2).mean()
    return loss, {"tau": tau}


def pool_encoder(factor: int = 8) -> Callable[[Tensor], Tensor]:
    """STAND-IN encoder (not a VAE): ``z = avgpool_factor(2 frames - 1)`` as (T, 3, H/f, W/f); differentiable."""

    def enc(frames: Tensor) -> Tensor:
        x = frames.permute(0, 3, 1, 2) * 2 - 1
        return F.avg_pool2d(x, factor, ceil_mode=True)

    return enc


class StandInVelocity:
    """STAND-IN "teacher" (not a diffusion model): the exact flow velocity towards known target latents,
    ``v = (z_tau - z_target) / tau`` so ``z0_hat = z_target`` (a perfect teacher); ``targets(camera) -> z``."""

    def __init__(self, targets: Callable[[Camera], Tensor]):
        self.targets = targets

    def __call__(self, z_tau: Tensor, tau: float, camera: Camera) -> Tensor:
        return (z_tau - self.targets(camera).to(z_tau)) / max(tau, 1e-6)
