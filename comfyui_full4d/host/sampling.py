"""Multi-view sampling with the host's own sampler (SPEC 5): ``comfy.sample.sample`` (KSampler,
the chosen sampler and scheduler, CFG with cond and uncond stacked in one batch), the host's
denoise mask keeping the source row clean (re-imposed after every step by ``KSamplerX0Inpaint``; its
timestep is 0 through the Full-4D wrapper, ``patch.per_frame_timesteps``) and ``time_dim_concat`` for
the condition halves. Progress: the engine ``on_step`` (host bar + interrupt) once per sampling step.

The source row goes into the model clean, as training feeds it (``with_clean_inpaint``): ``WAN22`` (Wan2.2-TI2V-5B)
does that by itself (its ``scale_latent_inpaint`` returns the clean latent), but ``WAN21`` (the Wan2.1 class:
Wan2.1-T2V-1.3B, the pack's nano model) inherits ``BaseModel.scale_latent_inpaint``, which re-noises the known
region to the current sigma; so the sampler's clone patches it for every class.
"""

from __future__ import annotations

import comfy.model_management
import comfy.model_sampling
import comfy.sample
import comfy.samplers
import torch
from torch import Tensor

from ..common.progress import StepFn, report
from ..diffusion.packing import activation_bytes, check_latents, pack_pass, view_groups
from .patch import ABLATION_KEY, _wan, check_one_device, get_adapter, with_ablation, with_rig

POOL_KEY = "full4d_pool"  # model_options entry: the worker pool that samples this model (host/pool.py)

__all__ = ["sample_full4d", "sample_rig", "predict_x0", "with_shift", "with_clean_inpaint", "check_memory"]


def with_shift(model, shift: float):
    """Clone with the rectified-flow schedule shifted by ``shift`` (as the host's ModelSamplingSD3)."""
    if not shift > 0:
        raise ValueError(f"shift must be > 0, got {shift}")

    class Full4DFlowSampling(comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST):
        pass

    ms = Full4DFlowSampling(model.model.model_config)
    ms.set_parameters(shift=float(shift), multiplier=1000)
    m = model.clone()
    m.add_object_patch("model_sampling", ms)
    return m


def _clean_latent(sigma=None, noise=None, latent_image=None, **kwargs):
    return latent_image


def with_clean_inpaint(model):
    """Clone whose inpainting (``KSamplerX0Inpaint``) hands the model the known region (the source row, denoise
    mask 0) as the clean latent: ``add_object_patch("scale_latent_inpaint", ...)``, ``WAN22``'s own rule, which
    ``WAN21`` lacks (module docstring). ``training_free.with_noised_inpaint`` is the opposite patch."""
    m = model.clone()
    m.add_object_patch("scale_latent_inpaint", _clean_latent)
    return m


def check_memory(model, views: int, frames: int, h: int, w: int, views_per_pass: int) -> None:
    """Raise when one pass's activations cannot fit the load device at all."""
    dm = _wan(model)
    dtype = model.model.manual_cast_dtype or model.model.get_dtype()
    need = activation_bytes(views, frames, h, w, dm.dim, dm.ffn_dim, comfy.model_management.dtype_size(dtype),
                            patch=tuple(dm.patch_size[1:]))
    total = comfy.model_management.get_total_memory(model.load_device)
    if need > 0.9 * total:
        raise ValueError(f"Full4DSampler: {views} views per pass at {frames} latent frames of {h}x{w} need about "
                         f"{need / 2**30:.1f} GiB of activations but {model.load_device} has {total / 2**30:.1f} GiB; "
                         f"lower views_per_pass (now {views_per_pass}), or the number of frames / resolution")


def _with_cond(conditioning: list, cond: Tensor) -> list:
    return [[c[0], {**c[1], "time_dim_concat": cond}] for c in conditioning]


