"""Readers for public synchronized multi-view capture formats (docs/cameras.md, docs/training.md).

``open_capture(folder, format="auto")`` reads one capture folder into a ``Capture`` in the
project's conventions (OpenCV world-to-camera, pixel centres at +0.5, undistortion model kept for
the frames). ``load_multiview`` turns a view / frame selection into a view-major frame grid and a
``Rig`` in scene units (what ``Full4DLoadMultiView`` returns); ``convert`` writes the training
dataset format (``python -m comfyui_full4d.dataset convert``).

| format | folder holds |
|---|---|
| ``n3dv`` | ``poses_bounds.npy`` + ``camXX.mp4`` (Neural 3D Video / DyNeRF) |
| ``recammaster`` | ``videos/camNN.mp4`` + ``cameras/camera_extrinsics.json`` (MultiCamVideo, SynCamVideo) |
| ``panoptic`` | ``calibration_<seq>.json`` + ``hdVideos/`` / ``vgaVideos/`` (CMU Panoptic Studio) |
| ``dycheck`` | ``dataset.json`` + ``metadata.json`` + ``camera/`` + ``rgb/`` (DyCheck iPhone, Nerfies) |
| ``full4d`` | ``cameras.json`` + videos: this pack's training scene format (``dataset.py``), e.g. your own rig |
"""

from __future__ import annotations

import os
from pathlib import Path

from . import dycheck, full4d, n3dv, panoptic, recammaster
from .base import Capture, CaptureError, FrameSource, View, parse_views

__all__ = ["FORMATS", "Capture", "CaptureError", "FrameSource", "View", "open_capture", "detect_format",
           "parse_views"]

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


from .load import MultiView, Selection, capture_rig, load_multiview, select  # noqa: E402  (needs open_capture)

__all__ += ["MultiView", "Selection", "capture_rig", "load_multiview", "select"]
