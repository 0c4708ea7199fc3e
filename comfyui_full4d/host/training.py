"""The host side of adapter training: the host's Wan model (Wan2.2-TI2V-5B or a Wan2.1-class model) loaded
in-process and patched by the SAME adapter code as inference (``comfyui_full4d.host.patch``), so a trained
file is exactly what ``Full4DAdapterLoader`` runs.

``HostTrainModel.velocity`` calls ``WanModel.forward`` with the transformer options of the
patched ``ModelPatcher`` (``patch.diffusion_transformer_options``): the Full-4D DIFFUSION_MODEL
wrapper turns the per-view timesteps into per-frame ones (condition halves and view 0 at 0),
builds the fused RoPE and the blocks run the adapter. Latents are in the model's space
(``process_latent_in`` of the VAE latent), timesteps ``model_sampling.timestep(tau)``, the
condition half goes in as ``time_dim_concat``: what the host's sampler hands the model.

Distributed: ``torchrun --nproc_per_node N -m comfyui_full4d.training.train ...`` starts N processes;
``init_distributed`` joins the process group (NCCL on CUDA, gloo on CPU) and every rank draws its
own clip. Default: the adapter (and LoRA) train under ``DistributedDataParallel`` (every rank holds
all weights, gradients all-reduced). ``fsdp=True`` (``--fsdp true``): FSDP2 (``fully_shard``) with
one unit per DiT block, holding that block's frozen base weights, its LoRA and adapter block ``i``;
every rank keeps 1/N of the base blocks, the adapter, its gradients and the AdamW moments, and a
unit's full weights exist only while it runs (forward, and again in backward). Gradients are
reduce-scattered (averaged, as DDP). The rest of the base (embeddings, head) stays replicated.
The host calls a block through its patch (``(args, extra) -> dict``), so each unit is an
``nn.Module`` whose forward is that patch function: calling it fires FSDP's hooks.
Saving gathers the full tensors (``common.dist.gather_full``; rank 0 writes), so checkpoints and the
adapter file are the same as without FSDP, and a run resumes with or without it.
"""

from __future__ import annotations

import dataclasses
import os
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

import comfy.sd
import comfy.utils

from ..common.io import save_tensors
from ..diffusion.adapter import save_adapter
from ..common.dist import gather_full
from . import patch

__all__ = ["HostTrainModel", "LoRALinear", "init_distributed", "load_train_model", "progress_bar"]


class LoRALinear(nn.Module):
    """``y = base(x) + (alpha / r) * up(down(x))`` around a frozen host Linear; ``up`` zero at init,
    ``down`` ~ U(+-1/sqrt(in)). Saved in the host's LoRA format (``<key>.lora_up.weight``,
    ``<key>.lora_down.weight``, ``<key>.alpha``), so ``LoraLoaderModelOnly`` applies it at inference."""

    def __init__(self, base: nn.Module, rank: int, alpha: float, seed: int):
        super().__init__()
        self.base = base
        self.rank, self.alpha = int(rank), float(alpha)
        g = torch.Generator().manual_seed(seed)
        w = base.weight
        bound = 1 / base.in_features ** 0.5
        self.down = nn.Parameter((torch.rand(self.rank, base.in_features, generator=g) * 2 - 1).mul(bound).to(w.device))
        self.up = nn.Parameter(torch.zeros(base.out_features, self.rank, device=w.device))

    def forward(self, x: Tensor, *args, **kwargs) -> Tensor:
        delta = (x.to(self.down.dtype) @ self.down.T) @ self.up.T
        return self.base(x, *args, **kwargs) + (self.alpha / self.rank) * delta.to(x.dtype)


def _add_lora(dm: nn.Module, rank: int, alpha: float) -> dict[str, LoRALinear]:
    """Wrap q, k, v, o of every block's self-attention; returns {model key: LoRALinear}."""
    out = {}
    for i, block in enumerate(dm.blocks):
        for name in ("q", "k", "v", "o"):
            lora = LoRALinear(getattr(block.self_attn, name), rank, alpha, seed=1000 * i + ord(name))
            setattr(block.self_attn, name, lora)
            out[f"diffusion_model.blocks.{i}.self_attn.{name}"] = lora
    return out


