"""The nano Full-4D models, built from the host's own classes (``training/nano.py`` trains them).

* VAE: ``comfy.ldm.wan.vae.WanVAE`` (the Wan2.1 class: 16 latent channels, x8 space, x4 time) at width
  ``NanoSpec.vae_dim``; the host's VAE loader reads that width from ``decoder.head.0.gamma``, so the file
  loads through core ``Load VAE`` unchanged.
* Base: ``comfy.ldm.wan.model.WanModel`` at ``dim`` / ``ffn_dim`` / ``num_layers`` with 16 input and output
  channels: the host detects it as ``WAN21_T2V`` (``num_heads = dim // 128``, text dim 4096), so core
  ``Load Diffusion Model`` loads it.
* Adapter: the pack's own ``Full4DAdapter`` for that base (``host.patch.make_adapter``).

Both host classes skip weight init (``comfy.ops.disable_weight_init``), so ``init_vae_`` / ``init_base_``
initialise them explicitly: PyTorch's default uniform for weights, zero biases, and the last layer of every
residual branch at zero (VAE: each residual block's second conv and the attention projection; base: the
head, as Wan's own init), so that training starts from identity blocks.

``HostVAETrainModel`` and ``HostBaseTrainModel`` give the trainer's stages (``training.stages``) what they
need from these host objects; weights are saved in the host's key layout with a metadata header.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor, nn

import comfy.latent_formats
import comfy.ldm.wan.model as wan
import comfy.ldm.wan.vae as wan_vae
import comfy.ops

from ..common.io import save_tensors
from ..diffusion.nano import NANO, NanoSpec, empty_context

__all__ = ["build_vae", "build_base", "init_vae_", "init_base_", "save_model", "load_vae", "load_base",
           "HostVAETrainModel", "HostBaseTrainModel"]


def build_vae(spec: NanoSpec = NANO, seed: int = 0) -> wan_vae.WanVAE:
    """The host's Wan2.1-class VAE at ``spec.vae_dim`` (the loader's fixed layout otherwise), initialised."""
    vae = wan_vae.WanVAE(dim=spec.vae_dim, z_dim=spec.z_dim, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                         attn_scales=[], temperal_downsample=[False, True, True], dropout=0.0)
    return init_vae_(vae, seed)


def build_base(spec: NanoSpec = NANO, seed: int = 0) -> wan.WanModel:
    """The host's WanModel at the nano size (16 channels in and out: a Wan2.1-class t2v model), initialised."""
    m = wan.WanModel(model_type="t2v", patch_size=(1, 2, 2), in_dim=spec.z_dim, out_dim=spec.z_dim, dim=spec.dim,
                     ffn_dim=spec.ffn_dim, freq_dim=spec.freq_dim, text_dim=spec.text_dim, num_heads=spec.num_heads,
                     num_layers=spec.num_layers, qk_norm=True, cross_attn_norm=True, eps=1e-6, device="cpu",
                     dtype=torch.float32, operations=comfy.ops.disable_weight_init)
    return init_base_(m, seed)


def _uniform_(p: Tensor, g: torch.Generator) -> None:
    bound = 1 / math.sqrt(math.prod(p.shape[1:]))
    p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * bound)


