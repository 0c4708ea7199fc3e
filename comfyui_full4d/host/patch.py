"""Attach a Full-4D adapter to the host's own Wan model (``comfy.ldm.wan.model.WanModel``) through
its ``ModelPatcher`` (SPEC 1, 2, 4, 5). The base model object is never modified.

Model classes (``MODELS``): Wan2.2-TI2V-5B (the host's ``WAN22``, 48 latent channels, Wan2.2 VAE x16) and
Wan2.1-class text-to-video models (``WAN21``, 16 channels, Wan2.1 VAE x8: Wan2.1-T2V-1.3B / 14B, the pack's
nano model). Everything below is the same for both; what differs in the host is handled where it acts:
``WAN21`` has no ``process_timestep`` (the wrapper gets ``(B,)`` timesteps, step 2) and re-noises inpainted
rows (``sampling.with_clean_inpaint``).

How it hooks into the host (all public ``ModelPatcher`` APIs, on a ``clone()``):

1. ``set_additional_models("full4d", [ModelPatcher(adapter)])``: the adapter (built with
   ``comfy.ops.manual_cast`` layers) has its own patcher, so the memory manager loads, offloads
   and lowvram-casts it together with the model (``get_nested_additional_models`` in
   ``comfy.sampler_helpers.prepare_sampling``); ``clone()`` clones it (sharing the weights).
2. ``add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, "full4d", wrapper)``: around
   ``WanModel.forward``. It checks the batch is whole scenes of ``V`` views (the host stacks cond
   and uncond and may batch latents; scene ``j`` = rows ``j*V..j*V+V-1``, never mixed), turns the
   host's per-frame timesteps ``(B, T)`` (from ``WAN22.process_timestep`` and the denoise mask)
   or ``(B,)`` (``WAN21``, or no denoise mask) into ``(B, 2T)`` with the condition half and all of view 0 at 0 (the host's own
   expansion puts ``T`` entries over ``2T`` frames with ``time_dim_concat``), builds the fused
   RoPE (``WanModel.rope_encode`` over ``V*2T`` frames: time index ``v*2T + f``, positions built in
   float32 whatever the model dtype; the per-view branch keeps ``0..2T-1``) and hands a per-call
   ``Full4DRun`` to the blocks in
   ``transformer_options["full4d_run"]``.
3. ``set_model_patch_replace(fn, "dit", "double_block", i)`` per block: runs the block with the
   host's own submodules (norm1, self_attn, cross_attn, norm2/3, ffn, modulation, ``repeat_e``)
   plus ``x += gate * cam_v`` after self-attention and ``x += P(TV(u))`` (the fused branch on the
   block's modulated input ``u``).

4. ``add_wrapper_with_key(WrappersMP.PREPARE_SAMPLING, "full4d", ...)``: the host's memory
   estimate (``estimate_memory`` before ``load_models_gpu``) sees ``MEMORY_FRAMES_FACTOR`` x the
   latent frames (condition half + fused branch), so it offloads enough before sampling.

The rig (the 12 camera numbers per view) rides in ``model_options["transformer_options"]
["full4d_rig"]`` (``with_rig``); the sampler sets it per pass. A paper Tab. 4 ablation
(``train.Ablation``: fused branch off, mask rule 2 or 3 off) rides the same way in
``["full4d_ablation"]`` (``attach_adapter(..., ablation=)`` or ``with_ablation``); the blocks read
it per call, so the same patch serves training and sampling of every variant.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

import comfy.ldm.wan.model as wan
import comfy.model_management
import comfy.model_patcher
import comfy.ops
import comfy.patcher_extension
from comfy.ldm.flux.math import apply_rope1

from ..diffusion.adapter import AdapterConfig, Full4DAdapter, load_adapter
from ..diffusion.ablation import Ablation
from .parallel import MESH_KEY, modulation, shard_self_attention, sharded_block, split_call

KEY = "full4d"
RIG_KEY = "full4d_rig"
RUN_KEY = "full4d_run"
ABLATION_KEY = "full4d_ablation"
ADAPTER_FILE_KEY = "full4d_adapter_file"

__all__ = ["MODELS", "attach_adapter", "adapter_config_for", "diffusion_transformer_options", "get_adapter", "load_full4d",
           "make_adapter", "per_frame_timesteps", "with_ablation", "with_rig", "KEY", "NONE_ADAPTER"]


@dataclass(frozen=True)
class Full4DRun:
    """Per-call scene layout handed from the wrapper to the blocks.

    num_views V, frames F = 2T per view, tokens S per frame; freqs: fused RoPE (1, V*F*S, 1, D/2, 2, 2);
    cams: (V, 12); blocks: the WanModel's blocks being run; ablation: the Tab. 4 switches (all on: full model).
    On a Ulysses rank (``host.parallel``) the rows hold the views ``views = (a, b)`` of each scene, freqs are
    theirs only and ``attend`` is the all-to-all fused attention (``parallel.ulysses_attention``); in the token
    layout the rows hold every view, ``shard`` says which of each view's tokens this rank holds (the blocks see
    those only), freqs are those tokens of every view (view-major) and ``attend`` is ``shard.attend``.
    """

    num_views: int
    frames: int
    tokens: int
    freqs: Tensor
    cams: Tensor
    blocks: Any
    ablation: Ablation = Ablation()
    views: tuple[int, int] | None = None  # views a..b-1 of each scene in this call's rows; None: all
    attend: Any = None  # the fused attention; None: attention.fused_tv_attention
    shard: Any = None  # parallel.TokenShard in the token layout; None: whole views


MODELS = "a Wan2.2-TI2V-5B or Wan2.1-class model"  # what error messages and tooltips name


def _wan(model) -> wan.WanModel:
    dm = getattr(getattr(model, "model", None), "diffusion_model", None)
    if not isinstance(dm, wan.WanModel) or type(dm) is not wan.WanModel:
        raise ValueError(f"model: Full-4D needs the host's Wan diffusion model (WanModel) of {MODELS}, got "
                         f"{type(dm).__name__}; load {MODELS} with Load Diffusion Model")
    if any(type(b) is not wan.WanAttentionBlock for b in dm.blocks):
        raise ValueError("model: Full-4D supports plain WanAttentionBlock blocks only (not VACE/Animate/S2V variants)")
    if dm.ref_conv is not None or dm.img_emb is not None or dm.in_dim != dm.out_dim:
        raise ValueError(f"model: Full-4D supports {MODELS} (text-to-video, latent in = latent out), not i2v / "
                         f"reference-image / extra-channel variants (this one takes {dm.in_dim} channels in and gives "
                         f"{dm.out_dim} out)")
    return dm


def adapter_config_for(model, **kw) -> AdapterConfig:
    """The AdapterConfig matching a host Wan ModelPatcher (dim, heads, blocks), its ``base_model`` the model's
    class: "wan2.2-ti2v-5b" (48 latent channels) or "wan2.1-t2v" (16: Wan2.1-T2V-1.3B / 14B, the nano model);
    ``kw`` override."""
    dm = _wan(model)
    kw.setdefault("base_model", "wan2.2-ti2v-5b" if dm.out_dim == 48 else "wan2.1-t2v")
    return AdapterConfig(dim=dm.dim, num_heads=dm.num_heads, num_blocks=len(dm.blocks), **kw)


def _adapter_dtype(model) -> torch.dtype:
    dtype = model.model.manual_cast_dtype or model.model.get_dtype()
    return dtype if dtype in (torch.float32, torch.float16, torch.bfloat16) else torch.bfloat16


def make_adapter(model, path: str | None = None) -> Full4DAdapter:
    """A zero-init adapter copying the model's self-attention weights, or the file at ``path``.

    Built with the host's ``manual_cast`` ops (weights cast to the activations' dtype/device)."""
    cfg = adapter_config_for(model)
    dtype = _adapter_dtype(model)
    if path is not None:
        return load_adapter(path, expect=cfg, ops=comfy.ops.manual_cast, dtype=dtype)
    dm = _wan(model)
    adapter = Full4DAdapter(cfg, ops=comfy.ops.manual_cast, device="cpu", dtype=dtype)
    base = [{k: v.detach().to("cpu") for k, v in b.self_attn.state_dict().items()} for b in dm.blocks]
    return adapter.reset_parameters(base)


def attach_adapter(model, adapter: Full4DAdapter, skip_zero_branches: bool = True, ablation: Ablation | None = None):
    """Clone ``model`` (a host ModelPatcher of WAN22 or WAN21) and attach ``adapter``; the input is untouched.

    skip_zero_branches: skip the camera branch while its last layer is all zero and the fused branch
    while its projector is all zero (checked per call): their contribution is exactly 0, so a
    zero-init adapter then costs nothing (the fused branch is about 1.3x the base attention at V=6).
    ablation: run the blocks with these Tab. 4 switches (``with_ablation``); None is the full model.
    """
    expect = adapter_config_for(model)
    cfg = adapter.config
    if (cfg.dim, cfg.num_heads, cfg.num_blocks) != (expect.dim, expect.num_heads, expect.num_blocks):
        raise ValueError(f"adapter (dim={cfg.dim}, heads={cfg.num_heads}, blocks={cfg.num_blocks}) does not fit the "
                         f"model (dim={expect.dim}, heads={expect.num_heads}, blocks={expect.num_blocks})")
    check_one_device(model)
    m = model.clone()
    adapter.to(model.offload_device)
    sub = comfy.model_patcher.ModelPatcher(adapter, load_device=model.load_device, offload_device=model.offload_device)
    sub.cached_patcher_init = (_no_device_copy, ())  # what core (0.33+) calls to re-create a model on another GPU
    m.set_additional_models(KEY, [sub])
    m.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, KEY)
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, KEY, _make_wrapper())
    m.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.PREPARE_SAMPLING, KEY)
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREPARE_SAMPLING, KEY, _prepare_sampling_wrapper)
    for i in range(cfg.num_blocks):
        m.set_model_patch_replace(_make_block(adapter.blocks[i], i, skip_zero_branches), "dit", "double_block", i)
    return m if ablation is None else with_ablation(m, ablation)


_USE_PARALLEL = ("Remove that node and put Full4DParallel after Full4DAdapterLoader instead (cond / uncond and views "
                 "on several GPUs)")
MULTI_GPU = ("model: comes through core's MultiGPU CFG Split (MultiGPU_WorkUnits), which Full4DSampler does not run "
             "under: core re-creates the base model on each extra GPU without the Full-4D adapter. " + _USE_PARALLEL)


def check_one_device(model) -> None:
    """ValueError (MULTI_GPU) when core's multi-GPU CFG split (0.33+) prepared ``model`` for extra devices."""
    if model.get_additional_models_with_key("multigpu"):
        raise ValueError(MULTI_GPU)


