"""What every capture reader returns: views with their frames, cameras and lens (docs/cameras.md).

A reader turns one folder of a public multi-view format into a ``Capture``: per view a frame
source (a video, or one image per frame index), pinhole intrinsics ``K`` of the undistorted frames
in our pixel convention (centres at +0.5, ``cameras.py``), per-frame world-to-camera poses in the
OpenCV convention, and the OpenCV distortion of the raw frames. Each format's conversion to these
conventions lives in its own module, written once, with its axis matrices in docs/cameras.md.

Errors are ``CaptureError`` (a ValueError) naming the file relative to the folder as the user
gave it (``label``), never an absolute server path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import Tensor

from ...geometry.cameras import Camera

__all__ = ["CaptureError", "FrameSource", "View", "Capture", "where", "pose_matrix", "parse_views", "video_info",
           "rotation_angle_deg"]


class CaptureError(ValueError):
    """A capture folder that cannot be read: the message names the file and what to do."""


def where(label: str, rel: str | Path = "") -> str:
    """``label/rel`` as the user should read it (their folder name, never a server path)."""
    rel = str(rel)
    return f"{label}/{rel}" if rel else label


def pose_matrix(R: Tensor, t: Tensor) -> Tensor:
    """(..., 4, 4) world-to-camera from R (..., 3, 3) and t (..., 3)."""
    top = torch.cat([R, t[..., None]], dim=-1)
    bottom = torch.zeros_like(top[..., :1, :])
    bottom[..., 0, 3] = 1
    return torch.cat([top, bottom], dim=-2)


@dataclass(frozen=True)
class FrameSource:
    """The frames of one view: a video file, or one image file per frame index (None = no frame)."""

    video: Path | None = None
    images: tuple[Path | None, ...] | None = None

    def count(self) -> int:
        """Frames available (the video's frame count; the number of frame indices for images)."""
        if self.images is not None:
            return len(self.images)
        return _video_frames(self.video)

    def read(self, indices: Sequence[int]) -> Iterator[Tensor]:
        """Decode frames ``indices`` (ascending) one at a time -> (H, W, 3) float32 in [0, 1]."""
        if self.images is not None:
            for i in indices:
                if not 0 <= i < len(self.images):
                    raise CaptureError(f"the frames end before frame {i} ({len(self.images)} frames)")
                yield _read_image(self.images[i])
        else:
            yield from _read_video(self.video, indices)


@dataclass(frozen=True)
class View:
    """One camera of a capture.

    K: (3, 3) float64 pinhole intrinsics of the undistorted frames at (width, height), pixels,
      centres at +0.5. w2c: (N, 4, 4) float64 world-to-camera (OpenCV) per frame index, in the
      capture's units; N == 1 for a format with one pose per camera; rows of NaN where a frame is
      missing. dist: (5,) OpenCV ``[k1, k2, p1, p2, k3]`` of the raw frames, or None (pinhole).
    bounds: (near, far) scene depth in the capture's units (LLFF bounds), or None.
    """

    name: str
    frames: FrameSource
    K: Tensor
    w2c: Tensor
    width: int
    height: int
    dist: Tensor | None = None
    bounds: tuple[float, float] | None = None
    fps: float | None = None

    def camera(self, index: int = 0) -> Camera:
        """The Camera of frame ``index`` (the only pose for single-pose formats)."""
        w2c = self.w2c[min(index, self.w2c.shape[0] - 1)]
        return Camera(K=self.K, R=w2c[:3, :3], t=w2c[:3, 3], width=self.width, height=self.height)


@dataclass(frozen=True)
class Capture:
    """A synchronized multi-view capture read from one folder.

    format: reader name; label: the folder as the user named it; views: in the format's order.
    fps: frame rate of every view; units: what one world unit is ("metres", or "arbitrary
    (COLMAP)" for formats posed by structure from motion). held_out: the views the format's own
    benchmarks hold out; default: the views taken when none are selected (empty = all).
    bounds: (near, far) depth of the whole scene in the capture's units, or None.
    """

    format: str
    label: str
    views: tuple[View, ...]
    fps: float
    units: str
    held_out: tuple[str, ...] = ()
    default: tuple[str, ...] = ()
    bounds: tuple[float, float] | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.views)

    def view(self, name: str) -> View:
        for v in self.views:
            if v.name == name:
                return v
        raise CaptureError(f"{self.label}: no view named {name!r}; this {self.format} capture has {list(self.names)}")


