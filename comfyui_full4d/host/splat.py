"""Core ComfyUI's SPLAT type (0.33+, ``comfy_api.latest.Types.SPLAT``), detected at import.

0.3.75 has no such type: ``HAS_SPLAT`` is False there and the nodes that need it are not registered
(``MISSING_SPLAT`` says why, once, in the host's log).
"""

from __future__ import annotations

import torch
from torch import Tensor

from comfy_api.latest import io

from ..gaussians.export import FrameBytes
from ..gaussians.splat import SPLAT_KEYS

HAS_SPLAT = hasattr(io, "Splat")
MISSING_SPLAT = ("comfyui-full4d: this ComfyUI has no core SPLAT type (added after 0.3.75); "
                 "Full4DSceneToSplat, the splat init of Full4DFit4DGS and Full4DSave4DGS's spz / ksplat formats "
                 "are not available")
# per-frame file formats of Full4DSave4DGS: ply is our own writer (any host), the others core's SplatToFile3D
EXPORT_FORMATS = ("ply", "spz", "ksplat")


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


def core_format_error(fmt: str) -> str | None:
    """Why per-frame format ``fmt`` cannot be written on this host (None when it can)."""
    if fmt not in EXPORT_FORMATS:
        return f"format: {fmt!r} is not one of {EXPORT_FORMATS}"
    if fmt != "ply" and not HAS_SPLAT:
        return (f"format: {fmt!r} files are written by core ComfyUI's splat writers (SplatToFile3D, ComfyUI 0.33+), "
                "which this ComfyUI lacks; choose ply or update ComfyUI")
    return None


def core_frame_bytes(fmt: str) -> FrameBytes:
    """One frame's file in format ``fmt`` by core's ``SplatToFile3D`` node (its public inputs and output)."""
    error = core_format_error(fmt)
    if error:
        raise ValueError(error)
    import nodes

    writer = nodes.NODE_CLASS_MAPPINGS.get("SplatToFile3D")
    if writer is None:
        raise ValueError(f"format: core's SplatToFile3D node is not loaded in this ComfyUI, so {fmt!r} cannot be "
                         "written; choose ply")

    def frame_bytes(positions: Tensor, scales: Tensor, rotations: Tensor, opacities: Tensor, sh: Tensor) -> bytes:
        splat = to_core({k: v[None].float().cpu() for k, v in zip(SPLAT_KEYS, (positions, scales, rotations,
                                                                                opacities, sh))})
        return writer.execute(splat=splat, format=fmt).result[0].get_bytes()

    return frame_bytes
