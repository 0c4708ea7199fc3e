"""Initialisation of the canonical Gaussians (SPEC 6): fused point clouds from depth
(aligned by ``geometry.align.umeyama`` where DA3 estimated them).

Points: ``X = R^T (z K^-1 [u, v, 1] - t)`` per pixel centre of each view's depth map (subsampled to a cap).
Scales: ``log(mean distance to the 3 nearest neighbours)`` (3DGS), opacity ``0.1``, identity rotation,
SH DC from the colour, higher bands zero.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..geometry.cameras import Camera
from .model import Gaussians
from .sh import rgb_to_sh0

__all__ = ["backproject_views", "init_gaussians", "nn_scales"]


def backproject_views(depth: Tensor, images: Tensor, cameras: Camera, max_points: int = 50_000,
                      seed: int = 0) -> tuple[Tensor, Tensor]:
    """Fuse depth maps into one point cloud.

    depth (V, H, W) metric z-depth (non-finite or <= 0 = invalid); images (V, H, W, 3) in [0, 1];
    cameras batched (V,) metric. Returns points (N, 3), colours (N, 3), N <= max_points (uniform subsample).
    """
    if depth.dim() != 3 or images.shape[:3] != depth.shape or images.shape[-1] != 3:
        raise ValueError(f"depth must be (V, H, W) and images (V, H, W, 3); got {tuple(depth.shape)}, "
                         f"{tuple(images.shape)}")
    V, H, W = depth.shape
    if len(cameras.batch_shape) != 1 or len(cameras) != V:
        raise ValueError(f"cameras must be batched (V={V},), got batch {tuple(cameras.batch_shape)}")
    dev = depth.device
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64, device=dev) + 0.5,
                          torch.arange(W, dtype=torch.float64, device=dev) + 0.5, indexing="ij")
    pix = torch.stack([u, v, torch.ones_like(u)], -1).reshape(-1, 3)  # (HW, 3)
    pts, cols = [], []
    for i in range(V):
        cam = cameras[i]
        z = depth[i].reshape(-1).double()
        ok = torch.isfinite(z) & (z > 0)
        xc = (pix[ok] @ torch.linalg.inv(cam.K.to(dev).double()).T) * z[ok, None]
        xw = (xc - cam.t.to(dev).double()) @ cam.R.to(dev).double()  # R^T (x - t)
        pts.append(xw)
        cols.append(images[i].reshape(-1, 3)[ok].double())
    points, colours = torch.cat(pts).float(), torch.cat(cols).float()
    if len(points) > max_points:
        g = torch.Generator().manual_seed(seed)
        keep = torch.randperm(len(points), generator=g)[:max_points].to(dev)  # CPU stream: same subset everywhere
        points, colours = points[keep], colours[keep]
    return points, colours


def nn_scales(points: Tensor, k: int = 3) -> Tensor:
    """Mean distance (N,) of each point to its k nearest neighbours (scipy cKDTree, on the CPU once at init; the
    result goes back to the points' device)."""
    from scipy.spatial import cKDTree

    p = points.detach().cpu().double().numpy()
    kk = min(k, len(p) - 1)
    if kk < 1:
        return torch.full((len(p),), 0.01, dtype=points.dtype, device=points.device)
    d, _ = cKDTree(p).query(p, k=kk + 1)
    return torch.from_numpy(d[:, 1:].mean(1)).to(points).clamp_min(1e-7)


def init_gaussians(points: Tensor, colours: Tensor, sh_degree: int = 3, opacity: float = 0.1,
                   scale_mult: float = 1.0) -> Gaussians:
    """Gaussians at points (N, 3) with colours (N, 3) in [0, 1], on the points' device; see module docstring."""
    if not isinstance(points, Tensor) or points.dim() != 2 or points.shape[-1] != 3 or len(points) == 0:
        got = tuple(points.shape) if isinstance(points, Tensor) else type(points).__name__
        raise ValueError(f"init points must be a non-empty (N, 3) tensor, got {got}; check the depth / geometry "
                         "input (no valid depth pixels?)")
    if tuple(colours.shape) != tuple(points.shape):
        raise ValueError(f"init colours must be (N, 3) like points {tuple(points.shape)}, got {tuple(colours.shape)}")
    if sh_degree not in (0, 1, 2, 3):
        raise ValueError(f"sh_degree must be 0..3, got {sh_degree}")
    if not bool(torch.isfinite(points).all()):
        raise ValueError("init points contain NaN/inf; mask invalid depth first")
    points = points.float()
    n = len(points)
    s = nn_scales(points) * scale_mult
    dev = points.device
    quats = torch.zeros(n, 4, device=dev)
    quats[:, 0] = 1
    return Gaussians(
        means=points.clone(), quats=quats, log_scales=torch.log(s)[:, None].repeat(1, 3),
        opacity_logits=torch.full((n,), math.log(opacity / (1 - opacity)), device=dev),
        sh_dc=rgb_to_sh0(colours.to(dev).float().clamp(0, 1))[:, None, :].clone(),
        sh_rest=torch.zeros(n, (sh_degree + 1) ** 2 - 1, 3, device=dev),
    )
