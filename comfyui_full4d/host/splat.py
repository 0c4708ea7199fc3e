"""Core ComfyUI's SPLAT type (0.33+, ``comfy_api.latest.Types.SPLAT``), detected at import.

0.3.75 has no such type: ``HAS_SPLAT`` is False there and the nodes that need it are not registered
(``MISSING_SPLAT`` says why, once, in the host's log).
"""

from __future__ import annotations

import torch
from torch import Tensor

from comfy_api.latest import io

from ..gaussians.splat import SPLAT_KEYS

HAS_SPLAT = hasattr(io, "Splat")
MISSING_SPLAT = ("comfyui-full4d: this ComfyUI has no core SPLAT type (added after 0.3.75); "
                 "Full4DSceneToSplat and the splat init of Full4DFit4DGS are not available")


def to_core(tensors: dict[str, Tensor]):
    """A core SPLAT from the render-ready tensors of ``gaussians.splat.splats_at`` (B, N, ...)."""
    from comfy_api.latest import Types

    return Types.SPLAT(*(tensors[k] for k in SPLAT_KEYS))


def item(splat, index: int = 0) -> dict[str, Tensor]:
    """Item ``index`` of a core SPLAT batch (padding removed): the SPLAT_KEYS tensors (N, ...)."""
    b = splat.positions.shape[0]
    if not 0 <= index < b:
        raise ValueError(f"splat: item {index} requested, the batch has {b}")
    n = int(splat.counts[index]) if getattr(splat, "counts", None) is not None else splat.positions.shape[1]
    return {k: torch.as_tensor(getattr(splat, k)[index, :n]).float().cpu() for k in SPLAT_KEYS}