def save_lora(loras: dict[str, LoRALinear], path: Path, full: dict[str, dict[str, Tensor]] | None = None) -> None:
    """Write the LoRA in the host's format, atomically; ``full``: {key: {"up", "down"}} gathered tensors
    to write instead of the modules' own (FSDP shards)."""
    sd = {}
    for key, m in loras.items():
        up, down = (m.up, m.down) if full is None else (full[key]["up"], full[key]["down"])
        sd[f"{key}.lora_up.weight"] = up.detach().float().cpu().contiguous()
        sd[f"{key}.lora_down.weight"] = down.detach().float().cpu().contiguous()
        sd[f"{key}.alpha"] = torch.tensor(m.alpha)
    save_tensors(path, sd, metadata={"format": "full4d-lora", "rank": str(next(iter(loras.values())).rank)})


@contextmanager
def host_training_mode():
    """Tell the host a differentiable forward runs (``comfy.model_management.in_training``).

    Newer hosts (0.33) route ``comfy.ldm.flux.math.apply_rope1`` to a comfy-kitchen kernel that has
    no backward unless the flag is set; 0.3.75 has no flag (always the torch path), so it is set
    for the block and removed again there. Restores the previous value on exit.
    """
    import comfy.model_management as mm

    had, old = hasattr(mm, "in_training"), getattr(mm, "in_training", False)
    mm.in_training = True
    try:
        yield
    finally:
        if had:
            mm.in_training = old
        else:
            del mm.in_training


class _Step(nn.Module):
    """Holds the adapter (and LoRA) as its only submodules so DDP sees exactly the trainable parameters,
    or, under FSDP, the per-block units that hold them; ``forward`` runs the patched host model."""

    def __init__(self, adapter: nn.Module, patched, context: Tensor, lora: nn.Module | None = None,
                 units: nn.ModuleList | None = None):
        super().__init__()
        if units is None:
            self.adapter, self.lora = adapter, lora
        else:  # FSDP: only through the per-block units (the root must not reach a block's weights another way)
            self.units = units
        self._patched = [patched]  # a list: not registered as a submodule (the base stays frozen, unsynced)
        self.register_buffer("context", context, persistent=False)

    def forward(self, x: Tensor, cond: Tensor, tau: Tensor, cams: Tensor) -> Tensor:
        m = patch.with_rig(self._patched[0], cams)
        base = m.model
        dtype = base.manual_cast_dtype or base.get_dtype()
        to = patch.diffusion_transformer_options(m)
        t = base.model_sampling.timestep(tau.float()).float()
        ctx = self.context.to(x.device, dtype).expand(x.shape[0], -1, -1)
        with host_training_mode():
            return base.diffusion_model(x.to(dtype), t, ctx, time_dim_concat=cond.to(dtype), transformer_options=to)


def _checkpointed(fn):
    """A block patch ``(args, extra) -> {"img"}`` recomputed in backward (activation checkpointing)."""

    def block(args: dict, extra: dict) -> dict:
        def run(img, vec, pe, txt):  # also re-run in backward, outside _Step.forward: set the flag here too
            with host_training_mode():
                return fn({**args, "img": img, "vec": vec, "pe": pe, "txt": txt}, extra)["img"]

        return {"img": checkpoint(run, args["img"], args["vec"], args["pe"], args["txt"], use_reentrant=False)}

    return block


class _BlockUnit(nn.Module):
    """One FSDP unit: DiT block ``base`` (frozen, with its LoRA) and adapter block ``adapter``;
    ``forward(args, extra)`` is the block's patch function, which reads both through the run."""

    def __init__(self, base: nn.Module, adapter: nn.Module, fn):
        super().__init__()
        self.base, self.adapter = base, adapter
        self._fn = [fn]  # a plain callable, not a submodule

    def forward(self, args: dict, extra: dict) -> dict:
        return self._fn[0](args, extra)


