"""ReCamMaster MultiCamVideo and SynCamVideo: ``videos/camNN.mp4`` + ``cameras/camera_extrinsics.json``.

The scenes are rendered in Unreal Engine. ``camera_extrinsics.json`` is
``{"frame{i}": {"camNN": "[a b c d] [e f g h] [i j k l] [x y z 1] "}}``: per frame and camera the
actor's 4x4 transform in UE's row-vector layout: rows 0-2 are the camera's local X (forward),
Y (right) and Z (up) axes in world coordinates, row 3 its location in **centimetres**. UE's world
is **left-handed** (x forward, y right, z up). ``UE_TO_CV`` maps it to a right-handed OpenCV-style
world (x right, y down, z forward), ``p_cv = UE_TO_CV p_ue`` (det -1: the handedness flip), and
the same matrix maps the camera's local axes to OpenCV camera axes, so

    R_c2w = UE_TO_CV M[:3, :3]^T UE_TO_CV^T,   C = UE_TO_CV M[3, :3] / 100 (metres).

Relative poses equal ReCamMaster's own (its loader permutes the columns [1, 2, 0], negates the
new y column and divides translations by 100, leaving the world left-handed). Intrinsics: the
focal length in mm is in the dataset's folder name (``f18``, ``f24``, ``f35``, ``f50`` in
``f24_aperture5``) on a 23.76 mm square sensor: ``fx = f W / 23.76``, ``fy = f H / 23.76``,
principal point at the image centre. MultiCamVideo cameras move during a clip (only the static
ones can form a rig); SynCamVideo cameras are fixed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import Tensor

from .base import Capture, CaptureError, FrameSource, View, pose_matrix, video_info, where

__all__ = ["UE_TO_CV", "SENSOR_MM", "unreal_to_w2c", "w2c_to_unreal", "parse_matrix", "focal_from_folder",
           "matches", "read"]

# p_cv = UE_TO_CV p_ue: x_cv = y_ue (right), y_cv = -z_ue (down), z_cv = x_ue (forward)
UE_TO_CV = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
SENSOR_MM = 23.76
CM_PER_UNIT = 100.0
EXTRINSICS = "cameras/camera_extrinsics.json"
_FOCAL = re.compile(r"^f(\d+(?:\.\d+)?)(?:_|$)")


def unreal_to_w2c(M: Tensor) -> Tensor:
    """UE row-vector camera transforms (N, 4, 4) in cm -> OpenCV world-to-camera (N, 4, 4) in metres."""
    A = UE_TO_CV
    R_c2w = A @ M[:, :3, :3].double().transpose(-1, -2) @ A.T
    C = (A @ M[:, 3, :3].double()[..., None])[..., 0] / CM_PER_UNIT
    R = R_c2w.transpose(-1, -2)
    return pose_matrix(R, -(R @ C[..., None])[..., 0])


def w2c_to_unreal(w2c: Tensor) -> Tensor:
    """Inverse of ``unreal_to_w2c``: (N, 4, 4) metres -> UE row-vector transforms (N, 4, 4) in cm."""
    A = UE_TO_CV
    R = w2c[:, :3, :3].double()
    C = -(R.transpose(-1, -2) @ w2c[:, :3, 3:4].double())[..., 0]
    M = torch.zeros(w2c.shape[0], 4, 4, dtype=torch.float64)
    M[:, :3, :3] = (A.T @ R.transpose(-1, -2) @ A).transpose(-1, -2)
    M[:, 3, :3] = (A.T @ C[..., None])[..., 0] * CM_PER_UNIT
    M[:, 3, 3] = 1
    return M


def parse_matrix(text: str) -> Tensor:
    """``"[a b c d] [e f g h] ..."`` (3 or 4 rows of 3 or 4 numbers) -> (4, 4) float64, padded with the
    homogeneous row/column (as ReCamMaster's visualiser pads 3-number rows)."""
    rows = [r.split() for r in re.findall(r"\[([^\[\]]*)\]", str(text))]
    if len(rows) not in (3, 4) or any(len(r) not in (3, 4) for r in rows):
        raise ValueError(f"expected 4 rows like '[a b c d]', got {str(text)[:80]!r}")
    M = torch.eye(4, dtype=torch.float64)
    for i, r in enumerate(rows):
        M[i, :len(r)] = torch.tensor([float(x) for x in r], dtype=torch.float64)
    return M


def focal_from_folder(root: Path, levels: int = 3) -> float | None:
    """Focal length (mm) from the nearest folder named ``f<mm>...`` at or above ``root``."""
    for p in [root, *root.parents][: levels + 1]:
        m = _FOCAL.match(p.name)
        if m:
            return float(m.group(1))
    return None


def matches(root: Path) -> bool:
    return (root / EXTRINSICS).is_file()


def read(root: Path, label: str, focal_mm: float | None = None) -> Capture:
    """A MultiCamVideo / SynCamVideo scene folder -> Capture (metres, per-frame poses)."""
    path = root / EXTRINSICS
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CaptureError(f"{where(label, EXTRINSICS)}: not valid JSON ({e})") from None
    frames = {}
    for key, cams in (data.items() if isinstance(data, dict) else []):
        m = re.fullmatch(r"frame(\d+)", str(key))
        if m and isinstance(cams, dict):
            frames[int(m.group(1))] = cams
    if not frames or sorted(frames) != list(range(len(frames))):
        got = sorted(map(str, data))[:5] if isinstance(data, dict) else type(data).__name__
        raise CaptureError(f"{where(label, EXTRINSICS)}: expected keys frame0, frame1, ... with no gaps, "
                           f"each {{'camNN': '<4x4 rows>'}}; got {got}")
    names = sorted(frames[0])
    for i, cams in frames.items():
        if sorted(cams) != names:
            raise CaptureError(f"{where(label, EXTRINSICS)}: frame{i} has cameras {sorted(cams)} but frame0 has "
                               f"{names}")
    videos = root / "videos"
    listed = set(names)
    strays = sorted(p.name for p in videos.glob("*.mp4") if p.stem not in listed) if videos.is_dir() else []
    if strays:
        raise CaptureError(f"{where(label, 'videos')}: {strays} have no camera in {EXTRINSICS}; remove them or add "
                           "their extrinsics")
    if focal_mm is None:
        focal_mm = focal_from_folder(root)
    if focal_mm is None or not focal_mm > 0:
        raise CaptureError(f"{label}: the focal length is unknown: ReCamMaster keeps it in the dataset folder name "
                           "(f18_aperture10, f24_aperture5, ...); keep the scene inside that folder (or give the "
                           "focal length in mm, --focal-mm for the converter)")
    views = []
    for name in names:
        video = videos / f"{name}.mp4"
        if not video.is_file():
            raise CaptureError(f"{where(label, EXTRINSICS)}: camera {name!r} has no video videos/{name}.mp4")
        try:
            M = torch.stack([parse_matrix(frames[i][name]) for i in range(len(frames))])
        except ValueError as e:
            raise CaptureError(f"{where(label, EXTRINSICS)}: camera {name!r}: {e}") from None
        if not bool(torch.isfinite(M).all()):
            raise CaptureError(f"{where(label, EXTRINSICS)}: camera {name!r} has NaN/inf entries")
        h, w, fps = video_info(video, label, f"videos/{video.name}")
        K = torch.tensor([[focal_mm * w / SENSOR_MM, 0, w / 2], [0, focal_mm * h / SENSOR_MM, h / 2], [0, 0, 1]],
                         dtype=torch.float64)
        views.append(View(name=name, frames=FrameSource(video=video), K=K, w2c=unreal_to_w2c(M), width=w, height=h,
                          fps=fps))
    return Capture(format="recammaster", label=label, views=tuple(views), fps=views[0].fps or 15.0, units="metres")
