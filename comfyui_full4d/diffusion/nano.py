"""Sizes of the nano Full-4D, the pack's embedded demonstration model (``models/nano/README.md``), and the
one text conditioning it is trained and sampled with. Plain torch: ``host.nano`` builds the host classes at
these sizes, ``training.nano`` trains them."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["NanoSpec", "NANO", "NANO_FILES", "EMPTY_CONTEXT_SHAPE", "empty_context"]

# the embedded model's files in models/nano/ (written by ``training.nano ship``, listed by the host's loaders)
NANO_FILES = {"vae": "full4d_nano_vae.safetensors", "base": "full4d_nano_base.safetensors",
              "adapter": "full4d_nano_adapter.safetensors"}

EMPTY_CONTEXT_SHAPE = (1, 1, 4096)  # one zero umT5-sized token: the nano models' only text conditioning


def empty_context() -> Tensor:
    """(1, 1, 4096) zeros: the fixed text conditioning of the nano models (``Full4DEmptyText``)."""
    return torch.zeros(EMPTY_CONTEXT_SHAPE)


@dataclass(frozen=True)
class NanoSpec:
    """Architecture and data size of the nano Full-4D.

    vae_dim: width of the Wan2.1-class VAE (16 latent channels, x8 space, x4 time); dim / ffn_dim /
    num_layers: the WanModel (heads of 128, as the host's detection assumes); height x width, frames: the
    videos it is trained on (latents 12 x 20 x 3)."""

    vae_dim: int = 16
    z_dim: int = 16
    dim: int = 256
    ffn_dim: int = 1024
    num_layers: int = 6
    freq_dim: int = 256
    text_dim: int = 4096
    height: int = 96
    width: int = 160
    frames: int = 9

    @property
    def num_heads(self) -> int:
        return self.dim // 128


NANO = NanoSpec()
