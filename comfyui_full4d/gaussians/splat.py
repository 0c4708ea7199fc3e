"""A 4D scene as static splats (render-ready tensors) at chosen times, and static splats back as
canonical Gaussians. Plain torch: the host's SPLAT type is built from these in ``host.splat``.

Render-ready form (the layout of core ComfyUI's SPLAT, 0.33+): positions (B, N, 3) world, scales
(B, N, 3) linear std, rotations (B, N, 4) unit wxyz, opacities (B, N, 1) in (0, 1), sh (B, N, K, 3)
with K = (d+1)^2 (3DGS layout, sh[..., 0, :] the DC term).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .model import Gaussians, Scene4D
from .sh import sh_to_rgb0

SPLAT_KEYS = ("positions", "scales", "rotations", "opacities", "sh")


def scene_times(scene: Scene4D, time: float, num_frames: int) -> list[float]:
    """``num_frames`` = 1: just ``time``; more: evenly spaced over the scene's fitted time range."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if num_frames == 1:
        return [float(time)]
    t0, t1 = scene.time_range
    return torch.linspace(float(t0), float(t1), num_frames).tolist()


@torch.no_grad()
def splats_at(scene: Scene4D, times: list[float]) -> dict[str, Tensor]:
    """The deformed Gaussians (``Scene4D.at``) at each time, stacked: the tensors of SPLAT_KEYS (B = len(times))."""
    frames = []
    for t in times:
        means, quats, scales, opacities, sh = scene.at(float(t))
        frames.append((means, scales, quats, opacities[:, None], sh))
    return {k: torch.stack([f[i] for f in frames]).float().cpu() for i, k in enumerate(SPLAT_KEYS)}


def gaussians_from_splat(positions: Tensor, scales: Tensor, rotations: Tensor, opacities: Tensor, sh: Tensor,
                         sh_degree: int) -> Gaussians:
    """Canonical Gaussians from one render-ready item (N, ...) (inverse activations: log scale, logit
    opacity); SH cut or zero-padded to ``sh_degree``."""
    n = positions.shape[0]
    if n == 0:
        raise ValueError("splat: has no Gaussians")
    k = (sh_degree + 1) ** 2
    coeffs = torch.zeros(n, k, 3, dtype=torch.float32)
    m = min(k, sh.shape[1])
    coeffs[:, :m] = sh[:, :m].float()
    op = opacities.reshape(n).float().clamp(1e-6, 1 - 1e-6)
    return Gaussians(means=positions.float().clone(), quats=rotations.float().clone(),
                     log_scales=torch.log(scales.float().clamp_min(1e-8)), opacity_logits=torch.logit(op),
                     sh_dc=coeffs[:, :1].contiguous(), sh_rest=coeffs[:, 1:].contiguous())


def splat_cloud(positions: Tensor, sh: Tensor, max_points: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Init points of a fit from one splat item: positions (N, 3) and the DC colour of sh (N, K, 3) in [0, 1],
    at most ``max_points`` of them (a seeded random subset). Returns (points (M, 3), colours (M, 3))."""
    n = positions.shape[0]
    if n == 0:
        raise ValueError("init_splat: the splat has no Gaussians")
    if positions.shape != (n, 3) or sh.dim() != 3 or sh.shape[0] != n or sh.shape[-1] != 3:
        raise ValueError(f"init_splat: positions (N, 3) and sh (N, K, 3) expected, got {tuple(positions.shape)} "
                         f"and {tuple(sh.shape)}")
    keep = torch.arange(n)
    if n > max_points:
        keep = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_points].sort().values
    pts, cols = positions[keep].float(), sh_to_rgb0(sh[keep, 0].float()).clamp(0, 1)
    finite = torch.isfinite(pts).all(-1) & torch.isfinite(cols).all(-1)
    if not bool(finite.any()):
        raise ValueError("init_splat: no Gaussian of the splat has a finite position and colour")
    return pts[finite], cols[finite]
