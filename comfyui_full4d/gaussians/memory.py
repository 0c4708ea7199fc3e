"""Device memory of the 4DGS fit: an estimate to ask the host for, and out-of-memory as an actionable error.

``fit_bytes`` is what the fit needs on its device, used to ask the host's memory manager to make room before
the fit starts (``host.device.make_room``); it is an estimate, not a limit: the peak of a CPU fit lies within a
factor 2 of it (measured, ``tests/test_fit_device.py``). Counted, in float32:

* the training views (V, T, H, W, 3);
* per Gaussian, its P = 14 + 3 (d+1)^2 parameters times 4 (value, gradient, two Adam moments);
* per Gaussian and render, what autograd keeps of the deformation (``HexPlane.forward``: per resolution and
  plane the sample and the running product of C features and the 2 grid coordinates, the concatenated
  features, the MLP's hidden layers; ``deform_floats``) and ``_RENDER_FLOATS`` of the rasteriser (projection,
  covariances, the (tile, Gaussian) pairs of a Gaussian a few pixels wide);
* the HexPlane's own planes and MLP times 4 (value, gradient, two Adam moments);
* per rendered image ~128 float maps of H x W (the CPU compositor's per-tile buffers, image, alpha, the SSIM maps
  and their gradients; gsplat's CUDA rasteriser needs fewer, so on a GPU this errs on the safe side);
* with FMD, one render of each of the T frames at once (the encoder sees the whole video).

``oom_as_error`` turns a ``torch.OutOfMemoryError`` raised anywhere inside the fit into a RuntimeError that
names ``max_gaussians`` and the image size (the two inputs that set the fit's memory), after letting the
failed call's tensors go and emptying the device cache, so the graph's other nodes can still run.
"""

from __future__ import annotations

import functools
import gc
import inspect

import torch

from .model import HexPlaneConfig

__all__ = ["fit_bytes", "deform_floats", "oom_as_error", "oom_message"]

_PARAM_COPIES = 4  # value + gradient + 2 Adam moments
_RENDER_FLOATS = 450  # rasteriser activations per Gaussian (a CPU fit at SH 0 measured ~1200 floats in all)
_IMAGE_MAPS = 128  # per pixel of a render: the CPU compositor's tiles and the loss maps (gsplat needs fewer)


def deform_floats(config: HexPlaneConfig = HexPlaneConfig()) -> int:
    """Floats per Gaussian autograd keeps of one ``HexPlane.forward`` (module docstring): 664 for the default."""
    R, C = len(config.multires), int(config.feature_dim)
    return R * 6 * (2 * C + 2) + R * C + (2 * int(config.depth) + 1) * int(config.hidden) + 32


def _hexplane_floats(config: HexPlaneConfig) -> int:
    """Parameters of the HexPlane: per resolution 3 spatial planes (base*m)^2 and 3 time planes base*m x time_res of
    C features, and the MLP (about depth + 1 layers of hidden^2)."""
    C, b, tr = int(config.feature_dim), int(config.base_res), int(config.time_res)
    planes = sum(3 * C * (b * m) ** 2 + 3 * C * b * m * tr for m in config.multires)
    return planes + (int(config.depth) + 1) * int(config.hidden) * (int(config.hidden) + C * len(config.multires))


def fit_bytes(views: int, frames: int, height: int, width: int, max_gaussians: int, sh_degree: int = 3,
              fmd: bool = False, hexplane: HexPlaneConfig = HexPlaneConfig()) -> int:
    """Estimated device bytes of a fit (module docstring) of ``views`` x ``frames`` images of height x width with
    at most ``max_gaussians`` Gaussians of SH degree ``sh_degree`` and the deformation ``hexplane``."""
    params = 14 + 3 * (int(sh_degree) + 1) ** 2
    renders = 1 + (int(frames) if fmd else 0)
    per_gaussian = _PARAM_COPIES * params + renders * (deform_floats(hexplane) + _RENDER_FLOATS)
    image = int(height) * int(width) * _IMAGE_MAPS * renders
    floats = (int(views) * int(frames) * int(height) * int(width) * 3 + int(max_gaussians) * per_gaussian + image
              + _PARAM_COPIES * _hexplane_floats(hexplane))
    return int(4 * floats)


def oom_message(views, config, device, detail: str) -> str:
    """The RuntimeError text for a fit of views (V, T, H, W, 3) under ``config`` (FitConfig) that ran out."""
    V, T, H, W = (tuple(views.shape[:4]) if hasattr(views, "shape") and views.dim() == 5 else (0, 0, 0, 0))
    n = int(config.densify.max_gaussians)
    need = fit_bytes(V, T, H, W, n, config.sh_degree, config.lambda_fmd > 0, config.hexplane) / 2**30
    dev = device if device is not None else getattr(views, "device", "the device")
    return (f"4DGS fit: out of memory on {dev} with max_gaussians = {n:,} and {V} x {T} training images of "
            f"{W}x{H} (the fit needs roughly {need:.1f} GiB). Lower max_gaussians, or the image size (resize "
            "the grid before Full4DFit4DGS), or unload other models; with resume on, a rerun continues from the "
            f"last checkpoint. ({detail})")


def _empty_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def oom_as_error(fn):
    """Decorate ``fit_4dgs``: ``torch.OutOfMemoryError`` -> RuntimeError(``oom_message``) (module docstring)."""
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except torch.OutOfMemoryError as e:
            detail = (str(e).strip().splitlines() or ["out of memory"])[0][:200]
        # outside the except block the failed call's frames (and the tensors they hold) are gone
        gc.collect()
        _empty_cache()
        bound = sig.bind_partial(*args, **kwargs).arguments
        raise RuntimeError(oom_message(bound.get("views"), bound.get("config"), bound.get("device"), detail))

    return wrapper