def sample_full4d(model, positive: list, negative: list, source: Tensor, projections: Tensor, cams: Tensor, *,
                  seed: int, steps: int, cfg: float, shift: float, sampler_name: str, scheduler: str,
                  views_per_pass: int = 0, include_source: bool = False, on_step: StepFn | None = None) -> Tensor:
    """Denoise the target halves of all target views.

    model: host ModelPatcher with a Full-4D adapter; positive/negative: host CONDITIONING;
    source (1, C, T, h, w) VAE latent of the source video; projections (V-1, C, T, h, w) VAE
    latents of the projection renders of views 1..V-1; cams (V, 12) camera numbers (view 0
    identity). Noise is drawn once for all V views from ``seed`` (independent of the grouping).
    Returns (V-1, C, T, h, w), or (V, ...) with the source latent first when ``include_source``.
    """
    if get_adapter(model) is None:
        raise ValueError("model: no Full-4D adapter attached; connect the MODEL through Full4DAdapterLoader")
    check_one_device(model)
    V = int(cams.shape[0])
    check_latents(source, projections, V)
    check_sampler_args(sampler_name, scheduler, steps)
    groups = view_groups(V, views_per_pass)
    pool = model.model_options.get(POOL_KEY)  # a host.pool.PoolSpec from Full4DParallel: sample in its workers
    if pool is not None:
        return pool.sample(dict(positive=positive, negative=negative, source=source, projections=projections,
                                cams=cams, seed=seed, steps=steps, cfg=cfg, shift=shift, sampler_name=sampler_name,
                                scheduler=scheduler, views_per_pass=views_per_pass, include_source=include_source,
                                ablation=model.model_options["transformer_options"].get(ABLATION_KEY)), on_step)
    _, _, T, h, w = source.shape
    check_memory(model, max(len(g) for g in groups), T, h, w, views_per_pass)
    source, projections = source.float().cpu(), projections.float().cpu()
    noise_all = comfy.sample.prepare_noise(torch.zeros(V, *source.shape[1:]), int(seed))
    base = with_clean_inpaint(with_shift(model, shift))
    total = steps * len(groups)
    out = torch.empty(V, *source.shape[1:])
    for gi, views in enumerate(groups):
        sp = pack_pass(source, projections, views)
        m = with_rig(base, cams[list(views)])
        done = gi * steps

        def callback(step, x0, x, total_steps, done=done):
            report(on_step, done + step + 1, total)

        samples = comfy.sample.sample(m, noise_all[list(views)], steps, cfg, sampler_name, scheduler,
                                      _with_cond(positive, sp.cond), _with_cond(negative, sp.cond), sp.latent,
                                      denoise=1.0, noise_mask=sp.mask, callback=callback, disable_pbar=True,
                                      seed=int(seed))
        out[list(views[1:])] = samples[1:].float().cpu()
        if gi == 0:
            out[0] = samples[0].float().cpu()  # the source row, kept clean by the denoise mask
    return out if include_source else out[1:]


def check_sampler_args(sampler_name: str, scheduler: str, steps: int) -> None:
    """ValueError naming the input when the host has no such sampler / scheduler or steps < 1."""
    if sampler_name not in comfy.samplers.KSampler.SAMPLERS:
        raise ValueError(f"sampler_name {sampler_name!r} is not one of the host's samplers")
    if scheduler not in comfy.samplers.KSampler.SCHEDULERS:
        raise ValueError(f"scheduler {scheduler!r} is not one of the host's schedulers")
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")


def sample_rig(model, positive: list, negative: list, source: dict, projections: dict, rig,
               ablation: str = "full", **kw) -> dict:
    """``sample_full4d`` on host LATENT dicts and a ``comfyui_full4d.geometry.cameras.Rig``; returns a LATENT dict
    of the target views (batch = views, view-major; with the source first when ``include_source``).

    ablation: "full" or one of the paper's Tab. 4 variants ``train.Ablation.NAMES``
    ("no_fused_attention", "no_projection", "no_intra_time", "no_cross_half"); the same switches
    the training code uses, so an ablated adapter is sampled as it was trained.
    """
    from ..diffusion.adapter import camera_features
    from ..diffusion.ablation import Ablation

    for name, lat in (("source", source), ("projections", projections)):
        if not isinstance(lat, dict) or not torch.is_tensor(lat.get("samples")):
            raise ValueError(f"{name}: expected a LATENT (dict with 'samples'), got {type(lat).__name__}")
    ab = Ablation.named(ablation)
    proj = projections["samples"]
    if ab.attention_changed:
        model = with_ablation(model, ab)
    if not ab.projection:  # zero condition latents in model space (what training saw)
        proj = model.model.process_latent_out(torch.zeros_like(proj))
    cams = camera_features(rig.cameras.R, rig.cameras.t)
    return {"samples": sample_full4d(model, positive, negative, source["samples"], proj, cams, **kw)}


