"""Training-free multi-view sampling: RePaint / InverseCrafter-style latent inpainting of each target
view from its point-cloud projection (docs/training-free.md); pure torch, no host.

Each target view ``v`` is sampled by the base model (Wan2.2-TI2V-5B or a Wan2.1-class model) as an
ordinary video. Its known region comes from the projection render: ``m_v`` (1, T, h, w) is the soft latent
mask (``soft_latent_mask``: the fraction of valid projection pixels in each latent cell's VAE footprint,
16 x 16 pixels under the Wan2.2 VAE, 8 x 8 under the Wan2.1 VAE) and ``L_v`` the VAE latent of the render.
For rectified flow (``z_sigma = (1 - sigma) z0 + sigma eps``, SPEC 5), at every model evaluation with
``sigma > sigma_stop`` (``stop_sigma``):

1. model input  ``x_in = (1 - m) x + m ((1 - sigma) L + sigma eps)``  (known region re-noised to sigma)
2. prediction   ``x0 = (1 - m) D(x_in, sigma) + m L``                  (known region pinned to L)

and the sampler steps from ``x0`` as usual; afterwards (``sigma <= sigma_stop``) the model runs freely
so the seams heal. ``eps`` is the pass's initial noise. With ``start_sigma < 1`` the sampler starts
from ``(1 - s0) L + s0 eps`` (SDEdit) and runs the schedule below ``s0``. The host executes this
(``comfyui_full4d.host.training_free``); this module holds the layout, the masks and the schedule.

Optional, experimental (``cross_view``): every pass also holds the source view (fully known, never
released), and each base self-attention runs over the pass's views as one scene under the SPEC 2
rule without the condition half: a token sees its own view (all frames) and the other views' tokens at
the same latent frame (``cross_view_attention``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F_nn
from torch import Tensor

from .attention import fused_tv_attention
from .packing import view_groups

__all__ = ["TrainingFreeConfig", "VAE_TIME", "VAE_SPACE", "vae_space", "latent_frames", "soft_latent_mask",
           "schedule_from", "stop_sigma", "pass_groups", "replacement_masks", "cross_view_attention"]

VAE_TIME = 4  # Wan2.2 and Wan2.1 VAEs: latent frame 0 <- frame 0; latent frame j >= 1 <- frames 4j-3 .. 4j (causal)
VAE_SPACE = 16  # Wan2.2 VAE: one latent cell <- a 16 x 16 pixel block (2x2 patchify, then 3 stride-2 stages)
_SPACE_BY_CHANNELS = {48: VAE_SPACE, 16: 8}  # Wan2.2 VAE (48 channels); Wan2.1 VAE (16 channels, 3 stride-2 stages)


def vae_space(channels: int) -> int:
    """Pixels per latent cell side of the Wan VAE whose latents have ``channels`` channels: 16 for the Wan2.2 VAE
    (48 channels, Wan2.2-TI2V-5B), 8 for the Wan2.1 VAE (16 channels, Wan2.1-class models)."""
    if int(channels) not in _SPACE_BY_CHANNELS:
        raise ValueError(f"latents have {channels} channels; the training-free sampler knows the Wan2.2 VAE (48) and "
                         f"the Wan2.1 VAE (16): encode the source and projections with the VAE of the model")
    return _SPACE_BY_CHANNELS[int(channels)]


@dataclass(frozen=True)
class TrainingFreeConfig:
    """Guidance of ``Full4DTrainingFreeSampler``.

    stop: fraction of the sampling steps (of those actually run) with the known region replaced; the
    first ``round(stop * steps)`` steps are guided, the rest free. 1.0 = guided to the end (the known
    region equals the projection latent exactly), 0.0 = plain base sampling.
    start_sigma: 1.0 starts from pure noise; below 1 starts from the projection latent noised to this
    sigma (SDEdit) and runs only the schedule's steps below it.
    cross_view: experimental cross-view attention sharing (module docstring).
    """

    stop: float = 0.8
    start_sigma: float = 1.0
    cross_view: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.stop) <= 1.0:
            raise ValueError(f"stop must be in [0, 1] (fraction of the steps with the known region replaced), "
                             f"got {self.stop}")
        if not 0.0 < float(self.start_sigma) <= 1.0:
            raise ValueError(f"start_sigma must be in (0, 1] (1 = start from pure noise), got {self.start_sigma}")


def latent_frames(frames: int) -> int:
    """Latent frames of a ``frames``-frame video under a Wan VAE (2.2 or 2.1): ``1 + (frames - 1) // 4``."""
    return 1 + (int(frames) - 1) // VAE_TIME


