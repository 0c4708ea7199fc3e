"""Source video in and out: streaming decode, Wan's frame-count rule, resize + centre crop (SPEC 3).

Frame count: Wan's VAEs (2.2 and 2.1) compress time 4x after the first frame, so a clip must hold
``4k + 1`` frames (1, 5, 9, ..., 81). With ``snap=True`` the requested count is snapped
**down** to the nearest ``4k + 1`` (a warning says so); ``num_frames=0`` takes every frame
available from ``start`` with ``stride`` (then snapped).

Size: frames are resized to cover the target and centre-cropped to it. The target must be a
multiple of 32 in both dims (Wan's VAE x patch). Default: 384x672 (H x W) for landscape or
square sources, 672x384 for portrait ones (chosen from the decoded frame's aspect).

Decoding is streaming (PyAV): frames are decoded from the start, every ``stride``-th frame from
``start`` is resized at once and kept, and decoding stops after ``num_frames`` frames, so the
file is never held whole. ``load_video`` accepts a path or a binary file object.
"""

from __future__ import annotations

import math
import os
import warnings
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..common.io import atomic_path, temp_beside
from ..common.progress import StepFn, report

__all__ = ["DEFAULT_SIZE", "snap_frame_count", "default_size", "resize_center_crop", "crop_intrinsics",
           "load_video", "prepare_frames", "save_video", "VideoWriter"]

DEFAULT_SIZE = (384, 672)  # (H, W) landscape; portrait is (672, 384)
SIZE_MULTIPLE = 32
MAX_PIXELS = 2048 * 2048  # per frame: far above Wan2.2's 384 x 672, below what DA3/projection can hold
Source = Union[str, os.PathLike, BinaryIO]