def generate_views(model, vae, source: Tensor, projections: Tensor, rig, positive: list, *, steps: int, shift: float,
                   seed: int = 0, ablation: str = "full") -> Tensor:
    """The generation stage of a graph, VAE Encode -> Full4DSampler (Euler, simple schedule, cfg 1) -> VAE Decode:
    source (T, H, W, 3) and the target views' projection renders (V-1, T, H, W, 3) in [0, 1], each video encoded
    on its own as VAE Encode does -> the target views (V-1, T, H, W, 3) in [0, 1]. ``positive`` is also the
    negative (cfg 1 never runs it)."""
    with torch.inference_mode():
        src = {"samples": vae.encode(source)}
        proj = {"samples": torch.cat([vae.encode(p) for p in projections])}
        lat = sample_rig(model, positive, positive, src, proj, rig, ablation=ablation, seed=seed, steps=steps, cfg=1.0,
                         shift=shift, sampler_name="euler", scheduler="simple")["samples"]
        return torch.stack([vae.decode(lat[i:i + 1])[0] for i in range(lat.shape[0])]).float().clamp(0, 1)


def predict_x0(model, positive: list, source: Tensor, projections: Tensor, cams: Tensor, z_tau: Tensor,
               tau: float, *, model_space: bool = False) -> Tensor:
    """One model call of the multi-view model (SPEC 8): ``z0_hat = z_tau - tau * v`` per target view.

    model: patched ModelPatcher; positive: host CONDITIONING (its first entry's text tensor is used,
    no CFG); source (1, C, T, h, w); projections (P-1, C, T, h, w) and cams (P, 12) of the views in
    this call (view 0 first); z_tau (P-1, C, T, h, w) the noised target latents; tau in (0, 1].
    model_space False: all latents in and out in the VAE's space (as VAEEncode returns them; the
    model's ``process_latent_in`` / ``process_latent_out`` are applied here); True: all already in the
    model's normalised space (``process_latent_in`` of the VAE latent), where rectified flow noises
    (what FMD uses). Returns z0_hat (P-1, C, T, h, w) on z_tau's device, no gradient (the FMD target is
    ``stopgrad(z0_hat)``).
    """
    if get_adapter(model) is None:
        raise ValueError("model: no Full-4D adapter attached; connect the MODEL through Full4DAdapterLoader")
    P = int(cams.shape[0])
    check_latents(source, projections, P)
    if tuple(z_tau.shape) != tuple(projections.shape):
        raise ValueError(f"z_tau must have the projections' shape {tuple(projections.shape)}, got {tuple(z_tau.shape)}")
    if not 0.0 < float(tau) <= 1.0:
        raise ValueError(f"tau must be in (0, 1], got {tau}")
    from .patch import diffusion_transformer_options

    m = with_rig(model, cams)
    comfy.model_management.load_models_gpu([m] + m.get_nested_additional_models())
    bm = m.model
    dev = m.load_device
    sp = pack_pass(source.float(), projections.float(), tuple(range(P)))
    into = (lambda z: z) if model_space else bm.process_latent_in
    x = into(torch.cat([source.float(), z_tau.float()]).to(dev))
    cond = into(sp.cond.to(dev))
    ctx = positive[0][0].to(dev).expand(P, -1, -1)
    sigma = torch.full((P,), float(tau), device=dev)
    with torch.no_grad():
        x0 = bm.apply_model(x, sigma, c_crossattn=ctx, time_dim_concat=cond, denoise_mask=sp.mask.to(dev),
                            transformer_options=diffusion_transformer_options(m))
    x0 = x0[1:].float()
    return (x0 if model_space else bm.process_latent_out(x0)).to(z_tau.device)  # back where the caller's latents are