def _no_device_copy(*args, **kwargs):
    """Core's factory hook for copying a model to another device (``ModelPatcher.cached_patcher_init``): the adapter
    has no loader to re-run, so say what to use instead of core's 'loader does not support multigpu'."""
    raise ValueError("model: core asked to re-create the Full-4D adapter on another device (MultiGPU CFG Split, "
                     "MultiGPU_WorkUnits, placed after Full4DAdapterLoader); it cannot. " + _USE_PARALLEL)


def get_adapter(model) -> Full4DAdapter | None:
    """The adapter attached to a ModelPatcher, or None."""
    subs = model.get_additional_models_with_key(KEY)
    return subs[0].model if subs else None


def with_rig(model, cams: Tensor):
    """Clone of a patched model that samples scenes of ``V = len(cams)`` views. cams (V, 12)."""
    if get_adapter(model) is None:
        raise ValueError("model: no Full-4D adapter attached; connect it through Full4DAdapterLoader first")
    if cams.dim() != 2 or cams.shape[1] != 12 or cams.shape[0] < 1:
        raise ValueError(f"cams must be (V, 12), got {tuple(cams.shape)}")
    m = model.clone()
    rig = {"cams": cams.detach().float().cpu(), "num_views": int(cams.shape[0])}
    m.model_options["transformer_options"][RIG_KEY] = rig
    return m


