"""Source-video geometry: what DA3 (or a synthetic scene) says about the input camera (SPEC 3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

__all__ = ["Geometry", "scene_scale"]


def scene_scale(depth0: Tensor, valid: Optional[Tensor] = None) -> float:
    """Scene scale ``s`` = median of the valid metric depths of source frame 0 (SPEC 3).

    depth0: (H, W) metric z-depth; valid: (H, W) bool or None (then finite and > 0).
    """
    ok = torch.isfinite(depth0) & (depth0 > 0)
    if valid is not None:
        ok &= valid
    if not bool(ok.any()):
        raise ValueError("depth: frame 0 has no valid (finite, positive, confident) depth; cannot set the scene scale")
    return float(depth0[ok].median())


@dataclass(frozen=True)
class Geometry:
    """Depth and cameras of the source video.

    depth: (T, H, W) metric z-depth (NaN/inf/<=0 mean invalid).
    conf: (T, H, W) confidence or None (all confident).
    K: (3, 3) source intrinsics in pixels at (H, W).
    w2c: (T, 4, 4) per-frame source world-to-camera; world = source camera at frame 0.
    scale: metres per scene unit (median depth of frame 0).
    views_depth: (V, T, H, W) metric z-depth of every rig view (view 0 = the source), or None. Only a
      synthetic scene knows it (its ground truth); the 4DGS fit initialises from it when present.
    """

    depth: Tensor
    K: Tensor
    w2c: Tensor
    scale: float
    conf: Optional[Tensor] = None
    views_depth: Optional[Tensor] = None

    def __post_init__(self) -> None:
        if self.depth.dim() != 3:
            raise ValueError(f"geometry depth must be (T, H, W), got {tuple(self.depth.shape)}")
        T = self.depth.shape[0]
        if tuple(self.K.shape) != (3, 3):
            raise ValueError(f"geometry K must be (3, 3), got {tuple(self.K.shape)}")
        if tuple(self.w2c.shape) != (T, 4, 4):
            raise ValueError(f"geometry w2c must be (T={T}, 4, 4), got {tuple(self.w2c.shape)}")
        if self.conf is not None and self.conf.shape != self.depth.shape:
            raise ValueError(f"geometry conf {tuple(self.conf.shape)} must match depth {tuple(self.depth.shape)}")
        if self.views_depth is not None and (self.views_depth.dim() != 4 or self.views_depth.shape[1] != T):
            raise ValueError(f"geometry views_depth must be (V, T={T}, H, W), got {tuple(self.views_depth.shape)}")

    @property
    def num_frames(self) -> int:
        return self.depth.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        """(H, W)."""
        return int(self.depth.shape[1]), int(self.depth.shape[2])

    @classmethod
    def static(cls, depth: Tensor, K: Tensor, conf: Optional[Tensor] = None) -> "Geometry":
        """A fixed source camera (the paper's setting): identity pose for every frame."""
        T = depth.shape[0]
        w2c = torch.eye(4, dtype=torch.float32).expand(T, 4, 4).clone()
        valid = None if conf is None else conf[0] > 0
        return cls(depth=depth, K=K, w2c=w2c, scale=scene_scale(depth[0], valid), conf=conf)
