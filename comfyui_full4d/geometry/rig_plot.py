"""A picture of a rig to iterate on: top-down (x-z) and side (z-up) views of the camera frusta
and the source's scene points, drawn with plain torch (no plotting library).

Panel axes (scene units, our world: x right, y down, z forward from the source):
top-down: image right = +x, image up = +z (away from the source); side: image right = +z,
image up = -y (world up). View 0 (the source) is drawn white, the others in hues by index.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from .cameras import Rig

__all__ = ["plot_rig", "scene_points", "rig_with_plot"]

_BG = torch.tensor([0.08, 0.08, 0.1])


def _hue(i: int, n: int) -> Tensor:
    h = (i / max(n, 1)) * 6.0
    c = [max(0.0, min(1.0, abs(((h + o) % 6) - 3) - 1)) for o in (0, 4, 2)]
    return torch.tensor(c) * 0.85 + 0.15


def _frusta(rig: Rig, size: float) -> tuple[Tensor, Tensor]:
    """Camera centres (V, 3) and frustum segments (V, 8, 2, 3) in scene units."""
    cams = rig.cameras
    C = cams.center.double()
    K = cams.K.double().expand(rig.num_views, 3, 3)
    corners = torch.tensor([[0, 0], [cams.width, 0], [cams.width, cams.height], [0, cams.height]], dtype=torch.float64)
    rays = torch.stack([(corners[:, 0] - K[:, None, 0, 2]) / K[:, None, 0, 0],
                        (corners[:, 1] - K[:, None, 1, 2]) / K[:, None, 1, 1],
                        torch.ones(rig.num_views, 4, dtype=torch.float64)], -1)  # (V, 4, 3) camera coords
    world = C[:, None] + size * (rays @ cams.R.double())  # R^T applied to each ray
    segs = [torch.stack([C, world[:, k]], 1) for k in range(4)]
    segs += [torch.stack([world[:, k], world[:, (k + 1) % 4]], 1) for k in range(4)]
    return C, torch.stack(segs, 1)


def _panel(points: Tensor, colors: Tensor, C: Tensor, segs: Tensor, center: Tensor, axes: tuple[int, int],
           signs: tuple[float, float], size: int) -> Tensor:
    """Render one (size, size, 3) panel projecting world coords on ``axes`` (horizontal, vertical)."""
    img = _BG.expand(size, size, 3).clone()
    a, b = axes

    def xy(P: Tensor) -> Tensor:
        return torch.stack([signs[0] * P[..., a], signs[1] * P[..., b]], -1)

    keys = torch.cat([xy(C), xy(segs.reshape(-1, 3)), xy(center[None])] + ([xy(points)] if len(points) else []))
    lo, hi = keys.amin(0), keys.amax(0)
    mid, half = (lo + hi) / 2, float((hi - lo).max()) / 2 * 1.1 + 1e-6

    def to_px(P: Tensor) -> Tensor:
        q = (xy(P) - mid) / half  # [-1, 1]
        return torch.stack([(q[..., 0] + 1) / 2 * (size - 1), (1 - q[..., 1]) / 2 * (size - 1)], -1).round().long()

    def dots(P: Tensor, col: Tensor, r: int = 0) -> None:
        p = to_px(P)
        for dx in range(-r, r + 1):
            for dy in range(-r, r + 1):
                x, y = p[:, 0] + dx, p[:, 1] + dy
                ok = (x >= 0) & (x < size) & (y >= 0) & (y < size)
                img[y[ok], x[ok]] = col[ok] if col.dim() == 2 else col
    if len(points):
        dots(points, colors)
    dots(center[None], torch.tensor([1.0, 1.0, 0.2]), 2)
    s = torch.linspace(0, 1, 2 * size, dtype=torch.float64)[None, :, None]
    for v in range(len(C)):
        col = torch.ones(3) if v == 0 else _hue(v - 1, len(C) - 1)
        line = segs[v, :, :1] * (1 - s) + segs[v, :, 1:] * s  # (8, L, 3)
        dots(line.reshape(-1, 3), col)
        dots(C[v:v + 1], col, 2)
    return img


def plot_rig(rig: Rig, points: Optional[Tensor] = None, colors: Optional[Tensor] = None, size: int = 320,
             max_points: int = 20000) -> Tensor:
    """(1, size, 2*size, 3) float32 image: top-down panel | side panel.

    points: (N, 3) scene points in scene units (e.g. frame 0 back-projected, divided by the
    scale), colors: (N, 3) in [0, 1] or None (grey). Points farther than twice the rig radius
    from ``rig.center`` are left out; at most ``max_points`` are drawn.
    """
    if int(size) < 64:
        raise ValueError(f"plot size must be >= 64 pixels, got {size}")
    pts = torch.zeros(0, 3, dtype=torch.float64) if points is None else points.double().reshape(-1, 3)
    col = torch.full((len(pts), 3), 0.5) if colors is None else colors.float().reshape(-1, 3)
    keep = torch.isfinite(pts).all(-1)
    pts, col = pts[keep], col[keep]
    C = rig.cameras.center.double()
    extent = float((C - rig.center.double()).norm(dim=-1).max()) or 1.0
    near = (pts - rig.center.double()).norm(dim=-1) <= 2.0 * extent  # far backdrop would shrink the rig
    pts, col = pts[near], col[near]
    if len(pts) > max_points:
        idx = torch.linspace(0, len(pts) - 1, max_points).long()
        pts, col = pts[idx], col[idx]
    C, segs = _frusta(rig, 0.3 * extent)
    center = rig.center.double()
    top = _panel(pts, col, C, segs, center, (0, 2), (1.0, 1.0), int(size))
    side = _panel(pts, col, C, segs, center, (2, 1), (1.0, -1.0), int(size))
    sep = torch.full((int(size), 2, 3), 0.4)
    return torch.cat([top, sep, side], 1)[None].float().clamp(0, 1)


def scene_points(depth0: Tensor, K: Tensor, w2c0: Tensor, scale: float, image0: Optional[Tensor] = None,
                 stride: int = 2) -> tuple[Tensor, Optional[Tensor]]:
    """Frame-0 points in scene units for the plot: depth0 (H, W) metric, K (3, 3), w2c0 (4, 4).

    Returns points (N, 3) and colours (N, 3) (or None without image0 (H, W, 3))."""
    H, W = depth0.shape
    i, j = torch.meshgrid(torch.arange(0, H, stride, dtype=torch.float64) + 0.5,
                          torch.arange(0, W, stride, dtype=torch.float64) + 0.5, indexing="ij")
    d = depth0[::stride, ::stride].double()
    K = K.double()
    cam = torch.stack([(j - K[0, 2]) / K[0, 0] * d, (i - K[1, 2]) / K[1, 1] * d, d], -1).reshape(-1, 3)
    M = w2c0.double()
    world = (cam - M[:3, 3]) @ M[:3, :3]
    ok = torch.isfinite(d).reshape(-1) & (d.reshape(-1) > 0)
    cols = None if image0 is None else image0[::stride, ::stride].reshape(-1, 3)[ok]
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scene scale must be positive, got {scale}")
    return world[ok] / scale, cols


def rig_with_plot(preset: str, width: int, height: int, fov_y_deg: float = 50.0, num_views: int = 6,
                  radius: float = 1.0, elevation_deg: float = 0.0, span_deg: float = 90.0, custom_json: str = "",
                  load3d: list | tuple = (), geometry=None, image: Optional[Tensor] = None,
                  plot_size: int = 320) -> tuple[Rig, Tensor]:
    """``build_rig`` with the source intrinsics of ``geometry`` (K and size) when given, else a
    ``fov_y_deg`` pinhole at (height, width); plus ``plot_rig`` of the rig and the geometry's
    frame-0 points (coloured by image (T, H, W, 3) frame 0 when it matches the geometry).
    Returns the Rig and the plot (1, plot_size, 2*plot_size + 2, 3)."""
    from .cameras import intrinsics_from_fov
    from .rig import build_rig

    if geometry is not None:
        H, W = geometry.size
        K = geometry.K.float()
    else:
        H, W, K = int(height), int(width), intrinsics_from_fov(fov_y_deg, int(width), int(height))
    rig = build_rig(preset, K, W, H, num_views, radius, elevation_deg, span_deg, custom_json, load3d)
    points = colors = None
    if geometry is not None:
        img0 = image[0] if image is not None and tuple(image.shape[1:3]) == (H, W) else None
        points, colors = scene_points(geometry.depth[0], geometry.K, geometry.w2c[0], geometry.scale, img0)
    return rig, plot_rig(rig, points, colors, plot_size)
