"""Multi-view frame layouts: the view-major IMAGE batch used between nodes, and tiled grids."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["split_views", "merge_views", "view_grid", "label_strip", "stack_videos"]


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


def label_strip(text: str, width: int, height: int = 14) -> Tensor:
    """(height, width, 3) black strip with ``text`` in white (Pillow's built-in bitmap font), left-aligned."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (max(1, int(width)), int(height)))
    ImageDraw.Draw(img).text((3, max(0, (height - 11) // 2)), text, fill=(255, 255, 255))
    return torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).reshape(height, width, 3).float() / 255


def stack_videos(videos: list[Tensor], labels: list[str] | None = None, vertical: bool = True,
                 gap: int = 4) -> Tensor:
    """Panels side by side in one video: each panel (T_i, H_i, W_i, 3), with its label above it when given.

    Output length ``max T_i``; a shorter panel loops (frame ``t mod T_i``). Panels stacked top to bottom
    (``vertical``) are centred in the widest one's width, left to right in the tallest's height; the rest is
    black. Returns (T, H, W, 3)."""
    if not videos:
        raise ValueError("stack_videos: no panels given")
    for i, v in enumerate(videos):
        if v.dim() != 4 or v.shape[-1] != 3 or v.shape[0] < 1:
            raise ValueError(f"panel {i + 1}: expected a video (T, H, W, 3), got {tuple(v.shape)}")
    labels = list(labels or [])
    T = max(v.shape[0] for v in videos)
    panels = []
    for i, v in enumerate(videos):
        v = v.float().cpu()[torch.arange(T) % v.shape[0]]
        if i < len(labels) and labels[i]:
            strip = label_strip(labels[i], v.shape[2])
            v = torch.cat([strip.expand(T, *strip.shape), v], dim=1)
        panels.append(v)
    if vertical:
        W = max(p.shape[2] for p in panels)
        H = sum(p.shape[1] for p in panels) + gap * (len(panels) - 1)
    else:
        H = max(p.shape[1] for p in panels)
        W = sum(p.shape[2] for p in panels) + gap * (len(panels) - 1)
    out = torch.zeros(T, H, W, 3)
    at = 0
    for p in panels:
        if vertical:
            x = (W - p.shape[2]) // 2
            out[:, at:at + p.shape[1], x:x + p.shape[2]] = p
            at += p.shape[1] + gap
        else:
            y = (H - p.shape[1]) // 2
            out[:, y:y + p.shape[1], at:at + p.shape[2]] = p
            at += p.shape[2] + gap
    return out
