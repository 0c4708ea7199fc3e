"""Where the pack's stages run inside the host: the host's torch device, its intermediate device, its VRAM.

* ``compute_device()``: ``comfy.model_management.get_torch_device()`` (CUDA when the host has one; the CPU
  under ``--cpu``), the device the engine's stages get as their ``device`` argument;
* ``output_device()``: ``comfy.model_management.intermediate_device()``, where IMAGE / MASK outputs and
  the Scene4D go between nodes (the CPU in ComfyUI 0.3.x, as the host's own nodes do);
* ``make_room(bytes, device)``: ask the host's memory manager to unload what it holds on ``device`` until
  ``bytes`` are free (``free_memory``; a no-op on the CPU), so a diffusion model loaded earlier in the
  graph does not crowd the 4D fit;
* ``load_teacher(model, bytes)``: load an FMD teacher through ``load_models_gpu``, keeping ``bytes`` free
  next to it for the fit's own tensors.
"""

from __future__ import annotations

import comfy.model_management as mm
import torch

__all__ = ["compute_device", "output_device", "make_room", "load_teacher"]


def compute_device() -> torch.device:
    """The host's torch device (``get_torch_device``)."""
    return mm.get_torch_device()


def output_device() -> torch.device:
    """The host's device for tensors passed between nodes (``intermediate_device``)."""
    return mm.intermediate_device()


def make_room(bytes_needed: int, device: torch.device) -> None:
    """Free ``bytes_needed`` on ``device`` by unloading host models (nothing to do on the CPU)."""
    if torch.device(device).type != "cpu":
        mm.free_memory(int(bytes_needed), device)


def load_teacher(model, bytes_needed: int) -> None:
    """Load the patched MODEL (and what it needs) onto its load device with ``bytes_needed`` left free."""
    mm.load_models_gpu([model] + model.get_nested_additional_models(), memory_required=int(bytes_needed))
