"""Training-free multi-view sampling on the host's own sampler (``comfyui_full4d.diffusion.training_free``,
docs/training-free.md).

Everything goes through ``comfy.sample.sample`` (KSampler: the chosen sampler and scheduler, CFG,
the memory manager, progress via its callback, the interrupt flag) on clones of the base model:

- the host's inpainting (``KSamplerX0Inpaint``) does the replacement: the pass's latent is the
  projection latents (``latent_image``), the host denoise mask is all ones (so ``WAN22.process_timestep``
  gives every frame the full timestep; ``WAN21`` has no per-frame timesteps and gives every row the full
  timestep anyway), and ``set_model_denoise_mask_function`` swaps in the soft
  replacement mask ``1 - m`` while ``sigma > sigma_stop`` and all ones after (the source row of a
  cross-view pass stays 0: always replaced);
- ``add_object_patch("scale_latent_inpaint", BaseModel.scale_latent_inpaint)``: WAN22 feeds the
  known region to the model *clean* (its TI2V first-frame rule); the host's default for other models
  (``WAN21`` among them, where the patch changes nothing) re-noises it to the current sigma,
  ``sigma eps + (1 - sigma) L`` (RePaint), which is what this mode wants since every token runs at the
  full timestep;
- the soft mask's footprint is the VAE's: 16 x 16 pixels per latent cell for the Wan2.2 VAE (48 channels),
  8 x 8 for the Wan2.1 VAE (16 channels) (``training_free.vae_space`` of the latents' channels);
- start sigma: the host schedule for ``steps`` cut below ``start_sigma`` (``sigmas=`` of
  ``comfy.sample.sample``); the host's noise scaling then starts from ``s0 eps + (1 - s0) L`` (SDEdit);
- cross-view sharing (experimental): a ``DIFFUSION_MODEL`` wrapper records the scene layout and
  ``set_model_patch_replace(..., "dit", "double_block", i)`` runs each block with the host's own
  submodules and ``cross_view_attention`` in place of the per-view self-attention (RoPE per view:
  every view keeps positions ``0..T-1``, so a key of another view at the same frame sits at time
  distance 0).
"""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass
from typing import Any, Callable

import comfy.model_base
import comfy.model_management
import comfy.patcher_extension
import comfy.sample
import comfy.samplers
import torch
from torch import Tensor

from ..common.progress import StepFn, report
from ..diffusion.packing import check_latents
from ..diffusion.training_free import (TrainingFreeConfig, cross_view_attention, pass_groups, replacement_masks,
                             schedule_from, soft_latent_mask, stop_sigma, vae_space)
from .parallel import MESH_KEY, modulation, self_attention_qkv, sharded_block, split_call
from .patch import MODELS, _wan, get_adapter
from .sampling import check_sampler_args, with_shift

KEY = "full4d_training_free"
LAYOUT_KEY = "full4d_cross_view"

__all__ = ["sample_training_free", "sample_rig_training_free", "with_noised_inpaint", "with_replacement",
           "with_cross_view", "training_free_sigmas"]


def with_noised_inpaint(model):
    """Clone whose inpainting feeds the known region re-noised to the current sigma (module docstring)."""
    m = model.clone()
    m.add_object_patch("scale_latent_inpaint",
                       types.MethodType(comfy.model_base.BaseModel.scale_latent_inpaint, model.model))
    return m


def with_replacement(model, guided: Tensor, free: Tensor, sigma_stop: float):
    """Clone with the host's denoise-mask function: ``guided`` while ``sigma > sigma_stop``, else ``free``.

    guided, free: (P, 1, T, h, w) host denoise masks (1 = the model's prediction, 0 = the latent)."""
    cache: dict[tuple, tuple[Tensor, Tensor]] = {}

    def full4d_replacement(sigma: Tensor, denoise_mask: Tensor, extra_options: dict) -> Tensor:
        key = (denoise_mask.device, denoise_mask.dtype)
        if key not in cache:
            cache[key] = tuple(x.to(device=denoise_mask.device, dtype=denoise_mask.dtype) for x in (guided, free))
        g, f = cache[key]
        if g.shape[0] != denoise_mask.shape[0]:
            raise ValueError(f"Full4D training-free: the host sampled {denoise_mask.shape[0]} latents, the masks "
                             f"are for {g.shape[0]}")
        return g if float(sigma.max()) > sigma_stop else f

    m = model.clone()
    m.set_model_denoise_mask_function(full4d_replacement)
    return m


@dataclass(frozen=True)
class _CrossViewRun:
    """Per-call layout: ``views`` rows per scene, ``frames`` latent frames each, the model's blocks; on a
    Ulysses rank (``host.parallel``) the rows hold views ``here = (a, b)`` of each scene and ``attend`` is the
    all-to-all attention; in the token layout the rows hold every view, ``shard`` (``parallel.TokenShard``) says
    which tokens of each view this rank holds and ``attend`` is ``shard.attend``."""

    views: int
    frames: int
    blocks: Any
    here: tuple[int, int] | None = None
    attend: Any = None
    shard: Any = None


