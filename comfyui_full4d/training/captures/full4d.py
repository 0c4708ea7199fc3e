"""This pack's own scene folder (``cameras.json`` + one video per camera, ``dataset.py``): the
training dataset format, also what ``convert`` writes. Cameras are ours already (OpenCV,
world-to-camera, pixel centres at +0.5, pinhole); the file is validated by ``dataset.load_scene``."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .base import Capture, CaptureError, FrameSource, View, pose_matrix, where

__all__ = ["matches", "read"]


def matches(root: Path) -> bool:
    return (root / "cameras.json").is_file()


def read(root: Path, label: str) -> Capture:
    from ..dataset import load_scene

    try:
        scene = load_scene(root)
    except ValueError as e:
        raise CaptureError(str(e).replace(str(root), label)) from None
    units = json.loads((root / "cameras.json").read_text()).get("units", "as given in cameras.json")
    cams = scene.cameras.to(torch.float64)
    views = tuple(View(name=n, frames=FrameSource(video=v), K=cams.K[i], w2c=pose_matrix(cams.R[i], cams.t[i])[None],
                       width=cams.width, height=cams.height, fps=scene.fps)
                  for i, (n, v) in enumerate(zip(scene.names, scene.videos)))
    if not views:
        raise CaptureError(f"{where(label, 'cameras.json')}: no cameras")
    return Capture(format="full4d", label=label, views=views, fps=scene.fps, units=str(units))
