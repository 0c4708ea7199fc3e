"""Which reader reads a capture folder: ``FORMATS`` (name -> reader module), ``detect_format`` and
``open_capture`` (one folder -> a ``Capture`` in the project's conventions)."""

from __future__ import annotations

import os
from pathlib import Path

from . import dycheck, full4d, n3dv, panoptic, recammaster
from .base import Capture, CaptureError

__all__ = ["FORMATS", "detect_format", "open_capture"]

FORMATS = {"n3dv": n3dv, "recammaster": recammaster, "panoptic": panoptic, "dycheck": dycheck, "full4d": full4d}
_LAYOUTS = ("n3dv: poses_bounds.npy + camXX.mp4; recammaster: cameras/camera_extrinsics.json + videos/camNN.mp4; "
            "panoptic: calibration_<seq>.json + hdVideos/; dycheck: dataset.json + metadata.json + camera/ + rgb/; "
            "full4d: cameras.json + videos (docs/training.md)")


def detect_format(root: str | os.PathLike, label: str | None = None) -> str:
    """The one format whose layout ``root`` has; CaptureError when none or several match."""
    root = Path(root)
    label = label or str(root)
    if not root.is_dir():
        raise CaptureError(f"{label}: not a folder")
    found = [name for name, mod in FORMATS.items() if mod.matches(root)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise CaptureError(f"{label}: not a known multi-view capture layout. Expected one of: {_LAYOUTS}")
    raise CaptureError(f"{label}: matches several layouts {found}; choose the format explicitly")


def open_capture(root: str | os.PathLike, format: str = "auto", label: str | None = None, **kw) -> Capture:
    """Read a capture folder. format: ``auto`` or a key of ``FORMATS``; label: how errors name the
    folder (the path as the user gave it); kw: format options (``focal_mm`` for recammaster)."""
    root = Path(root)
    label = label or str(root)
    if format == "auto":
        format = detect_format(root, label)
    if format not in FORMATS:
        raise CaptureError(f"format={format!r}: choose auto or one of {list(FORMATS)}")
    if not root.is_dir():
        raise CaptureError(f"{label}: not a folder")
    mod = FORMATS[format]
    if not mod.matches(root):
        raise CaptureError(f"{label}: not a {format} capture. Expected: "
                           f"{next(s for s in _LAYOUTS.split('; ') if s.startswith(format))}")
    return mod.read(root, label, **kw)
