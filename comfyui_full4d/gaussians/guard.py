"""Guard rails of the 4DGS fit: the parameters stay finite at every iteration (issue 13).

Three mechanisms, applied by ``fit_4dgs`` around each optimiser step:

* ``finite_grads``: a step whose loss or any gradient is NaN/inf is skipped (no parameter moves).
* ``clamp_``: after each step the canonical log-scales are clamped into ``[log_scale_min, log_scale_max]``
  (``scale_bounds``: from a hundred-thousandth of the camera extent up to the radius of the initial point
  cloud; a Gaussian larger than the whole scene is a diverged one) and the opacity logits into
  ``[-OPACITY_LOGIT_MAX, OPACITY_LOGIT_MAX]``. The deformation's scale offset is bounded smoothly in
  ``Scene4D.at`` (``model.MAX_DLOG_SCALE``).
* ``Snapshot``: a copy of the last state whose parameters were all finite (taken every few iterations);
  if a step still produces a non-finite parameter, the fit returns to it with fresh Adam moments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .model import GAUSSIAN_KEYS, Gaussians, Scene4D

__all__ = ["OPACITY_LOGIT_MAX", "Snapshot", "clamp_", "finite_grads", "finite_params", "scale_bounds"]

OPACITY_LOGIT_MAX = 12.0  # sigmoid(12) = 1 - 6e-6: fully opaque for the rasteriser (alpha is clamped at 0.999)


def scale_bounds(points: Tensor, extent: float) -> tuple[float, float]:
    """(log_scale_min, log_scale_max) for initial points (N, 3) and the camera extent (metres)."""
    p = points.detach().float()
    radius = float((p - p.median(0).values).norm(dim=-1).max()) if len(p) else 0.0
    radius = max(radius, 10.0 * extent, 1e-3)
    return math.log(max(extent, 1e-3) * 1e-5), math.log(radius)


def finite_grads(scene: Scene4D) -> bool:
    """True when every gradient of the Gaussians and the HexPlane is finite (missing gradients count as finite)."""
    params = [getattr(scene.gaussians, k) for k in GAUSSIAN_KEYS] + list(scene.hexplane.parameters())
    return all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in params)


def finite_params(scene: Scene4D) -> bool:
    """True when every parameter of the Gaussians and the HexPlane is finite."""
    params = [getattr(scene.gaussians, k) for k in GAUSSIAN_KEYS] + list(scene.hexplane.parameters())
    return all(bool(torch.isfinite(p).all()) for p in params)


@torch.no_grad()
def clamp_(g: Gaussians, log_scale_min: float, log_scale_max: float) -> None:
    """Clamp log-scales and opacity logits of ``g`` in place (module docstring)."""
    g.log_scales.clamp_(log_scale_min, log_scale_max)
    g.opacity_logits.clamp_(-OPACITY_LOGIT_MAX, OPACITY_LOGIT_MAX)


@dataclass
class Snapshot:
    """A detached copy of the Gaussians and the HexPlane weights at ``iteration``."""

    iteration: int
    gaussians: dict[str, Tensor]
    hexplane: dict[str, Tensor]

    @classmethod
    def take(cls, scene: Scene4D, iteration: int) -> "Snapshot":
        g = {k: getattr(scene.gaussians, k).detach().clone() for k in GAUSSIAN_KEYS}
        return cls(iteration, g, {k: v.detach().clone() for k, v in scene.hexplane.state_dict().items()})

    def restore(self, scene: Scene4D) -> None:
        """Put the copy back into ``scene`` (new Gaussian Parameters; the caller rebuilds its optimisers)."""
        scene.gaussians = Gaussians.from_dict({k: torch.nn.Parameter(v.clone()) for k, v in self.gaussians.items()})
        scene.hexplane.load_state_dict(self.hexplane)