def with_cross_view(model, num_views: int):
    """Clone whose base self-attention runs over scenes of ``num_views`` consecutive batch rows
    (``cross_view_attention``). The host stacks cond and uncond as separate scenes."""
    dm = _wan(model)
    m = model.clone()
    m.model_options["transformer_options"][LAYOUT_KEY] = int(num_views)
    m.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, KEY)
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, KEY, _cross_view_wrapper)
    for i in range(len(dm.blocks)):
        m.set_model_patch_replace(_make_block(i), "dit", "double_block", i)
    return m


def _cross_view_wrapper(executor, x, timestep, context, clip_fea=None, time_dim_concat=None,
                        transformer_options={}, **kwargs):
    V = transformer_options.get(LAYOUT_KEY)
    if V is None:
        return executor(x, timestep, context, clip_fea, time_dim_concat, transformer_options, **kwargs)
    B, _, T = x.shape[:3]
    if B % V:
        raise ValueError(f"Full4D cross-view: the host batch of {B} latents is not whole scenes of {V} views")
    if time_dim_concat is not None or clip_fea is not None:
        raise ValueError("Full4D cross-view sharing runs the plain text-to-video model (no concatenated frames, "
                         "no clip vision)")
    opts = dict(transformer_options)
    run = _CrossViewRun(views=int(V), frames=int(T), blocks=executor.class_obj.blocks)
    opts[KEY] = run
    if MESH_KEY in transformer_options:  # sharded over a torch.distributed mesh (host/parallel.py)
        p = executor.class_obj.patch_size
        S = -(-x.shape[3] // p[1]) * -(-x.shape[4] // p[2])
        return split_call(executor, transformer_options[MESH_KEY], run.views, run.frames * S,
                          lambda here, attend, shard: {KEY: dataclasses.replace(run, here=here, attend=attend,
                                                                                shard=shard)},
                          x, timestep, context, None, opts, **kwargs)
    return executor(x, timestep, context, clip_fea, time_dim_concat, opts, **kwargs)


def _make_block(index: int) -> Callable:
    def full4d_cross_view_block(args: dict, extra: dict) -> dict:
        run: _CrossViewRun | None = args["transformer_options"].get(KEY)
        if run is None:
            return extra["original_block"](args)
        def forward(x: Tensor, freqs: Tensor) -> Tensor:
            return _block_forward(run.blocks[index], run, x, args["vec"], freqs, args["txt"], args["transformer_options"])

        return {"img": sharded_block(run.shard, index, len(run.blocks), args["img"], args["pe"], forward)}

    return full4d_cross_view_block


def _block_forward(block, run: _CrossViewRun, x: Tensor, e: Tensor, freqs: Tensor, context: Tensor,
                   to: dict) -> Tensor:
    """``WanAttentionBlock.forward`` with the self-attention shared across views; x (B, T*S, C)."""
    mod = comfy.model_management.cast_to(block.modulation, dtype=x.dtype, device=x.device)
    e = (mod.unsqueeze(0) + e).unbind(2) if e.ndim == 4 else (mod + e).chunk(6, dim=1)
    x = x.contiguous()
    rep = modulation(run.shard, x)  # wan.repeat_e, or its rows of this rank's tokens (token layout)
    u = torch.addcmul(rep(e[0]), block.norm1(x), 1 + rep(e[1]))
    x = torch.addcmul(x, _shared_self_attention(block.self_attn, u, freqs, run), rep(e[2]))
    x = x + block.cross_attn(block.norm3(x), context, context_img_len=None, transformer_options=to)
    y = block.ffn(torch.addcmul(rep(e[3]), block.norm2(x), 1 + rep(e[4])))
    return torch.addcmul(x, y, rep(e[5]))


def _shared_self_attention(sa, u: Tensor, freqs: Tensor, run: _CrossViewRun) -> Tensor:
    """``WanSelfAttention.forward`` (its own q/k/v/o, norms and RoPE) with attention over the scene; u (B, L, C)
    with L the view's tokens, or this rank's of them in the token layout (the scene is then view-major chunks)."""
    B, L, C = u.shape
    n, d = sa.num_heads, sa.head_dim
    V = run.views if run.here is None else run.here[1] - run.here[0]  # views in these rows
    q, k, v = self_attention_qkv(sa, u, freqs)

    def scene(t: Tensor) -> Tensor:  # rows j*V..j*V+V-1 -> one scene, tokens view-major: (B/V, n, V*L, d)
        return t.reshape(B // V, V * L, n, d).transpose(1, 2)

    if run.attend is None:
        out = cross_view_attention(scene(q), scene(k), scene(v), V, run.frames)
    else:
        out = run.attend(scene(q), scene(k), scene(v), run.views, run.frames, attention=cross_view_attention)
    return sa.o(out.transpose(1, 2).reshape(B, L, C))


def training_free_sigmas(model, steps: int, sampler_name: str, scheduler: str, start_sigma: float) -> Tensor:
    """The host's schedule for ``steps`` (KSampler, incl. its per-sampler adjustments), started at
    ``start_sigma`` (``training_free.schedule_from``). (n+1,) on the CPU."""
    ks = comfy.samplers.KSampler(model, steps=int(steps), device="cpu", sampler=sampler_name, scheduler=scheduler,
                                 denoise=1.0, model_options=model.model_options)
    return schedule_from(ks.sigmas.float().cpu(), start_sigma)


def _check_model(model) -> None:
    _wan(model)
    if get_adapter(model) is not None:
        raise ValueError(f"model: this MODEL carries a Full-4D adapter; the training-free sampler runs the base model "
                         f"({MODELS}): connect the diffusion model loader's output directly (or use Full4DSampler)")


def sample_training_free(model, positive: list, negative: list, source: Tensor, projections: Tensor, known: Tensor,
                         *, seed: int, steps: int, cfg: float, shift: float, sampler_name: str, scheduler: str,
                         config: TrainingFreeConfig = TrainingFreeConfig(), views_per_pass: int = 0,
                         include_source: bool = False, on_step: StepFn | None = None) -> Tensor:
    """Sample every target view by latent inpainting from its projection (module docstring).

    model: host ModelPatcher of the base model, WAN22 or WAN21 (no adapter); positive/negative: host CONDITIONING
    shared by all views; source (1, C, T, h, w), projections (V-1, C, T, h, w) VAE latents; known
    (V-1, 1, T, h, w) soft masks (``training_free.soft_latent_mask``). Noise is drawn once for all V
    views from ``seed`` (row v for view v, as ``Full4DSampler``). Returns (V-1, C, T, h, w), or
    (V, ...) with the source latent first when ``include_source``.
    """
    _check_model(model)
    V = int(projections.shape[0]) + 1
    check_latents(source, projections, V)
    if tuple(known.shape) != (V - 1, 1, *source.shape[2:]):
        raise ValueError(f"masks: soft masks of shape {tuple(known.shape)} do not match the projections "
                         f"{(V - 1, 1, *source.shape[2:])}")
    check_sampler_args(sampler_name, scheduler, steps)
    groups = pass_groups(V, views_per_pass, config.cross_view)
    base = with_noised_inpaint(with_shift(model, shift))
    sigmas = training_free_sigmas(base, steps, sampler_name, scheduler, config.start_sigma)
    s_stop = stop_sigma(sigmas, config.stop)
    n = len(sigmas) - 1
    source, projections, known = source.float().cpu(), projections.float().cpu(), known.float().cpu()
    latents = torch.cat([source, projections])  # row v = view v
    noise_all = comfy.sample.prepare_noise(torch.zeros_like(latents), int(seed))
    out = torch.empty_like(latents)
    out[0] = source[0]
    for gi, views in enumerate(groups):
        rows = list(views)
        guided, free = replacement_masks(known, views)
        m = with_cross_view(base, len(views)) if config.cross_view else base
        m = with_replacement(m, guided, free, s_stop)

        def callback(step, x0, x, total_steps, done=gi * n):
            report(on_step, done + step + 1, n * len(groups))

        samples = comfy.sample.sample(m, noise_all[rows], int(steps), cfg, sampler_name, scheduler, positive, negative,
                                      latents[rows], denoise=1.0, noise_mask=torch.ones_like(guided), sigmas=sigmas,
                                      callback=callback, disable_pbar=True, seed=int(seed))
        for i, v in enumerate(views):
            if v != 0:
                out[v] = samples[i].float().cpu()
    return out if include_source else out[1:]


def sample_rig_training_free(model, positive: list, negative: list, source: dict, projections: dict, masks: Tensor,
                             rig, **kw) -> dict:
    """``sample_training_free`` on host LATENT dicts, the projection node's MASK batch (V*T, H, W)
    view-major (view 0 first; it is dropped) and a ``comfyui_full4d.geometry.cameras.Rig``. Returns a LATENT
    dict (batch = views, view-major)."""
    for name, lat in (("source", source), ("projections", projections)):
        if not isinstance(lat, dict) or not torch.is_tensor(lat.get("samples")):
            raise ValueError(f"{name}: expected a LATENT (dict with 'samples'), got {type(lat).__name__}")
    if not torch.is_tensor(masks) or masks.dim() != 3:
        shape = tuple(masks.shape) if torch.is_tensor(masks) else type(masks).__name__
        raise ValueError(f"masks: expected the projection's MASK batch (V*T, H, W), got {shape}")
    V = int(rig.cameras.R.shape[0])
    proj = projections["samples"]
    check_latents(source["samples"], proj, V)
    if masks.shape[0] % V:
        raise ValueError(f"masks: {masks.shape[0]} masks are not {V} views x T frames; connect the masks output of "
                         f"Full4DProjectToCameras for the same rig (all V views, view 0 first)")
    per_view = masks.reshape(V, masks.shape[0] // V, *masks.shape[1:])[1:]  # (V-1, T, H, W), view 0 dropped
    known = soft_latent_mask(per_view, tuple(proj.shape[2:]), space=vae_space(proj.shape[1]))
    return {"samples": sample_training_free(model, positive, negative, source["samples"], proj, known, **kw)}
