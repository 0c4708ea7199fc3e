"""View-dependent colour from real spherical harmonics up to degree 3 (SPEC 6; 3DGS / gsplat convention).

``colour = max(0, sum_k Y_k(d) c_k + 0.5)`` with ``d`` the unit viewing direction (Gaussian mean minus camera
centre) and ``Y_k`` the real SH basis with 3DGS's constants and signs (``Y_1 = -C1 y, C1 z, -C1 x``, ...,
i.e. ``(-1)^m`` times the real SH without the Condon-Shortley phase), in order ``k = l^2 + l + m``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["SH_C0", "eval_sh", "rgb_to_sh0", "sh_basis", "sh_to_rgb0"]

SH_C0 = 0.28209479177387814
_C1 = 0.4886025119029199
_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
_C3 = (
    -0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
    -0.4570457994644658, 1.445305721320277, -0.5900435899266435,
)


def sh_basis(degree: int, dirs: Tensor) -> Tensor:
    """Real SH basis. dirs (..., 3) (normalised here) -> (..., (degree+1)^2)."""
    if degree not in (0, 1, 2, 3):
        raise ValueError(f"degree must be 0, 1, 2 or 3, got {degree!r}")
    d = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    x, y, z = d.unbind(-1)
    out = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        out += [-_C1 * y, _C1 * z, -_C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [
            _C2[0] * xy, _C2[1] * yz, _C2[2] * (2 * zz - xx - yy), _C2[3] * xz, _C2[4] * (xx - yy),
        ]
    if degree >= 3:
        out += [
            _C3[0] * y * (3 * xx - yy),
            _C3[1] * xy * z,
            _C3[2] * y * (4 * zz - xx - yy),
            _C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
            _C3[4] * x * (4 * zz - xx - yy),
            _C3[5] * z * (xx - yy),
            _C3[6] * x * (xx - 3 * yy),
        ]
    return torch.stack(out, -1)


def eval_sh(degree: int, coeffs: Tensor, dirs: Tensor) -> Tensor:
    """``max(0, sum_k Y_k(dirs) coeffs_k + 0.5)``.

    coeffs (N, K, 3) with ``K >= (degree+1)^2`` (extra bands ignored, as gsplat's ``sh_degree``); dirs (N, 3),
    need not be unit. Returns colours (N, 3).
    """
    if not isinstance(coeffs, Tensor) or coeffs.dim() != 3 or coeffs.shape[-1] != 3:
        got = tuple(coeffs.shape) if isinstance(coeffs, Tensor) else type(coeffs).__name__
        raise ValueError(f"coeffs must have shape (N, K, 3), got {got}")
    n_bases = (degree + 1) ** 2 if isinstance(degree, int) else -1
    if degree not in (0, 1, 2, 3) or coeffs.shape[1] < n_bases:
        raise ValueError(
            f"degree must be 0..3 with coeffs.shape[1] >= (degree+1)^2; got degree={degree!r}, "
            f"coeffs shape {tuple(coeffs.shape)}"
        )
    if not isinstance(dirs, Tensor) or tuple(dirs.shape) != (coeffs.shape[0], 3):
        got = tuple(dirs.shape) if isinstance(dirs, Tensor) else type(dirs).__name__
        raise ValueError(f"dirs must have shape (N, 3) = ({coeffs.shape[0]}, 3), got {got}")
    basis = sh_basis(degree, dirs.to(coeffs.dtype))  # (N, n_bases)
    return torch.clamp_min((basis[..., None] * coeffs[:, :n_bases]).sum(1) + 0.5, 0.0)


def rgb_to_sh0(rgb: Tensor) -> Tensor:
    """DC coefficient giving colour ``rgb`` (any shape, last dim 3): ``(rgb - 0.5) / C0``."""
    return (rgb - 0.5) / SH_C0


def sh_to_rgb0(sh0: Tensor) -> Tensor:
    """Inverse of ``rgb_to_sh0`` (before the clamp): ``sh0 * C0 + 0.5``."""
    return sh0 * SH_C0 + 0.5

