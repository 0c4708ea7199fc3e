"""Similarity alignment of point sets (Umeyama 1991): DA3's camera centres onto the rig's
(``view_depth``) and any other "same points, other frame and scale" fit."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["umeyama"]


def umeyama(src: Tensor, dst: Tensor, with_scale: bool = True) -> tuple[float, Tensor, Tensor]:
    """Least-squares similarity ``dst ~ s R src + t`` (Umeyama 1991). src, dst (N, 3), N >= 3.

    Returns s (float), R (3, 3) proper rotation, t (3,), float64 on CPU.
    """
    if src.shape != dst.shape or src.dim() != 2 or src.shape[-1] != 3 or len(src) < 3:
        raise ValueError(f"umeyama: src and dst must be matching (N >= 3, 3) tensors, got {tuple(src.shape)}, "
                         f"{tuple(dst.shape)}")
    x, y = src.detach().cpu().double().numpy(), dst.detach().cpu().double().numpy()
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    cov = yc.T @ xc / len(x)
    U, D, Vt = np.linalg.svd(cov)
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1
    R = U @ S @ Vt
    var = (xc**2).sum() / len(x)
    s = float(np.trace(np.diag(D) @ S) / var) if with_scale else 1.0
    if not math.isfinite(s) or s <= 0:
        raise ValueError("umeyama: degenerate source points (all coincident?)")
    t = my - s * R @ mx
    return s, torch.from_numpy(R), torch.from_numpy(t)
