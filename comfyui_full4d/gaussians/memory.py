"""Device memory of the 4DGS fit: an estimate to ask the host for, and out-of-memory as an actionable error.

``fit_bytes`` is the order of magnitude the fit needs on its device, used to ask the host's memory manager
to make room before the fit starts (``host.device.make_room``); it is an estimate, not a limit. Counted:

* the training views (V, T, H, W, 3) float32;
* per Gaussian, its 14 + 3 (d+1)^2 parameters times 4 (value, gradient, two Adam moments) and ~6 more
  copies for one differentiable render (the deformed Gaussians and their colours);
* per rendered image ~48 float maps of H x W (image, alpha, the SSIM maps and their gradients);
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

__all__ = ["fit_bytes", "oom_as_error", "oom_message"]

_GAUSSIAN_COPIES = 10  # value + grad + 2 Adam moments + ~6 render-time copies
_IMAGE_MAPS = 48


def fit_bytes(views: int, frames: int, height: int, width: int, max_gaussians: int, sh_degree: int = 3,
              fmd: bool = False) -> int:
    """Estimated device bytes of a fit (module docstring) of ``views`` x ``frames`` images of height x width."""
    per_gaussian = (14 + 3 * (int(sh_degree) + 1) ** 2) * 4 * _GAUSSIAN_COPIES
    renders = 1 + (int(frames) if fmd else 0)
    image = int(height) * int(width) * 4 * _IMAGE_MAPS
    return int(views * frames * height * width * 3 * 4 + int(max_gaussians) * per_gaussian * renders
               + image * renders)


def oom_message(views, config, device, detail: str) -> str:
    """The RuntimeError text for a fit of views (V, T, H, W, 3) under ``config`` (FitConfig) that ran out."""
    V, T, H, W = (tuple(views.shape[:4]) if hasattr(views, "shape") and views.dim() == 5 else (0, 0, 0, 0))
    n = int(config.densify.max_gaussians)
    need = fit_bytes(V, T, H, W, n, config.sh_degree, config.lambda_fmd > 0) / 2**30
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