def _shard_blocks(patched, adapter: nn.Module, dm: nn.Module) -> nn.ModuleList:
    """``fully_shard`` one ``_BlockUnit`` per DiT block and route the block patches through the units."""
    from torch.distributed.fsdp import fully_shard

    blocks = patched.model_options["transformer_options"]["patches_replace"]["dit"]
    units = nn.ModuleList()
    for i, (base, ab) in enumerate(zip(dm.blocks, adapter.blocks)):
        unit = fully_shard(_BlockUnit(base, ab, blocks[("double_block", i)]))
        units.append(unit)
        # a closure, not the module: the host deep-copies model_options on clone() (a function is kept as is)
        patched.set_model_patch_replace(lambda args, extra, unit=unit: unit(args, extra), "dit", "double_block", i)
    return units


class HostTrainModel:
    """``train.TrainModel`` over a host WAN22 ModelPatcher and a host VAE.

    model: ModelPatcher of Wan2.2 (frozen); vae: ``comfy.sd.VAE``; context: (1, L, 4096) text
    embedding used for every clip; adapter_path: start from this file instead of zero-init; adapter_meta:
    ``AdapterConfig`` fields for the file's header (e.g. ``base_model``, ``views_trained``).
    distributed: DDP over the joined process group; fsdp: FSDP2 instead (module docstring; needs the group).
    """

    def __init__(self, model, vae, context: Tensor, *, device: str | torch.device = "cpu",
                 grad_checkpointing: bool = False, distributed: bool = False, adapter_path: str | None = None,
                 ablation=None, lora_rank: int = 0, lora_alpha: float | None = None, fsdp: bool = False,
                 adapter_meta: dict | None = None):
        if fsdp and not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            raise ValueError("fsdp=True (--fsdp true) shards over a process group: start the run with "
                             "torchrun --nproc_per_node N (N >= 2), or leave --fsdp false for one process")
        self.device = torch.device(device)
        self.vae = vae
        base = model.model
        base.requires_grad_(False)
        base.to(self.device)
        adapter = patch.make_adapter(model, adapter_path).float().to(self.device)
        if adapter_meta:  # what the file's header says about its base model and views (AdapterConfig fields)
            adapter.config = dataclasses.replace(adapter.config, **{k: type(getattr(adapter.config, k))(v)
                                                                    for k, v in adapter_meta.items()})
        adapter.requires_grad_(True)
        self.adapter = adapter
        # skip_zero_branches=False: the zero-init layers must get gradients; the Tab. 4 switches ride on the patch
        patched = patch.attach_adapter(model, adapter, skip_zero_branches=False, ablation=ablation)
        adapter.to(self.device)  # attach_adapter parks it on the offload device
        if grad_checkpointing:
            blocks = patched.model_options["transformer_options"]["patches_replace"]["dit"]
            for key, fn in list(blocks.items()):
                patched.set_model_patch_replace(_checkpointed(fn), "dit", key[0], key[1])
        self.patched = patched
        self.loras: dict[str, LoRALinear] = {}
        if lora_rank > 0:  # after make_adapter: the fused copies start from the plain base weights
            self.loras = _add_lora(base.diffusion_model, lora_rank, lora_alpha or float(lora_rank))
        lora = nn.ModuleList(self.loras.values()) if self.loras else None
        units = _shard_blocks(patched, adapter, base.diffusion_model) if fsdp else None
        self.step_module = _Step(adapter, patched, context.float().to(self.device), lora, units)
        self.runner: nn.Module = self.step_module
        if fsdp:
            from torch.distributed.fsdp import fully_shard

            fully_shard(self.step_module)  # the root: owns no parameters, drives the units' lazy init
        elif distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            unused = ablation is not None and not ablation.fused_attention  # the fused copies then get no gradient
            self.runner = nn.parallel.DistributedDataParallel(self.step_module, device_ids=ids,
                                                              find_unused_parameters=unused)
        self.trainable = adapter if lora is None else nn.ModuleDict({"adapter": adapter, "lora": lora})

    @torch.no_grad()
    def encode(self, frames: Tensor) -> Tensor:
        """frames (V, L, H, W, 3) in [0, 1] -> model-space latents (V, C, T, h, w) on the device."""
        zs = [self.vae.encode(f.to(torch.float32)) for f in frames]  # each (1, C, T, h, w)
        z = torch.cat(zs, 0).to(self.device)
        return self.patched.model.process_latent_in(z).float()

    def velocity(self, x: Tensor, cond: Tensor, tau: Tensor, cams: Tensor) -> Tensor:
        return self.runner(x.to(self.device), cond.to(self.device), tau.to(self.device), cams.to(self.device))

    def save_adapter(self, path: Path) -> None:
        """The adapter file; with LoRA also ``<stem>_lora.safetensors`` (host LoRA format) beside it.
        Call it on every rank (under FSDP it gathers the shards); rank 0 writes."""
        rank0 = not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
        sd = gather_full(self.adapter.state_dict(), keep=rank0)
        lora = {k: gather_full({"up": m.up, "down": m.down}, keep=rank0) for k, m in self.loras.items()}
        if rank0:
            save_adapter(self.adapter, path, state_dict=sd)
            if self.loras:
                save_lora(self.loras, Path(path).with_name(Path(path).stem + "_lora.safetensors"), lora)


