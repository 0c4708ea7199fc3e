"""Neural 3D Video (N3DV / DyNeRF): ``camXX.mp4`` + ``poses_bounds.npy`` (LLFF).

``poses_bounds.npy`` is (N, 17), one row per video in sorted file-name order (as every N3DV
loader pairs them): 15 numbers are a 3x5 matrix ``[R | C | hwf]`` and the last two the near and
far scene depth of that camera. ``R`` is camera-to-world with LLFF's column order
**[down, right, backwards]**, ``C`` the camera centre, ``hwf = [H, W, f]`` the image height, width
and focal length in pixels (principal point at the image centre). The OpenCV camera-to-world
rotation (columns right, down, forward) is ``R_cv = R_llff @ LLFF_TO_CV``; the world frame is
kept (COLMAP's, arbitrary scale). ``cam00`` is the view the N3DV benchmarks hold out.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .base import Capture, CaptureError, FrameSource, View, pose_matrix, video_info, where

__all__ = ["LLFF_TO_CV", "llff_to_w2c", "w2c_to_llff", "matches", "read"]

# c2w columns [down, right, back] @ LLFF_TO_CV = columns [right, down, forward] (its own inverse)
LLFF_TO_CV = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]], dtype=torch.float64)
POSES = "poses_bounds.npy"


def llff_to_w2c(poses: Tensor) -> tuple[Tensor, Tensor]:
    """LLFF 3x5 poses (N, 3, 5) -> world-to-camera (N, 4, 4) OpenCV and hwf (N, 3) = [H, W, f].

    ``R_c2w = P[:, :3] @ LLFF_TO_CV``, ``C = P[:, 3]``, ``w2c = [R_c2w^T | -R_c2w^T C]``."""
    P = poses.double()
    R_c2w = P[:, :, :3] @ LLFF_TO_CV
    R = R_c2w.transpose(-1, -2)
    t = -(R @ P[:, :, 3:4])[..., 0]
    return pose_matrix(R, t), P[:, :, 4]


def w2c_to_llff(w2c: Tensor, hwf: Tensor) -> Tensor:
    """Inverse of ``llff_to_w2c``: (N, 4, 4), (N, 3) -> (N, 3, 5)."""
    R = w2c[:, :3, :3].double()
    C = -(R.transpose(-1, -2) @ w2c[:, :3, 3:4].double())
    R_llff = R.transpose(-1, -2) @ LLFF_TO_CV  # LLFF_TO_CV is its own inverse
    return torch.cat([R_llff, C, hwf.double()[..., None]], dim=-1)


def matches(root: Path) -> bool:
    return (root / POSES).is_file()


def read(root: Path, label: str) -> Capture:
    """An N3DV scene folder -> Capture (units: COLMAP's, arbitrary scale)."""
    path = root / POSES
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise CaptureError(f"{where(label, POSES)}: cannot be read as a .npy array ({e})") from None
    if arr.ndim != 2 or arr.shape[1] != 17 or not np.isfinite(arr).all():
        raise CaptureError(f"{where(label, POSES)}: expected a finite N x 17 array (LLFF 3x5 pose + near, far per "
                           f"camera), got shape {arr.shape}")
    videos = sorted(p for p in root.iterdir() if re.fullmatch(r"cam\d+\.mp4", p.name))
    if len(videos) != arr.shape[0]:
        raise CaptureError(f"{where(label, POSES)}: {arr.shape[0]} camera rows but {len(videos)} camXX.mp4 videos "
                           f"({[v.name for v in videos]}); N3DV pairs the rows with the sorted videos, so every "
                           "camera needs its video (put back the missing ones, or remove their rows)")
    w2c, hwf = llff_to_w2c(torch.from_numpy(arr[:, :15].reshape(-1, 3, 5)))
    views = []
    for i, video in enumerate(videos):
        H, W, f = (float(x) for x in hwf[i])
        h, w, fps = video_info(video, label, video.name)
        if abs(h / w - H / W) > 0.01:
            raise CaptureError(f"{where(label, video.name)}: the video is {w}x{h} but {POSES} row {i} says "
                               f"{W:.0f}x{H:.0f} (another aspect ratio); use the videos that came with these poses")
        s = w / W  # videos may be downsampled copies: scale K with them
        K = torch.tensor([[f * s, 0, w / 2], [0, f * h / H, h / 2], [0, 0, 1]], dtype=torch.float64)
        near, far = (float(x) for x in arr[i, 15:17])
        views.append(View(name=video.stem, frames=FrameSource(video=video), K=K, w2c=w2c[i:i + 1], width=w, height=h,
                          bounds=(near, far) if 0 < near < far else None, fps=fps))
    fps = views[0].fps or 30.0
    return Capture(format="n3dv", label=label, views=tuple(views), fps=fps, units="arbitrary (COLMAP)",
                   held_out=("cam00",) if any(v.name == "cam00" for v in views) else ())