def _crop(size: int, space: int) -> tuple[int, int]:
    """Offset and length of the host VAE's centre crop to a multiple of ``space`` (``vae_encode_crop_pixels``)."""
    keep = (size // space) * space
    return (size % space) // 2, keep


def soft_latent_mask(masks: Tensor, latent_shape: tuple[int, int, int] | None = None,
                     space: int = VAE_SPACE) -> Tensor:
    """Fraction of valid pixels in each latent cell's VAE footprint.

    masks: (V, T, H, W) in [0, 1] (the projection's validity, 1 = a point landed), T video frames.
    space: pixels per latent cell side (``vae_space``: 16 for the Wan2.2 VAE, 8 for the Wan2.1 VAE).
    The footprint of latent cell ``(j, y, x)`` is video frames ``{0}`` for ``j = 0`` and
    ``4j-3 .. 4j`` for ``j >= 1`` (the causal chunks the host's ``WanVAE.encode`` runs, both VAEs; frames
    after the last whole chunk are dropped as the encoder drops them) times pixels ``s*y .. s*y+s-1`` x
    ``s*x .. s*x+s-1`` (s = ``space``) of the frame centre-cropped to a multiple of s (as the host crops
    before encoding). latent_shape: the (T_lat, h, w) of the latents the mask goes with; a mismatch is an
    error naming both. Returns (V, 1, T_lat, h, w) float32 in [0, 1].
    """
    if not isinstance(masks, Tensor) or masks.dim() != 4:
        shape = tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__
        raise ValueError(f"masks must be (V, T, H, W), got {shape}")
    V, T, H, W = masks.shape
    s = int(space)
    if T < 1 or H < s or W < s:
        raise ValueError(f"masks: need at least 1 frame of at least {s}x{s} pixels, got {tuple(masks.shape)}")
    Tl = latent_frames(T)
    (oy, Hc), (ox, Wc) = _crop(H, s), _crop(W, s)
    h, w = Hc // s, Wc // s
    if latent_shape is not None and tuple(int(n) for n in latent_shape) != (Tl, h, w):
        raise ValueError(f"masks: {T} frames of {H}x{W} pixels give latent (T, h, w) = {(Tl, h, w)} under the "
                         f"VAE's 4 x {s} x {s}, but the latents are {tuple(latent_shape)}; connect the masks "
                         f"of the same projection renders that were VAE-encoded")
    m = masks[:, :, oy:oy + Hc, ox:ox + Wc].float().clamp(0, 1)
    first = m[:, :1]
    rest = m[:, 1:1 + VAE_TIME * (Tl - 1)].reshape(V, Tl - 1, VAE_TIME, Hc, Wc).mean(2)
    per_frame = torch.cat([first, rest], 1).reshape(V * Tl, 1, Hc, Wc)
    return F_nn.avg_pool2d(per_frame, s).reshape(V, 1, Tl, h, w)


def schedule_from(sigmas: Tensor, start_sigma: float) -> Tensor:
    """The host schedule ``sigmas`` (n+1,) descending to 0, started at ``start_sigma``:
    ``[start_sigma, then every sigma < start_sigma]``. start_sigma >= sigmas[0] returns ``sigmas``."""
    s0 = float(start_sigma)
    if not 0.0 < s0 <= 1.0:
        raise ValueError(f"start_sigma must be in (0, 1], got {start_sigma}")
    if s0 >= float(sigmas[0]):
        return sigmas
    tail = sigmas[sigmas < s0]
    return torch.cat([sigmas.new_tensor([s0]), tail])


def stop_sigma(sigmas: Tensor, stop: float) -> float:
    """Replacement is active at a model evaluation with ``sigma > stop_sigma``: the first
    ``k = round(stop * n)`` of the ``n = len(sigmas) - 1`` steps (also for samplers that evaluate
    between two schedule sigmas). Returns ``sigmas[k]`` (``sigmas[n] = 0``: stop 1.0 guides every step;
    ``sigmas[0]``: stop 0.0 guides none)."""
    n = len(sigmas) - 1
    k = min(n, max(0, int(math.floor(float(stop) * n + 0.5))))
    return float(sigmas[k])


def pass_groups(num_views: int, views_per_pass: int, cross_view: bool) -> list[tuple[int, ...]]:
    """Rig views sampled together. Without cross-view sharing the targets are independent and the
    source is not sampled (groups of up to ``views_per_pass`` targets, 0 = all); with it every pass
    holds the source view 0 first (``sampling.view_groups``)."""
    groups = view_groups(num_views, views_per_pass)
    return groups if cross_view else [g[1:] for g in groups]


def replacement_masks(known: Tensor, views: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Host denoise masks of one pass (1 = the model's prediction, 0 = the known latent).

    known: (V-1, 1, T, h, w) soft masks of the target views 1..V-1; views: the pass's rig indices.
    Returns ``guided`` (P, 1, T, h, w) = 1 - known per target row and 0 for the source row, and
    ``free`` (P, 1, T, h, w): 1 for target rows, 0 for the source row (kept as given throughout).
    """
    rows = [torch.ones_like(known[0]) if v == 0 else known[v - 1] for v in views]
    guided = 1.0 - torch.stack(rows)
    free = torch.ones_like(guided)
    for i, v in enumerate(views):
        if v == 0:
            free[i] = 0.0
    return guided, free


def cross_view_attention(q: Tensor, k: Tensor, v: Tensor, num_views: int, frames: int) -> Tensor:
    """Base self-attention extended over the other views at the same latent frame (SPEC 2 rules 1 and 2
    on a scene without a condition half). q, k: (B, heads, V*T*S, D), v: (B, heads, V*T*S, Dv) ordered
    view, frame, spatial; T = ``frames``. Returns (B, heads, V*T*S, Dv) (``attention.fused_tv_attention``)."""
    return fused_tv_attention(q, k, v, num_views, frames, intra_time=True, cross_half=False)