def init_distributed() -> bool:
    """Join the torchrun process group (``WORLD_SIZE`` > 1); NCCL on CUDA, gloo otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group(backend=backend)
    return True


def _context(text_encoder: str | None, context_file: str | None, prompt: str) -> Tensor:
    if context_file is not None:
        from safetensors.torch import load_file

        d = load_file(context_file)
        if "context" not in d or d["context"].dim() != 3 or d["context"].shape[-1] != 4096:
            raise ValueError(f"--context {context_file}: needs a key 'context' of shape (1, L, 4096)")
        return d["context"]
    if text_encoder is not None:
        clip = comfy.sd.load_clip(ckpt_paths=[text_encoder], clip_type=comfy.sd.CLIPType.WAN)
        return clip.encode_from_tokens(clip.tokenize(prompt))
    return torch.zeros(1, 1, 4096)


def load_train_model(model_path: str, vae_path: str, cfg, *, device: str = "cuda", text_encoder: str | None = None,
                     context_file: str | None = None, distributed: bool = False) -> HostTrainModel:
    """Load the Wan model (Wan2.2-TI2V-5B or Wan2.1 class) and its VAE with the host's own loaders and patch them
    for training."""
    if distributed and torch.cuda.is_available():
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    dtype = torch.bfloat16 if cfg.bf16 else torch.float32
    model = comfy.sd.load_diffusion_model(model_path, model_options={"dtype": dtype})
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(vae_path))
    ctx = _context(text_encoder, context_file, cfg.prompt)
    from ..diffusion.ablation import Ablation

    return HostTrainModel(model, vae, ctx, device=device, grad_checkpointing=cfg.grad_checkpointing,
                          distributed=distributed, ablation=Ablation.named(cfg.ablation), lora_rank=cfg.lora_rank,
                          fsdp=cfg.fsdp)


class _Bar:
    def __init__(self, total: int):
        from tqdm import tqdm

        self._bar = tqdm(total=total, unit="step", dynamic_ncols=True)

    def update_to(self, done: int, total: int) -> None:
        self._bar.total = total
        self._bar.n = done
        self._bar.refresh()

    def set_description(self, text: str) -> None:
        self._bar.set_description(text.split(" ", 2)[-1])

    def close(self) -> None:
        self._bar.close()


def progress_bar(total: int) -> _Bar:
    """A tqdm bar (loss and clips/s in its description); ``update_to`` is a StepFn."""
    return _Bar(total)