def snap_frame_count(n: int) -> int:
    """Largest ``4k + 1 <= n`` (Wan's temporal rule); ``n >= 1``."""
    if n < 1:
        raise ValueError(f"num_frames must be >= 1, got {n}")
    return 4 * ((n - 1) // 4) + 1


def default_size(src_h: int, src_w: int) -> tuple[int, int]:
    """(H, W) target: 384x672 for landscape/square sources, 672x384 for portrait."""
    return DEFAULT_SIZE if src_w >= src_h else DEFAULT_SIZE[::-1]


def _check_size(size: Optional[tuple[int, int]]) -> None:
    if size is None:
        return
    h, w = (int(v) for v in size)
    if h <= 0 or w <= 0 or h % SIZE_MULTIPLE or w % SIZE_MULTIPLE:
        raise ValueError(f"size must be (height, width) positive multiples of {SIZE_MULTIPLE}, got {tuple(size)}; "
                         f"e.g. {DEFAULT_SIZE}")
    if h * w > MAX_PIXELS:
        raise ValueError(f"width x height = {w} x {h} ({h * w / 1e6:.1f} MP) is above the {MAX_PIXELS / 1e6:.1f} MP "
                         f"per frame this pack handles; Wan2.2 works at {DEFAULT_SIZE[1]} x {DEFAULT_SIZE[0]}: "
                         "lower width and height")


def available_memory() -> int:
    """Bytes of physical memory currently available (0 when the platform cannot say)."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def check_frame_budget(num_frames: int, size: tuple[int, int]) -> None:
    """Refuse a decode whose float32 frames would not fit in half the available memory."""
    need = int(num_frames) * int(size[0]) * int(size[1]) * 3 * 4
    avail = available_memory()
    if avail and need > avail // 2:
        raise ValueError(f"num_frames x height x width = {num_frames} x {size[0]} x {size[1]} needs "
                         f"{need / 2**30:.1f} GiB of frames, more than half of the {avail / 2**30:.1f} GiB available; "
                         "lower num_frames (or use stride), width or height")


def _check_selection(num_frames: int, start: int, stride: int) -> None:
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0 (0 = all available frames), got {num_frames}")
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")


def resize_center_crop(frames: Tensor, size: tuple[int, int]) -> Tensor:
    """Scale ``frames`` to cover ``size`` (aspect kept) then centre-crop to it.

    frames: (T, H, W, 3) float32. Returns (T, h, w, 3) with (h, w) = size. Down-scaling is antialiased.
    """
    h, w = size
    T, H, W, _ = frames.shape
    if (H, W) == (h, w):
        return frames
    sh, sw, top, left = _cover((H, W), (h, w))
    x = frames.permute(0, 3, 1, 2)
    if (sh, sw) != (H, W):
        x = F.interpolate(x, size=(sh, sw), mode="bilinear", align_corners=False, antialias=max(h / H, w / W) < 1)
    x = x[:, :, top:top + h, left:left + w]
    return x.permute(0, 2, 3, 1).clamp(0, 1).contiguous()


def _cover(src: tuple[int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(scaled h, scaled w, top, left) of ``resize_center_crop`` from src (H, W) to size (h, w)."""
    (H, W), (h, w) = src, size
    s = max(h / H, w / W)
    sh, sw = max(h, round(H * s)), max(w, round(W * s))
    return sh, sw, (sh - h) // 2, (sw - w) // 2


def crop_intrinsics(K: Tensor, src: tuple[int, int], size: tuple[int, int]) -> Tensor:
    """The intrinsics after ``resize_center_crop`` from src (H, W) to size (h, w).

    K (..., 3, 3) in pixels (centres at +0.5). Per-axis scale ``sx = sw / W``, ``sy = sh / H``
    (bilinear, align_corners=False maps u -> u * sx exactly), then the crop shifts the principal
    point: ``K' = [[sx fx, sx s, sx cx - left], [0, sy fy, sy cy - top], [0, 0, 1]]``.
    """
    sh, sw, top, left = _cover(src, size)
    S = torch.tensor([[sw / src[1], 0.0, -float(left)], [0.0, sh / src[0], -float(top)], [0.0, 0.0, 1.0]],
                     dtype=K.dtype, device=K.device)
    return S @ K


def _target_count(num_frames: int, snap: bool) -> int:
    if num_frames == 0 or not snap:
        return num_frames
    n = snap_frame_count(num_frames)
    if n != num_frames:
        warnings.warn(f"num_frames={num_frames} snapped down to {n} (Wan needs 4k+1 frames)", stacklevel=3)
    return n


def _too_few(name: str, total: int, start: int, stride: int, want: int, snap: bool) -> ValueError:
    if total < 2:
        return ValueError(f"video {name} has {total} frame(s); Full-4D needs a video of at least 2 frames")
    if start >= total:
        return ValueError(f"start={start} is beyond the end of video {name} ({total} frames); "
                          f"set start <= {total - 2}")
    avail = len(range(start, total, stride))
    fit = snap_frame_count(avail) if snap else avail
    return ValueError(f"video {name} has {total} frames; from start={start} with stride={stride} only {avail} "
                      f"can be taken but num_frames={want} was asked; set num_frames <= {fit} "
                      f"(or a smaller start / stride)")


def _finish(kept: list[Tensor], name: str, total: int, start: int, stride: int, want: int, snap: bool) -> Tensor:
    """Stack kept frames; apply the errors and the 0 = all rule (T snapped to 4k+1)."""
    if total < 2 or start >= total or (want and len(kept) < want):
        raise _too_few(name, total, start, stride, want, snap)
    if not want:
        n = snap_frame_count(len(kept)) if snap else len(kept)
        if n != len(kept):
            warnings.warn(f"{len(kept)} available frames of {name} snapped down to {n} (Wan needs 4k+1)", stacklevel=3)
        kept = kept[:n]
    return torch.stack(kept)


def prepare_frames(frames: Tensor, fps: float, num_frames: int = 81, start: int = 0, stride: int = 1,
                   size: Optional[tuple[int, int]] = None, snap: bool = True, *,
                   name: str = "<frames>", on_step: StepFn | None = None) -> tuple[Tensor, float]:
    """The same selection and resize as ``load_video`` for frames already in memory.

    frames: (N, H, W, 3) float in [0, 1] (or uint8). Returns ((T, h, w, 3) float32, fps / stride).
    """
    _check_selection(num_frames, start, stride)
    _check_size(size)
    if frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames of {name} must be (N, H, W, 3), got {tuple(frames.shape)}")
    want = _target_count(num_frames, snap)
    total = frames.shape[0]
    idx = list(range(start, total, stride))[: want or None]
    size = size or default_size(frames.shape[1], frames.shape[2])
    kept = []
    for i, j in enumerate(idx):
        f = frames[j]
        f = f.float() / 255.0 if f.dtype == torch.uint8 else f.float()
        kept.append(resize_center_crop(f[None], size)[0])
        report(on_step, i + 1, want or len(idx))
    return _finish(kept, name, total, start, stride, want, snap), float(fps) / stride


def _open(source: Source, name: str):
    import av

    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if not p.is_file():
            raise ValueError(f"video {name}: no such file")
        if p.stat().st_size == 0:
            raise ValueError(f"video {name} is empty (0 bytes)")
    try:
        container = av.open(source if not isinstance(source, os.PathLike) else str(source), mode="r")
    except av.FFmpegError as e:
        raise ValueError(f"video {name} is not a readable video file (corrupt or not a video container): {e}") from None
    if not container.streams.video:
        container.close()
        raise ValueError(f"video {name} has no video stream")
    return container


def _frame_tensor(frame) -> Tensor:
    """av.VideoFrame -> (H, W, 3) float32 in [0, 1], display rotation applied."""
    x = torch.from_numpy(frame.to_ndarray(format="rgb24")).float() / 255.0
    rot = int(getattr(frame, "rotation", 0) or 0) % 360
    if rot:  # rotation is counter-clockwise degrees to display the frame upright
        x = torch.rot90(x, k=rot // 90, dims=(0, 1))
    return x


def frame_count(stream) -> int:
    """Frames the container says the stream has (0 when unknown)."""
    return int(stream.frames or 0)


def load_video(source: Source, num_frames: int = 81, start: int = 0, stride: int = 1,
               size: Optional[tuple[int, int]] = None, snap: bool = True, *,
               on_step: StepFn | None = None) -> tuple[Tensor, float]:
    """Decode ``num_frames`` frames ``start, start + stride, ...`` of a video, streaming.

    source: a path or a binary file object. size: (H, W) multiples of 32, or None (default from
    the source aspect). Returns frames (T, H, W, 3) float32 in [0, 1] and their fps (source fps /
    stride). ``on_step(done, total)`` is called once per kept frame. Decoding stops after the last
    needed frame. Raises ValueError for missing / empty / corrupt files and too-short videos.
    """
    import av

    name = repr(str(source)) if isinstance(source, (str, os.PathLike)) else f"<{type(source).__name__}>"
    _check_selection(num_frames, start, stride)
    _check_size(size)
    want = _target_count(num_frames, snap)
    container = _open(source, name)
    kept: list[Tensor] = []
    total = 0
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        try:
            for frame in container.decode(stream):
                i = total
                total += 1
                if i >= start and (i - start) % stride == 0 and (not want or len(kept) < want):
                    x = _frame_tensor(frame)
                    if not kept:
                        size = size or default_size(x.shape[0], x.shape[1])
                        check_frame_budget(want or max(1, (frame_count(stream) - start) // stride), size)
                    kept.append(resize_center_crop(x[None], size)[0])
                    report(on_step, len(kept), want or len(kept))
                if want and len(kept) == want and total >= 2:
                    break
        except av.FFmpegError as e:
            if not kept:
                raise ValueError(f"video {name} could not be decoded (truncated or corrupt): {e}") from None
            warnings.warn(f"video {name}: decoding stopped after {total} frames ({e})", stacklevel=2)
    finally:
        container.close()
    if fps <= 0:
        warnings.warn(f"video {name} has no frame rate; assuming 24 fps", stacklevel=2)
        fps = 24.0
    return _finish(kept, name, total, start, stride, want, snap), fps / stride


def save_video(frames: Union[Tensor, np.ndarray], path: Union[str, os.PathLike], fps: float, *, crf: int = 12,
               lossless: bool = False, keyframe_every: Optional[int] = None) -> Path:
    """Write frames as H.264 MP4, atomically (temp file in the same folder + os.replace).

    frames: (T, H, W, 3) float in [0, 1] or uint8. Default yuv420p at ``crf`` (H and W must be
    even); ``lossless`` writes RGB exactly (libx264rgb, crf 0, any size), as training datasets
    need. ``keyframe_every`` sets the GOP length (cheap seeks). Returns the path.
    """
    import av

    x = torch.as_tensor(frames)
    if x.dim() != 4 or x.shape[-1] != 3 or x.shape[0] < 1:
        raise ValueError(f"frames must be (T, H, W, 3) with T >= 1, got {tuple(x.shape)}")
    T, H, W, _ = x.shape
    if not lossless and (H % 2 or W % 2):
        raise ValueError(f"H.264 (yuv420p) needs even frame sizes, got {H}x{W}; crop or resize the frames")
    if not (fps > 0 and math.isfinite(fps)):
        raise ValueError(f"fps must be a positive number, got {fps}")
    if x.dtype != torch.uint8:
        x = (x.float().clamp(0, 1) * 255).round().to(torch.uint8)
    arr = x.cpu().numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as out:
            codec, pix_fmt = ("libx264rgb", "rgb24") if lossless else ("libx264", "yuv420p")
            stream = out.add_stream(codec, rate=Fraction(round(fps * 1000), 1000))
            stream.width, stream.height, stream.pix_fmt = W, H, pix_fmt
            stream.options = {"crf": "0", "preset": "ultrafast"} if lossless else {"crf": str(int(crf))}
            if keyframe_every:
                stream.options = {**stream.options, "g": str(int(keyframe_every))}
            for f in arr:
                for pkt in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                    out.mux(pkt)
            for pkt in stream.encode():
                out.mux(pkt)
    return path


class VideoWriter:
    """Streaming H.264 MP4 writer, atomic like ``save_video``: frames go to a temp file in the
    same folder, which replaces ``path`` only on ``close()`` after a clean exit; an exception inside
    ``with`` (or ``abort()``) removes it. Same codecs and options as ``save_video``.

    ``write(frame)`` takes one (H, W, 3) frame, float in [0, 1] or uint8; every frame must have the
    size of the first.
    """

    def __init__(self, path: Union[str, os.PathLike], fps: float, *, crf: int = 12, lossless: bool = False,
                 keyframe_every: Optional[int] = None) -> None:
        if not (fps > 0 and math.isfinite(fps)):
            raise ValueError(f"fps must be a positive number, got {fps}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp: Optional[Path] = None  # made at the first frame
        self._fps, self._crf, self._lossless, self._gop = fps, int(crf), lossless, keyframe_every
        self._out = self._stream = None
        self._size: Optional[tuple[int, int]] = None
        self.frames = 0

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, frame: Union[Tensor, np.ndarray]) -> None:
        import av

        x = torch.as_tensor(frame)
        if x.dim() != 3 or x.shape[-1] != 3:
            raise ValueError(f"frame must be (H, W, 3), got {tuple(x.shape)}")
        H, W = int(x.shape[0]), int(x.shape[1])
        if self._out is None:
            if not self._lossless and (H % 2 or W % 2):
                raise ValueError(f"H.264 (yuv420p) needs even frame sizes, got {H}x{W}; crop or resize the frames")
            self._tmp = temp_beside(self.path)
            self._out = av.open(str(self._tmp), mode="w", format="mp4")
            codec, pix_fmt = ("libx264rgb", "rgb24") if self._lossless else ("libx264", "yuv420p")
            self._stream = self._out.add_stream(codec, rate=Fraction(round(self._fps * 1000), 1000))
            self._stream.width, self._stream.height, self._stream.pix_fmt = W, H, pix_fmt
            opts = {"crf": "0", "preset": "ultrafast"} if self._lossless else {"crf": str(self._crf)}
            self._stream.options = {**opts, **({"g": str(int(self._gop))} if self._gop else {})}
            self._size = (H, W)
        elif (H, W) != self._size:
            raise ValueError(f"frame {self.frames} is {H}x{W} but the video is {self._size[0]}x{self._size[1]}")
        if x.dtype != torch.uint8:
            x = (x.float().clamp(0, 1) * 255).round().to(torch.uint8)
        for pkt in self._stream.encode(av.VideoFrame.from_ndarray(x.cpu().numpy(), format="rgb24")):
            self._out.mux(pkt)
        self.frames += 1

    def close(self) -> Path:
        """Flush, close and move the temp file to ``path``. Raises ValueError when no frame was written."""
        if self._out is None:
            raise ValueError(f"{self.path.name}: no frames were written")
        try:
            for pkt in self._stream.encode():
                self._out.mux(pkt)
            self._out.close()
            self._out = None
            os.replace(self._tmp, self.path)
        finally:
            self.abort()
        return self.path

    def abort(self) -> None:
        """Drop the partial file (idempotent)."""
        if self._out is not None:
            try:
                self._out.close()
            except Exception:  # noqa: BLE001 - the file is being discarded
                pass
            self._out = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