@torch.no_grad()
def init_vae_(vae: nn.Module, seed: int = 0) -> nn.Module:
    """Weights U(+-1/sqrt(fan_in)), biases 0, norm gains 1; each residual block's last conv and each attention
    projection 0 (the blocks start as their shortcut)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(vae.named_parameters()):
        if p.dim() >= 2:
            _uniform_(p, g)
        elif "gamma" in name or name.endswith("weight"):
            p.fill_(1.0)
        else:
            p.zero_()
    for m in vae.modules():
        if isinstance(m, wan_vae.ResidualBlock):
            m.residual[-1].weight.zero_()
        elif isinstance(m, wan_vae.AttentionBlock):
            m.proj.weight.zero_()
    return vae


@torch.no_grad()
def init_base_(m: wan.WanModel, seed: int = 0) -> wan.WanModel:
    """Wan's own init: linears and the patch embedding xavier-uniform with zero biases, text and time embeddings
    N(0, 0.02^2), modulations N(0, 1/dim), norms 1, the output head 0."""
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(m.named_parameters()):
        if name.startswith("head.head"):
            p.zero_()
        elif name.endswith("modulation"):
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(m.dim))
        elif "norm" in name:
            p.fill_(1.0) if name.endswith("weight") else p.zero_()
        elif p.dim() >= 2 and (name.startswith("text_embedding") or name.startswith("time_embedding")):
            p.copy_(0.02 * torch.randn(p.shape, generator=g))
        elif p.dim() >= 2:
            fan_in, fan_out = math.prod(p.shape[1:]), p.shape[0] * math.prod(p.shape[2:])
            bound = math.sqrt(6 / (fan_in + fan_out))
            p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * bound)
        else:
            p.zero_()
    return m


def save_model(module: nn.Module, path: str | Path, *, stage: str, spec: NanoSpec = NANO,
               state_dict: dict[str, Tensor] | None = None, dtype: torch.dtype = torch.float32,
               metadata: dict[str, str] | None = None) -> None:
    """The host key layout (what core's loaders read), in ``dtype``, with the architecture and training stage
    in the safetensors header."""
    sd = module.state_dict() if state_dict is None else state_dict
    meta = {"format": "full4d-nano", "stage": stage, **{k: str(v) for k, v in asdict(spec).items()},
            **(metadata or {})}
    save_tensors(path, {k: v.detach().to(dtype) for k, v in sd.items()}, metadata=meta)


def load_vae(path: str | Path):
    """A VAE file through the host's own loader (``comfy.sd.VAE``: what core Load VAE runs)."""
    import comfy.sd
    import comfy.utils

    return comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(path)))


def load_base(path: str | Path, dtype: torch.dtype = torch.float32):
    """A diffusion model file through the host's own loader (what core Load Diffusion Model runs): a
    ModelPatcher."""
    import comfy.sd

    return comfy.sd.load_diffusion_model(str(path), model_options={"dtype": dtype})


_LATENT = comfy.latent_formats.Wan21()


class HostVAETrainModel:
    """``training.stages.VAETrainModel`` over the host's WanVAE: pixels in [-1, 1] (the host VAE's
    ``process_input``), latents normalised as the host's Wan2.1 latent format does before the model sees them
    (``(z - mean) / std``, channel constants of the public Wan2.1 VAE), so the trained VAE's latents are
    unit-scaled where the diffusion model reads them."""

    def __init__(self, vae: wan_vae.WanVAE, device: str | torch.device = "cpu", metadata: dict | None = None):
        self.device = torch.device(device)
        self.vae = vae.to(self.device).train()
        self.trainable = self.vae
        self.metadata = metadata or {}
        self.mean = _LATENT.latents_mean.to(self.device)
        self.std = _LATENT.latents_std.to(self.device)

    def encode(self, x: Tensor) -> Tensor:
        """x (B, 3, L, H, W) in [-1, 1] -> normalised latents (B, 16, T, H/8, W/8)."""
        return (self.vae.encode(x.to(self.device)) - self.mean) / self.std

    def decode(self, z: Tensor) -> Tensor:
        """normalised latents (B, 16, T, h, w) -> (B, 3, 4T-3, 8h, 8w) in about [-1, 1]."""
        return self.vae.decode(z * self.std + self.mean)

    def save(self, path: Path, state_dict: dict[str, Tensor] | None = None) -> None:
        save_model(self.vae, path, stage="vae", state_dict=state_dict, metadata=self.metadata)


class HostBaseTrainModel:
    """``training.stages.BaseTrainModel``: the host's WanModel trained whole, on the fixed empty text
    conditioning, timesteps ``1000 tau`` (the host's flow ``model_sampling.timestep`` with multiplier 1000)."""

    def __init__(self, model: wan.WanModel, device: str | torch.device = "cpu", metadata: dict | None = None):
        self.device = torch.device(device)
        self.model = model.to(self.device).train()
        self.trainable = self.model
        self.metadata = metadata or {}
        self.context = empty_context().to(self.device)

    def velocity(self, x: Tensor, tau: Tensor) -> Tensor:
        """x (B, C, T, h, w) noised latents (model space), tau (B,) -> v (B, C, T, h, w)."""
        ctx = self.context.expand(x.shape[0], -1, -1)
        return self.model(x.to(self.device), tau.to(self.device) * 1000.0, ctx)

    def save(self, path: Path, state_dict: dict[str, Tensor] | None = None) -> None:
        save_model(self.model, path, stage="base", state_dict=state_dict, metadata=self.metadata)
