"""Differentiable 3D Gaussian rasteriser (SPEC 6): gsplat on CUDA, a tiled torch compositor on CPU.

Image formation (gsplat 1.5.3 "classic" mode; every backend and the reference obey it):

* camera space: ``m_c = R m + t``, ``Sigma = R_q S S^T R_q^T`` (``q`` wxyz, normalised; ``S = diag(scales)``),
  ``Sigma_c = R Sigma R^T``; Gaussians with ``z < 0.01`` (near plane) are culled.
* EWA: ``J = [[fx/z, 0, -fx x/z^2], [0, fy/z, -fy y/z^2]]`` with ``x/z, y/z`` clamped to 1.3x the frustum,
  ``Sigma2d = J Sigma_c J^T + 0.3 I`` (gsplat ``eps2d``, no antialiasing compensation),
  ``mu2d = (K[:2] m_c) / z``.
* per pixel centre ``p = (j + 0.5, i + 0.5)``: ``alpha_i = min(0.999, o_i exp(-0.5 d^T Sigma2d^-1 d))``,
  ``d = p - mu2d`` (0.999 is gsplat 1.5.3's clamp, ``RasterizeToPixels3DGSFwd.cu``); ``alpha_i < 1/255`` is skipped.
* front to back in depth order: ``C = sum_i c_i alpha_i T_i``, ``T_i = prod_{j<i} (1 - alpha_j)``; a pixel stops
  before the Gaussian that would bring its transmittance to ``<= 1e-4``. ``A = sum_i alpha_i T_i``,
  ``rgb = C + (1 - A) * background``.

CPU path: Gaussians are binned into 8x8 tiles by their opacity-aware bounding boxes (``radius = ceil(e *
sqrt(Sigma2d_xx))``, ``e = min(3.33, sqrt(2 ln(255 o)))``: every pixel with ``alpha >= 1/255`` lies inside it, so
the tile size changes nothing). Tiles with similar Gaussian counts are batched; in a batch the exponent of every
(pixel, Gaussian) pair is ONE matmul of a fixed (64, 6) tile-centred pixel basis ``[u^2, uv, v^2, u, v, 1]`` with
six per-(tile, Gaussian) coefficients, and transmittance is a cumulative product carried over depth-ordered chunks
(a tile drops out once all its pixels are saturated). A hand-written backward recomputes the alphas chunk by chunk,
so memory grows with the number of (tile, Gaussian) pairs only. Cost grows with sum over tiles of (pixels x
Gaussians touching the tile): about 0.1 s forward + backward for 10k Gaussians of ~2 px at 96x160 on one core.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .composite import ALPHA_MAX, ALPHA_MIN, T_MIN, composite_tiles

__all__ = ["Projection", "project_gaussians", "rasterize", "rasterize_reference", "quat_scale_to_covariance"]

TILE = 16  # gsplat's tile size (CUDA)
NEAR_PLANE = 0.01
EPS2D = 0.3
MAX_SCALE = 1e12  # larger scales (scene units) are culled: their covariance would overflow float32
EXTEND = 3.33


@dataclass(frozen=True)
class Projection:
    """Screen-space Gaussians (gsplat ``fully_fused_projection`` outputs).

    means2d: (N, 2) pixels; cov2d: (N, 2, 2) including the 0.3 px blur; conics: (N, 3) ``(a, b, c)`` of
    ``Sigma2d^-1 = [[a, b], [b, c]]``; depths: (N,) camera z; radii: (N, 2) int32 bounding-box half sizes in
    pixels, ``0`` for culled Gaussians (behind the near plane, degenerate, transparent or off-screen).
    """

    means2d: Tensor
    cov2d: Tensor
    conics: Tensor
    depths: Tensor
    radii: Tensor


def quat_scale_to_covariance(quats: Tensor, scales: Tensor) -> Tensor:
    """``Sigma = R(q) diag(s)^2 R(q)^T``. quats (N, 4) wxyz (normalised here), scales (N, 3) -> (N, 3, 3)."""
    q = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    R = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(q.shape[:-1] + (3, 3))
    M = R * scales[..., None, :]  # (N, 3, 3) = R S
    return M @ M.transpose(-1, -2)


def project_gaussians(
    means: Tensor,  # (N, 3)
    quats: Tensor,  # (N, 4)
    scales: Tensor,  # (N, 3)
    viewmat: Tensor,  # (4, 4)
    K: Tensor,  # (3, 3)
    width: int,
    height: int,
    opacities: Tensor | None = None,  # (N,)
) -> Projection:
    """EWA projection ``Sigma2d = J R Sigma R^T J^T + 0.3 I`` (module docstring; gsplat's pinhole model).

    With ``opacities`` the radii are opacity-aware and Gaussians with ``o < 1/255`` are culled (gsplat's CUDA
    kernel); without, the radius factor is 3.33 (gsplat's ``_fully_fused_projection`` torch twin).
    """
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    means_c = means @ R.T + t  # (N, 3)
    # a runaway scale (> MAX_SCALE, e.g. from a diverging deformation) overflows the covariance in float32;
    # such Gaussians are culled and get a finite stand-in, so no 0 * inf = NaN gradient flows back
    sane = (scales.detach() < MAX_SCALE).all(-1)
    scales = torch.where(sane[:, None], scales, torch.ones_like(scales))
    cov_c = R @ quat_scale_to_covariance(quats, scales) @ R.T  # (N, 3, 3)
    x, y, z = means_c.unbind(-1)
    in_front = z >= NEAR_PLANE
    zs = torch.where(in_front, z, torch.ones_like(z))  # culled ones never divide by ~0 (no inf/nan grads)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    lim_x_pos, lim_x_neg = (width - cx) / fx + 0.15 * width / fx, cx / fx + 0.15 * width / fx
    lim_y_pos, lim_y_neg = (height - cy) / fy + 0.15 * height / fy, cy / fy + 0.15 * height / fy
    tx = zs * torch.minimum(torch.maximum(x / zs, -lim_x_neg), lim_x_pos)
    ty = zs * torch.minimum(torch.maximum(y / zs, -lim_y_neg), lim_y_pos)
    zero = torch.zeros_like(zs)
    J = torch.stack([fx / zs, zero, -fx * tx / zs**2, zero, fy / zs, -fy * ty / zs**2], -1).reshape(-1, 2, 3)
    eye = EPS2D * torch.eye(2, dtype=means.dtype, device=means.device)
    cov2d = J @ cov_c @ J.transpose(-1, -2) + eye
    # a 2D covariance that overflowed (huge footprint) is culled too, with a stand-in for the conic's gradient
    finite = sane & torch.isfinite(cov2d.detach()).all(-1).all(-1)
    cov2d = torch.where(finite[:, None, None], cov2d, eye)
    means2d = (means_c @ K[:2].T) / zs[:, None]  # (N, 2)
    # conic = adj(cov2d) / det(cov2d), computed on cov2d / s (s = its largest entry, >= 0.3 from the low-pass):
    # the same value for any constant s, but det stays in range for footprints whose det overflows float32
    s = cov2d.detach().abs().amax((-1, -2))  # (N,)
    c = cov2d / s[:, None, None]
    det = c[:, 0, 0] * c[:, 1, 1] - c[:, 0, 1] * c[:, 1, 0]  # det(cov2d) / s^2, same sign
    conics = torch.stack([c[:, 1, 1], -0.5 * (c[:, 0, 1] + c[:, 1, 0]), c[:, 0, 0]], -1) / (
        det.clamp_min(1e-20) * s)[:, None]
    with torch.no_grad():
        valid = in_front & finite & (det > 0)
        extend = torch.full_like(z, EXTEND)
        if opacities is not None:
            o = opacities.detach()
            valid &= o >= ALPHA_MIN
            extend = torch.minimum(extend, torch.sqrt(2.0 * torch.log(o.clamp_min(ALPHA_MIN) / ALPHA_MIN)))
        diag = torch.stack([cov2d[:, 0, 0], cov2d[:, 1, 1]], -1).clamp_min(0)
        radii = torch.ceil(extend[:, None] * diag.sqrt()).clamp_max(2.0**30)  # stays an int32
        m = means2d.detach()
        inside = (
            (m[:, 0] + radii[:, 0] > 0) & (m[:, 0] - radii[:, 0] < width)
            & (m[:, 1] + radii[:, 1] > 0) & (m[:, 1] - radii[:, 1] < height)
        )
        radii = torch.where((valid & inside)[:, None], radii, torch.zeros_like(radii)).to(torch.int32)
    return Projection(means2d=means2d, cov2d=cov2d, conics=conics, depths=z, radii=radii)


# ---- input checks ----------------------------------------------------------------------------------
def _check_inputs(means, quats, scales, opacities, colors, viewmat, K, width, height, background) -> None:
    if not isinstance(means, Tensor) or means.dim() != 2 or means.shape[-1] != 3:
        got = tuple(means.shape) if isinstance(means, Tensor) else type(means).__name__
        raise ValueError(f"means must be a tensor of shape (N, 3), got {got}")
    N = means.shape[0]
    expected = {
        "means": (means, (N, 3)), "quats": (quats, (N, 4)), "scales": (scales, (N, 3)),
        "opacities": (opacities, (N,)), "colors": (colors, (N, 3)), "viewmat": (viewmat, (4, 4)), "K": (K, (3, 3)),
    }
    if background is not None:
        expected["background"] = (background, (3,))
    for name, (x, shape) in expected.items():
        if not isinstance(x, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor of shape {shape}, got {type(x).__name__}")
        if tuple(x.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} (N = means.shape[0] = {N}), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
        if x.device != means.device:
            raise ValueError(f"{name} is on {x.device} but means is on {means.device}; move all inputs to one device")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} contains non-finite values (nan/inf); fix the upstream computation")
    lo, hi = (float(opacities.detach().min()), float(opacities.detach().max())) if N else (0.0, 1.0)
    if lo < 0 or hi > 1:
        raise ValueError(f"opacities must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}]; apply a sigmoid to logits")
    for name, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if float(K[0, 0].detach()) <= 0 or float(K[1, 1].detach()) <= 0:
        raise ValueError(f"K must have positive focal lengths, got fx={float(K[0, 0])}, fy={float(K[1, 1])}")


def _prepare(means, quats, scales, opacities, colors, viewmat, K, background):
    """Cast every input to means' dtype (viewmat/K often arrive as float64 from cameras)."""
    dt = means.dtype
    cast = [x.to(dt) for x in (quats, scales, opacities, colors, viewmat, K)]
    bg = None if background is None else background.to(dt)
    return (means, *cast, bg)


# ---- public API ------------------------------------------------------------------------------------
def rasterize(
    means: Tensor,  # (N, 3)
    quats: Tensor,  # (N, 4)
    scales: Tensor,  # (N, 3)
    opacities: Tensor,  # (N,)
    colors: Tensor,  # (N, 3)
    viewmat: Tensor,  # (4, 4)
    K: Tensor,  # (3, 3)
    width: int,
    height: int,
    background: Tensor | None = None,  # (3,)
    *,
    info: dict | None = None,
    backend: str = "auto",
) -> tuple[Tensor, Tensor]:
    """Render Gaussians front to back (module docstring; SPEC 6). Differentiable w.r.t. every tensor input.

    means (N, 3) world; quats (N, 4) wxyz; scales (N, 3) linear; opacities (N,) in [0, 1]; colors (N, 3);
    viewmat (4, 4) world-to-camera (OpenCV); K (3, 3) pixels; background (3,) or None (black).
    Returns rgb (H, W, 3) and alpha (H, W). CUDA tensors go through gsplat (packed=False, classic), CPU
    tensors through the tiled torch compositor. If ``info`` is a dict it receives ``"means2d"`` (its
    ``.grad.reshape(N, 2)`` after backward is the view-space gradient used for densification), ``"radii"``
    (N, 2) and ``"depths"`` (N,). ``backend``: ``"auto"`` (gsplat for CUDA tensors, else torch), ``"torch"``
    (this module's compositor on any device) or ``"gsplat"`` (CUDA only).
    """
    if backend not in ("auto", "torch", "gsplat"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'gsplat', got {backend!r}")
    if backend == "gsplat" and not (isinstance(means, Tensor) and means.is_cuda):
        raise ValueError("backend='gsplat' needs CUDA tensors (gsplat rasterises on CUDA only); use backend='torch'")
    _check_inputs(means, quats, scales, opacities, colors, viewmat, K, width, height, background)
    means, quats, scales, opacities, colors, viewmat, K, background = _prepare(
        means, quats, scales, opacities, colors, viewmat, K, background
    )
    if means.shape[0] and (backend == "gsplat" or (backend == "auto" and means.is_cuda)):  # gsplat needs N > 0
        return _rasterize_gsplat(means, quats, scales, opacities, colors, viewmat, K, width, height, background, info)
    proj = project_gaussians(means, quats, scales, viewmat, K, width, height, opacities=opacities)
    if info is not None:
        if proj.means2d.requires_grad:
            proj.means2d.retain_grad()
        info.update(means2d=proj.means2d, radii=proj.radii, depths=proj.depths.detach())
    out = composite_tiles(proj, opacities, colors, width, height)  # (H, W, 4)
    rgb, alpha = out[..., :3], out[..., 3]
    if background is not None:
        rgb = rgb + (1.0 - alpha)[..., None] * background
    return rgb, alpha


def _rasterize_gsplat(means, quats, scales, opacities, colors, viewmat, K, width, height, background, info):
    """gsplat 1.5.3 ``rasterization`` with this module's conventions (one camera)."""
    from gsplat import rasterization  # lazy: CUDA-only dependency

    dtype = means.dtype  # gsplat's kernels take float32
    means, quats, scales, opacities, colors, viewmat, K = (
        x.float().contiguous() for x in (means, quats, scales, opacities, colors, viewmat, K)
    )
    render, alphas, meta = rasterization(
        means, quats, scales, opacities, colors, viewmat[None], K[None], width, height,
        near_plane=NEAR_PLANE, eps2d=EPS2D, sh_degree=None, packed=False, tile_size=TILE,
        backgrounds=None if background is None else background.float()[None], render_mode="RGB",
        rasterize_mode="classic", camera_model="pinhole",
    )
    if info is not None:
        means2d = meta["means2d"]  # (1, N, 2)
        if means2d.requires_grad:
            means2d.retain_grad()
        info.update(means2d=means2d, radii=meta["radii"].reshape(-1, 2), depths=meta["depths"].reshape(-1).detach())
    return render[0].to(dtype), alphas[0, ..., 0].to(dtype)


# ---- brute-force reference -------------------------------------------------------------------------
def rasterize_reference(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmat: Tensor,
    K: Tensor,
    width: int,
    height: int,
    background: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Same signature and maths as ``rasterize``, written as gsplat's per-pixel loop: every pixel against every
    Gaussian in front of the near plane, one Gaussian at a time in depth order (no tiles, no bounding boxes).
    For tiny scenes and tests only: O(N H W) with a Python loop over N."""
    _check_inputs(means, quats, scales, opacities, colors, viewmat, K, width, height, background)
    means, quats, scales, opacities, colors, viewmat, K, background = _prepare(
        means, quats, scales, opacities, colors, viewmat, K, background
    )
    proj = project_gaussians(means, quats, scales, viewmat, K, width, height)
    dt, dev = means.dtype, means.device
    py, px = torch.meshgrid(
        torch.arange(height, dtype=dt, device=dev) + 0.5, torch.arange(width, dtype=dt, device=dev) + 0.5,
        indexing="ij",
    )
    T = torch.ones(height, width, dtype=dt, device=dev)
    rgb = torch.zeros(height, width, 3, dtype=dt, device=dev)
    done = torch.zeros(height, width, dtype=torch.bool, device=dev)
    det = proj.cov2d[:, 0, 0] * proj.cov2d[:, 1, 1] - proj.cov2d[:, 0, 1] * proj.cov2d[:, 1, 0]
    keep = (proj.depths >= NEAR_PLANE) & (det > 0)
    for g in torch.argsort(proj.depths.detach(), stable=True).tolist():
        if not bool(keep[g]):
            continue
        a, b, c = proj.conics[g]
        dx, dy = proj.means2d[g, 0] - px, proj.means2d[g, 1] - py
        sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
        alpha = torch.clamp_max(opacities[g] * torch.exp(-sigma), ALPHA_MAX)
        use = (sigma >= 0) & (alpha >= ALPHA_MIN) & ~done
        next_T = T * (1 - alpha)
        stop = use & (next_T <= T_MIN)
        done = done | stop
        use = use & ~stop
        rgb = rgb + torch.where(use, alpha * T, torch.zeros_like(T))[..., None] * colors[g]
        T = torch.where(use, next_T, T)
    if background is not None:
        rgb = rgb + T[..., None] * background
    return rgb, 1 - T
