"""Multi-view frame layouts: the view-major IMAGE batch used between nodes, and tiled grids."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["split_views", "merge_views", "view_grid"]


def split_views(images: Tensor, num_views: int) -> Tensor:
    """View-major batch (V*T, H, W, C) -> (V, T, H, W, C)."""
    if images.dim() != 4:
        raise ValueError(f"images must be (V*T, H, W, C), got {tuple(images.shape)}")
    if num_views < 1 or images.shape[0] % num_views:
        raise ValueError(f"images: batch of {images.shape[0]} frames is not a multiple of num_views={num_views} "
                         "(view-major layout: all frames of view 0, then view 1, ...)")
    return images.reshape(num_views, images.shape[0] // num_views, *images.shape[1:])


def merge_views(views: Tensor) -> Tensor:
    """(V, T, H, W, C) -> view-major batch (V*T, H, W, C)."""
    if views.dim() != 5:
        raise ValueError(f"views must be (V, T, H, W, C), got {tuple(views.shape)}")
    return views.reshape(-1, *views.shape[2:])


def view_grid(views: Tensor, columns: int = 0, gap: int = 0) -> Tensor:
    """Tile views side by side per frame: (V, T, H, W, C) -> (T, rows*H + gaps, cols*W + gaps, C).

    ``columns`` 0 picks ``ceil(sqrt(V))``; empty cells and gaps are black.
    """
    V, T, H, W, C = views.shape
    cols = columns if columns > 0 else math.ceil(math.sqrt(V))
    cols = min(cols, V)
    rows = math.ceil(V / cols)
    out = views.new_zeros(T, rows * H + (rows - 1) * gap, cols * W + (cols - 1) * gap, C)
    for v in range(V):
        r, c = divmod(v, cols)
        out[:, r * (H + gap):r * (H + gap) + H, c * (W + gap):c * (W + gap) + W] = views[v]
    return out