def parse_views(capture: Capture, spec: str) -> list[View]:
    """Views named by ``spec``: comma-separated view names in order (the first becomes the source);
    ``""`` or ``"all"`` = the capture's default selection; items starting with ``-`` are left out
    (``"-cam00"`` = the default selection without cam00)."""
    items = [s.strip() for s in str(spec or "").replace(";", ",").split(",") if s.strip()]
    if any(s.lower() == "all" for s in items):
        items = [s for s in items if s.lower() != "all"]
    drop = {s[1:].strip() for s in items if s.startswith("-")}
    keep = [s for s in items if not s.startswith("-")]
    names = keep or list(capture.default or capture.names)
    for n in list(drop) + keep:
        capture.view(n)  # raises with the list of views
    if len(set(keep)) != len(keep):
        raise CaptureError(f"views={spec!r}: a view is listed twice")
    return [capture.view(n) for n in names if n not in drop]


# ---- frame decoding (PyAV) -----------------------------------------------------------------------

def video_info(path: Path, label: str, rel: str) -> tuple[int, int, float | None]:
    """(height, width, fps or None) of a video's first stream; errors name ``label/rel``."""
    import av

    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise CaptureError(f"{where(label, rel)}: no video stream")
            s = c.streams.video[0]
            rate = s.average_rate or s.guessed_rate
            return int(s.codec_context.height), int(s.codec_context.width), float(rate) if rate else None
    except av.FFmpegError as e:
        raise CaptureError(f"{where(label, rel)}: cannot be read as a video ({e})") from None


def _video_frames(path: Path) -> int:
    import av

    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise CaptureError(f"{path.name} has no video stream")
            s = c.streams.video[0]
            n = int(s.frames or 0)
            return n if n > 0 else sum(1 for p in c.demux(s) if p.size > 0)
    except av.FFmpegError as e:
        raise CaptureError(f"{path.name} cannot be read as a video ({e})") from None


def _read_video(path: Path, indices: Sequence[int]) -> Iterator[Tensor]:
    """Decode the frames ``indices`` (ascending), seeking to the keyframe before the first when the
    stream has timestamps (frame index = round(pts * time_base * fps)), else from the start."""
    from ...media.video import _frame_tensor, _open

    want = sorted(set(int(i) for i in indices))
    if not want:
        return
    for seek in (True, False):
        container = _open(path, repr(path.name))
        try:
            s = container.streams.video[0]
            s.thread_type = "AUTO"
            rate = s.average_rate or s.guessed_rate
            use_pts = seek and want[0] > 0 and rate is not None and s.time_base is not None
            if use_pts:
                container.seek(int(want[0] / float(rate) / float(s.time_base)) + (s.start_time or 0),
                               stream=s, backward=True)
            k, first, restart = 0, True, False
            for i, frame in enumerate(container.decode(s)):
                idx = i
                if use_pts:
                    if frame.pts is None and k == 0:
                        restart = True
                        break
                    if frame.pts is None:
                        raise CaptureError(f"{path.name}: frame timestamps stop mid-stream; re-encode the video")
                    idx = round((frame.pts - (s.start_time or 0)) * float(s.time_base) * float(rate))
                    if first and idx > want[0]:
                        restart = True  # the seek overshot: decode from the start instead
                        break
                first = False
                if idx == want[k]:
                    yield _frame_tensor(frame)
                    k += 1
                    if k == len(want):
                        return
            if not restart:
                raise CaptureError(f"{path.name}: the video ends before frame {want[k]}")
        finally:
            container.close()


def _read_image(path: Path | None) -> Tensor:
    import av

    if path is None:
        raise CaptureError("a selected frame is missing")
    try:
        with av.open(str(path)) as c:
            frame = next(c.decode(video=0))
            return torch.from_numpy(frame.to_ndarray(format="rgb24")).float() / 255.0
    except (av.FFmpegError, StopIteration) as e:
        raise CaptureError(f"{path.name} cannot be read as an image ({e})") from None


def rotation_angle_deg(Ra: Tensor, Rb: Tensor) -> float:
    """Angle (degrees) of the rotation between Ra and Rb (3, 3)."""
    c = (float(torch.trace(Ra.double().T @ Rb.double())) - 1) / 2
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))
