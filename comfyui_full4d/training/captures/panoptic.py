"""CMU Panoptic Studio: ``calibration_<seq>.json`` + ``hdVideos/hd_PP_NN.mp4`` / ``vgaVideos/vga_PP_NN.mp4``.

The calibration lists ``cameras[]`` with ``name`` ("PP_NN", panel and node), ``type`` ("hd",
"vga", "kinect-color"), ``resolution`` [W, H], ``K`` (3x3), ``distCoef`` [k1, k2, p1, p2, k3],
``R`` (3x3) and ``t`` (3x1) in **centimetres**. panoptic-toolbox projects ``x = K distort(R X + t)``
with OpenCV's distortion model and pixel centres at integer coordinates, so: world and camera axes
are OpenCV's already (the studio's y axis points down), ``t_m = t / 100``, and our K (centres at
+0.5) is ``K`` with ``cx + 0.5, cy + 0.5``. Frames are undistorted with that model. HD cameras
(29.97 fps) and VGA cameras (25 fps) run at different rates: a rig takes one kind.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .base import Capture, CaptureError, FrameSource, View, pose_matrix, video_info, where

__all__ = ["CM_PER_UNIT", "VIDEO_DIRS", "matches", "read", "calibration_file"]

CM_PER_UNIT = 100.0
VIDEO_DIRS = {"hd": ("hdVideos", "hd_{}.mp4"), "vga": ("vgaVideos", "vga_{}.mp4")}


def calibration_file(root: Path) -> Path | None:
    files = sorted(root.glob("calibration_*.json"))
    return files[0] if len(files) == 1 else None


def matches(root: Path) -> bool:
    return calibration_file(root) is not None and any((root / d).is_dir() for d, _ in VIDEO_DIRS.values())


def _field(cam: dict, key: str, shape: tuple[int, ...], rel: str, label: str, i: int) -> torch.Tensor:
    try:
        x = torch.tensor(cam[key], dtype=torch.float64)
    except (KeyError, TypeError, ValueError):
        raise CaptureError(f"{where(label, rel)}: cameras[{i}] ({cam.get('name')!r}): {key} is missing or not "
                           "numeric") from None
    if x.numel() != int(torch.tensor(shape).prod()) or not bool(torch.isfinite(x).all()):
        raise CaptureError(f"{where(label, rel)}: cameras[{i}] ({cam.get('name')!r}): {key} must be {shape} finite "
                           f"numbers, got shape {tuple(x.shape)}")
    return x.reshape(shape)


def read(root: Path, label: str) -> Capture:
    """A Panoptic sequence folder -> Capture (metres, distorted frames, HD views by default)."""
    path = calibration_file(root)
    if path is None:
        found = sorted(p.name for p in root.glob("calibration_*.json"))
        raise CaptureError(f"{label}: expected exactly one calibration_<sequence>.json, found {found}")
    rel = path.name
    try:
        cams = json.loads(path.read_text()).get("cameras")
    except (OSError, json.JSONDecodeError, AttributeError) as e:
        raise CaptureError(f"{where(label, rel)}: not a Panoptic calibration JSON ({e})") from None
    if not isinstance(cams, list) or not cams:
        raise CaptureError(f"{where(label, rel)}: 'cameras' must be a non-empty list")
    views = []
    for i, cam in enumerate(cams):
        kind = cam.get("type") if isinstance(cam, dict) else None
        if kind not in VIDEO_DIRS:
            continue  # kinect-color and others: not in this layout
        name = str(cam.get("name"))
        folder, pattern = VIDEO_DIRS[kind]
        video = root / folder / pattern.format(name)
        if not video.is_file():
            continue  # downloads usually hold a subset of the cameras
        K = _field(cam, "K", (3, 3), rel, label, i)
        dist = _field(cam, "distCoef", (5,), rel, label, i)
        R = _field(cam, "R", (3, 3), rel, label, i)
        t = _field(cam, "t", (3,), rel, label, i) / CM_PER_UNIT
        K = K.clone()
        K[0, 2] += 0.5
        K[1, 2] += 0.5  # OpenCV pixel centres (integers) -> ours (+0.5)
        h, w, fps = video_info(video, label, f"{folder}/{video.name}")
        W, H = (int(x) for x in cam.get("resolution", (w, h)))
        if abs(h / w - H / W) > 0.01:
            raise CaptureError(f"{where(label, folder + '/' + video.name)}: the video is {w}x{h} but {rel} says "
                               f"{W}x{H} for camera {name!r}")
        K = torch.diag(torch.tensor([w / W, h / H, 1.0], dtype=torch.float64)) @ K
        views.append(View(name=name, frames=FrameSource(video=video), K=K, w2c=pose_matrix(R, t)[None], width=w,
                          height=h, dist=dist if bool(dist.abs().max() > 0) else None, fps=fps))
    if not views:
        raise CaptureError(f"{label}: none of the {len(cams)} cameras in {rel} has a video (expected "
                           "hdVideos/hd_00_00.mp4 ... or vgaVideos/vga_01_01.mp4 ...)")
    hd = tuple(v.name for v in views if v.frames.video.parent.name == "hdVideos")
    return Capture(format="panoptic", label=label, views=tuple(views), fps=views[0].fps or 29.97, units="metres",
                   default=hd if hd and len(hd) < len(views) else ())
