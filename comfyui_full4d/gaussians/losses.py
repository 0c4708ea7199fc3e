"""Photometric losses of the 4DGS fit (SPEC 6): ``L = L1 + lambda (1 - SSIM)``, lambda = 0.2.

SPEC 6 writes ``L1 + 0.2 * D-SSIM``, as 4D-GS's training code does (``loss = Ll1 + lambda_dssim *
(1 - ssim)``; 3DGS instead weights L1 by ``1 - lambda``). D-SSIM is ``1 - SSIM`` (no 1/2). SSIM uses an
11x11 Gaussian window with sigma 1.5, constants ``C1 = 0.01^2, C2 = 0.03^2`` and zero padding of
the windowed sums (3DGS's ``ssim``: ``F.conv2d`` with padding 5), averaged over pixels and channels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["l1_loss", "ssim", "ssim_map", "photometric_loss", "psnr"]


def _window(size: int, sigma: float, dtype, device) -> Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def l1_loss(a: Tensor, b: Tensor) -> Tensor:
    return (a - b).abs().mean()


def ssim(a: Tensor, b: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Mean SSIM of images a, b (H, W, 3) or (B, H, W, 3) in [0, 1] (3DGS's formula, zero padding)."""
    return ssim_map(a, b, window, sigma).mean()


def ssim_map(a: Tensor, b: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Per-pixel SSIM (B, 3, H, W) of images a, b (H, W, 3) or (B, H, W, 3)."""
    if a.shape != b.shape:
        raise ValueError(f"ssim: images differ in shape {tuple(a.shape)} vs {tuple(b.shape)}")
    x = a.reshape(-1, *a.shape[-3:]).permute(0, 3, 1, 2)
    y = b.reshape(-1, *b.shape[-3:]).permute(0, 3, 1, 2)
    C = x.shape[1]
    w = _window(window, sigma, x.dtype, x.device).expand(C, 1, window, window)
    pad = window // 2

    def f(z: Tensor) -> Tensor:
        return F.conv2d(z, w, padding=pad, groups=C)

    mx, my = f(x), f(y)
    sxx, syy, sxy = f(x * x) - mx * mx, f(y * y) - my * my, f(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return m


def photometric_loss(pred: Tensor, target: Tensor, lambda_dssim: float = 0.2) -> Tensor:
    """``L1 + lambda * (1 - SSIM)`` (SPEC 6, 4D-GS). pred, target (H, W, 3)."""
    return l1_loss(pred, target) + lambda_dssim * (1 - ssim(pred, target))


def psnr(pred: Tensor, target: Tensor) -> float:
    """``10 log10(1 / MSE)`` for images in [0, 1]."""
    mse = float((pred.detach().float().clamp(0, 1) - target.float()).pow(2).mean())
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)
