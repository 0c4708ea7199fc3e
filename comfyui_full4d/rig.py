"""Camera rig presets in scene units (SPEC 3). Conventions: ``comfyui_full4d/cameras.py``.

The source camera is view 0 and sits at the world origin with identity rotation (world = the
source camera's frame). The scene centre (look-at point) defaults to ``(0, 0, 1)``: one scene
unit (the median source depth) in front of the source.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .cameras import Camera, Rig, look_at

__all__ = ["ring_rig"]


def ring_rig(num_views: int, K: Tensor, width: int, height: int, radius: float = 1.0,
             elevation_deg: float = 0.0, center: tuple[float, float, float] = (0.0, 0.0, 1.0)) -> Rig:
    """View 0 = the source (identity); views 1..V-1 on a circle about ``center``.

    Camera ``i`` sits at azimuth ``phi_i = 2*pi*i/V`` measured from the source about the world
    y axis (positive towards +x), at ``radius`` (scene units) and ``elevation_deg`` above the
    horizontal plane (world up is -y), looking at ``center``:
    ``C_i = center + radius * (cos(e) * (sin(phi), 0, -cos(phi)) + sin(e) * (0, -1, 0))``.

    K: (3, 3) shared intrinsics in pixels. Returns a Rig of V cameras.
    """
    if int(num_views) < 2:
        raise ValueError(f"num_views must be >= 2 (the source plus at least one target), got {num_views}")
    if not (radius > 0 and math.isfinite(radius)):
        raise ValueError(f"radius must be positive and finite, got {radius}")
    c = torch.tensor(center, dtype=torch.float64)
    e = math.radians(elevation_deg)
    phi = torch.arange(1, num_views, dtype=torch.float64) * (2 * math.pi / num_views)
    offs = torch.stack([torch.sin(phi) * math.cos(e), torch.full_like(phi, -math.sin(e)),
                        -torch.cos(phi) * math.cos(e)], dim=-1)
    eye = c + radius * offs
    R, t = look_at(eye, c.expand_as(eye))
    R = torch.cat([torch.eye(3, dtype=torch.float64)[None], R]).float()
    t = torch.cat([torch.zeros(1, 3, dtype=torch.float64), t]).float()
    Ks = K.float().expand(num_views, 3, 3).clone()
    names = ("source",) + tuple(f"ring{i}" for i in range(1, num_views))
    return Rig(cameras=Camera(K=Ks, R=R, t=t, width=width, height=height), center=c.float(), names=names)
