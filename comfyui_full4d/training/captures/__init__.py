"""Readers for public synchronized multi-view capture formats (docs/cameras.md, docs/training.md).

``open_capture(folder, format="auto")`` reads one capture folder into a ``Capture`` in the
project's conventions (OpenCV world-to-camera, pixel centres at +0.5, undistortion model kept for
the frames). ``load_multiview`` turns a view / frame selection into a view-major frame grid and a
``Rig`` in scene units (what ``Full4DLoadMultiView`` returns); ``convert`` writes the training
dataset format (``python -m comfyui_full4d.training.cli convert``).

| format | folder holds |
|---|---|
| ``n3dv`` | ``poses_bounds.npy`` + ``camXX.mp4`` (Neural 3D Video / DyNeRF) |
| ``recammaster`` | ``videos/camNN.mp4`` + ``cameras/camera_extrinsics.json`` (MultiCamVideo, SynCamVideo) |
| ``panoptic`` | ``calibration_<seq>.json`` + ``hdVideos/`` / ``vgaVideos/`` (CMU Panoptic Studio) |
| ``dycheck`` | ``dataset.json`` + ``metadata.json`` + ``camera/`` + ``rgb/`` (DyCheck iPhone, Nerfies) |
| ``full4d`` | ``cameras.json`` + videos: this pack's training scene format (``dataset.py``), e.g. your own rig |
"""

from .base import Capture, CaptureError, FrameSource, View, parse_views
from .formats import FORMATS, detect_format, open_capture
from .load import MultiView, Selection, capture_rig, load_multiview, select

__all__ = ["FORMATS", "Capture", "CaptureError", "FrameSource", "View", "open_capture", "detect_format",
           "parse_views", "MultiView", "Selection", "capture_rig", "load_multiview", "select"]