def with_ablation(model, ablation: Ablation):
    """Clone of a patched model whose blocks run the paper's Tab. 4 switches (``train.Ablation``):
    ``fused_attention`` off drops the fused branch, ``intra_time`` / ``cross_half`` off drop mask rule 2 / 3.
    The projection switch acts on the data (the caller zeroes the condition latents), not on the blocks.
    Training and sampling of a variant both go through here, so an ablated adapter is sampled as trained."""
    if get_adapter(model) is None:
        raise ValueError("model: no Full-4D adapter attached; connect it through Full4DAdapterLoader first")
    if not isinstance(ablation, Ablation):
        raise ValueError(f"ablation must be a train.Ablation (e.g. Ablation.named('no_intra_time')), got {ablation!r}")
    m = model.clone()
    m.model_options["transformer_options"][ABLATION_KEY] = ablation
    return m


def diffusion_transformer_options(model) -> dict:
    """The ``transformer_options`` the host's sampler hands ``WanModel.forward`` for this patcher
    (its model options plus its wrappers, merged as ``comfy.sampler_helpers.prepare_model_patcher`` does)."""
    to = comfy.patcher_extension.copy_nested_dicts(model.model_options["transformer_options"])
    comfy.patcher_extension.merge_nested_dicts(to.setdefault("wrappers", {}), model.wrappers, copy_dict1=False)
    return to


