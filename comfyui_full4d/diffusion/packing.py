"""Scene packing for multi-view sampling (SPEC 1, 5); pure torch, no host.

A pass samples the source view (view 0) together with a group of target views. Per view the
model sees ``[target half | condition half]`` on the frame axis; here the two halves are kept as
two tensors (the host concatenates them: ``time_dim_concat``):

- latent (P, C, T, h, w): row 0 the clean source latent, rows 1.. zeros (noise is added by the
  sampler);
- cond (P, C, T, h, w): row 0 the source latent, row ``k`` the projection latent of its view;
- mask (P, 1, T, h, w): the host's denoise mask, 0 for the source row (kept clean, timestep 0,
  re-imposed after every step) and 1 for target rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ScenePass", "view_groups", "pack_pass", "check_latents", "activation_bytes"]


@dataclass(frozen=True)
class ScenePass:
    """One sampling pass: ``views`` (rig indices, views[0] == 0) and its packed tensors."""

    views: tuple[int, ...]
    latent: Tensor
    cond: Tensor
    mask: Tensor


def view_groups(num_views: int, views_per_pass: int) -> list[tuple[int, ...]]:
    """Split target views 1..V-1 into passes of at most ``views_per_pass`` targets (0 = all in one).

    Each pass is sampled as its own scene with the source view prepended: fewer views per pass need
    less memory, but views in different passes do not attend to each other (less consistency).
    """
    if int(views_per_pass) != views_per_pass or views_per_pass < 0:
        raise ValueError(f"views_per_pass must be an integer >= 0 (0 = all target views at once), got {views_per_pass}")
    if num_views < 2:
        raise ValueError(f"the rig needs at least 2 views (source + 1 target), got {num_views}")
    targets = list(range(1, num_views))
    k = len(targets) if views_per_pass == 0 else int(views_per_pass)
    return [(0, *targets[i:i + k]) for i in range(0, len(targets), k)]


def check_latents(source: Tensor, projections: Tensor, num_views: int) -> None:
    """source (1, C, T, h, w); projections (V-1, C, T, h, w) matching the rig's V views."""
    if source.dim() != 5 or source.shape[0] != 1:
        raise ValueError(f"source: latent must be one video latent (1, C, T, h, w), got {tuple(source.shape)}; "
                         f"VAE-encode the source video as one batch")
    if projections.dim() != 5:
        raise ValueError(f"projections: latent must be (V-1, C, T, h, w), got {tuple(projections.shape)}")
    if projections.shape[0] != num_views - 1:
        raise ValueError(f"projections: latent has {projections.shape[0]} target view(s) but the rig has "
                         f"{num_views - 1} ({num_views} views including the source); project into the same rig "
                         "you sample with, and encode the projections with skip_source on")
    if projections.shape[1:] != source.shape[1:]:
        raise ValueError(f"projections: latent (C, T, h, w) = {tuple(projections.shape[1:])} differs from the source "
                         f"latent's {tuple(source.shape[1:])}; encode both at the same frames and resolution")


def pack_pass(source: Tensor, projections: Tensor, views: tuple[int, ...]) -> ScenePass:
    """Tensors of one pass (module docstring). views: rig indices with views[0] == 0."""
    if views[0] != 0 or 0 in views[1:]:
        raise ValueError(f"a pass must start with the source view 0 and hold it once, got {views}")
    tgt = torch.as_tensor([v - 1 for v in views[1:]], dtype=torch.long)
    proj = projections.index_select(0, tgt.to(projections.device))
    P = len(views)
    latent = torch.cat([source, torch.zeros_like(proj)], dim=0)
    cond = torch.cat([source, proj], dim=0)
    mask = torch.ones(P, 1, *source.shape[2:], dtype=torch.float32, device=source.device)
    mask[0] = 0
    return ScenePass(views=tuple(views), latent=latent, cond=cond, mask=mask)


def activation_bytes(num_views: int, frames: int, h: int, w: int, dim: int, ffn_dim: int, element_size: int,
                     scenes: int = 2, patch: tuple[int, int] = (2, 2)) -> int:
    """Rough peak activation memory of one model call on ``scenes`` scenes (cond + uncond).

    Tokens ``N = V * 2T * S`` per scene; a block holds the residual, its modulated copy, q/k/v/o of
    both attentions and the FFN hidden layer: about ``N * (10 C + F_ffn)`` elements per scene.
    """
    S = -(-h // patch[0]) * -(-w // patch[1])
    N = num_views * 2 * frames * S
    return int(scenes * N * (10 * dim + ffn_dim) * element_size)