def per_frame_timesteps(timestep: Tensor, num_views: int, frames: int) -> Tensor:
    """(B,) or (B, T) or (B, 2T) host timesteps -> (B, 2T): target half as given, condition half 0, view 0 all 0.

    (B, T): ``WAN22.process_timestep`` of the denoise mask; (B,): ``WAN21`` (no per-frame timesteps), or no mask.
    frames: T (latent frames of one half). Rows are views ``b % V`` (SPEC 1, 5)."""
    B = timestep.shape[0]
    if timestep.dim() == 1:
        tgt = timestep[:, None].expand(B, frames)
    elif timestep.dim() == 2 and timestep.shape[1] == frames:
        tgt = timestep
    elif timestep.dim() == 2 and timestep.shape[1] == 2 * frames:
        tgt = timestep[:, :frames]
    else:
        raise ValueError(f"Full-4D: timestep shape {tuple(timestep.shape)} does not fit {frames} latent frames")
    out = torch.cat([tgt, torch.zeros_like(tgt)], dim=1).clone()
    out.view(B // num_views, num_views, 2 * frames)[:, 0] = 0
    return out


def _make_wrapper() -> Callable:
    def full4d_diffusion_model(executor, x, timestep, context, clip_fea=None, time_dim_concat=None,
                               transformer_options={}, **kwargs):
        rig = transformer_options.get(RIG_KEY)
        if rig is None:
            raise ValueError("this MODEL carries a Full-4D adapter: sample it with Full4DSampler (it needs the rig); "
                             "for plain Wan sampling use the model before Full4DAdapterLoader")
        V = rig["num_views"]
        B, _, T, h, w = x.shape
        if B % V:
            raise ValueError(f"Full-4D: the host batch of {B} latents is not whole scenes of {V} views")
        if time_dim_concat is None or tuple(time_dim_concat.shape) != tuple(x.shape):
            got = None if time_dim_concat is None else tuple(time_dim_concat.shape)
            raise ValueError(f"Full-4D: the condition half (time_dim_concat) must have the latent's shape "
                             f"{tuple(x.shape)}, got {got}")
        if clip_fea is not None or "reference_latent" in kwargs:
            raise ValueError("Full-4D: clip vision / reference latents are not supported")
        dm = executor.class_obj
        p = dm.patch_size
        S = ((h + p[1] - 1) // p[1]) * ((w + p[2] - 1) // p[2])
        # float32 positions: V*2T exceeds 256 (bf16 holds integers exactly only up to 256), the table is float32 anyway
        freqs = dm.rope_encode(V * 2 * T, h, w, device=x.device, dtype=torch.float32,
                               transformer_options=transformer_options)
        run = Full4DRun(num_views=V, frames=2 * T, tokens=S, freqs=freqs, cams=rig["cams"].to(x.device),
                        blocks=dm.blocks, ablation=transformer_options.get(ABLATION_KEY) or Ablation())
        opts = dict(transformer_options)
        opts[RUN_KEY] = run
        t2 = per_frame_timesteps(timestep, V, T)
        if MESH_KEY in transformer_options:  # this rank's views only (host/parallel.py)
            L = run.frames * S

            def run_for(views: tuple[int, int] | None, attend, shard) -> dict:  # their fused RoPE; all cameras
                freqs = run.freqs[:, views[0] * L:views[1] * L] if shard is None else shard.local(run.freqs, V)
                return {RUN_KEY: dataclasses.replace(run, freqs=freqs, views=views, attend=attend, shard=shard)}

            return split_call(executor, transformer_options[MESH_KEY], V, L, run_for, x, t2, context,
                              time_dim_concat, opts, **kwargs)
        return executor(x, t2, context, clip_fea, time_dim_concat, opts, **kwargs)

    return full4d_diffusion_model


MEMORY_FRAMES_FACTOR = 3  # 2: the condition half doubles the tokens; x1.5: the fused branch's activations


def _prepare_sampling_wrapper(executor, model, noise_shape, conds, model_options=None, **kwargs):
    """Let the host size its memory estimate for what the model really runs: ``MEMORY_FRAMES_FACTOR``
    times the latent frames (``noise_shape`` is only used for ``estimate_memory`` there)."""
    shape = list(noise_shape)
    if len(shape) == 5:
        shape[2] *= MEMORY_FRAMES_FACTOR
    return executor(model, shape, conds, model_options=model_options, **kwargs)


def _is_zero(linear) -> bool:
    return not bool(linear.weight.any()) and (linear.bias is None or not bool(linear.bias.any()))


def _make_block(adapter_block, index: int, skip_zero: bool) -> Callable:
    def full4d_block(args: dict, extra: dict) -> dict:
        to = args["transformer_options"]
        run: Full4DRun | None = to.get(RUN_KEY)
        if run is None:
            return extra["original_block"](args)

        def forward(x: Tensor, freqs: Tensor) -> Tensor:
            return _block_forward(run.blocks[index], adapter_block, run, x, args["vec"], freqs, args["txt"], to,
                                  skip_zero)

        return {"img": sharded_block(run.shard, index, len(run.blocks), args["img"], args["pe"], forward)}

    return full4d_block


def _block_forward(block, ab, run: Full4DRun, x: Tensor, e: Tensor, freqs: Tensor, context: Tensor, to: dict,
                   skip_zero: bool = False) -> Tensor:
    """``WanAttentionBlock.forward`` with the adapter (module docstring); x (B, F*S, C), e (B, F, 6, C).

    Token layout (``run.shard``): x (B, n, C) this rank's n tokens of every view, freqs their RoPE rows."""
    mod = comfy.model_management.cast_to(block.modulation, dtype=x.dtype, device=x.device)
    e = (mod.unsqueeze(0) + e).unbind(2) if e.ndim == 4 else (mod + e).chunk(6, dim=1)
    x = x.contiguous()
    B, L, C = x.shape
    want = run.frames * run.tokens if run.shard is None else run.shard.hi - run.shard.lo
    if L != want:
        part = "" if run.shard is None else f", tokens {run.shard.lo}..{run.shard.hi - 1} of each view on this rank"
        raise ValueError(f"Full-4D: block sees {L} tokens, expected {want} ({run.frames} frames x {run.tokens} "
                         f"tokens{part})")
    rep = modulation(run.shard, x)
    u = torch.addcmul(rep(e[0]), block.norm1(x), 1 + rep(e[1]))
    if run.shard is None:
        y = block.self_attn(u, freqs, transformer_options=to)
    else:
        y = shard_self_attention(block.self_attn, u, freqs, run.shard, to)
    V = run.num_views if run.views is None else run.views[1] - run.views[0]
    if not (skip_zero and _is_zero(ab.cam.fc2)):
        cam = ab.camera_embedding(run.cams.to(x.dtype)).to(x.dtype)  # (V, C), all views: same rounding everywhere
        cam = cam if run.views is None else cam[run.views[0]:run.views[1]]
        y = y + cam.repeat(B // V, 1)[:, None, :]
    x = torch.addcmul(x, y, rep(e[2]))
    del y
    sw = run.ablation
    if sw.fused_attention and not (skip_zero and _is_zero(ab.tv_proj)):
        scene = u.reshape(B // V, V * L, C)  # rows j*V..j*V+V-1 are one scene, tokens view-major
        rope = (lambda q: apply_rope1(q, run.freqs))
        shard = {} if run.attend is None else {"attend": run.attend}
        fused = ab.fused(scene, run.num_views, run.frames, rope, intra_time=sw.intra_time, cross_half=sw.cross_half,
                         **shard)
        x = x + fused.reshape(B, L, C).to(x.dtype)
    x = x + block.cross_attn(block.norm3(x), context, context_img_len=None, transformer_options=to)
    y = block.ffn(torch.addcmul(rep(e[3]), block.norm2(x), 1 + rep(e[4])))
    return torch.addcmul(x, y, rep(e[5]))


NONE_ADAPTER = "none (zero-init)"


def load_full4d(model, adapter_name: str):
    """Patched clone of ``model`` with the adapter file ``adapter_name`` from models/full4d/,
    or a zero-init adapter (exactly the base model per view) for ``NONE_ADAPTER``."""
    from .paths import FULL4D, client_paths, full_path

    with client_paths():  # errors name models/full4d/<file>, not the server's absolute path
        path = None if adapter_name == NONE_ADAPTER else full_path(FULL4D, adapter_name)
        m = attach_adapter(model, make_adapter(model, path))
    m.model_options[ADAPTER_FILE_KEY] = path  # what worker processes load (host/pool.py)
    return m
