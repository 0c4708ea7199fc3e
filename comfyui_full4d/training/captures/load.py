"""A view / frame selection of a capture -> view-major frames + a Rig in scene units (SPEC 3).

Rig: view 0 of the selection is the source; cameras are re-expressed relative to it
(``w2c_v inv(w2c_0)``, SPEC 3) and translations divided by the scene scale ``s``. A capture has no
depth, so ``s`` (metres, or the capture's units, per scene unit) stands in for "median source depth
of frame 0" by where the scene is:

1. the look-at point: the point nearest (least squares) to every camera's optical axis, when the
   axes meet in front of all cameras (domes, rings, hemispheres) and, where the format gives
   near/far depth bounds, its depth lies within them: ``s`` = its z-depth in the source camera and
   the rig centre is that point (its z is 1);
2. otherwise (nearly parallel, forward-facing rigs such as N3DV) the format's near/far bounds of
   the source camera (LLFF bounds, DyCheck's ``scene.json``): ``s`` = LLFF's focus depth
   ``1 / (0.25 / (0.9 near) + 0.75 / (5 far))``, the depth LLFF's own spiral path looks at, and the
   rig centre is ``(0, 0, 1)`` on the source axis;
3. neither: a clear error (select cameras that look at a common point).

Cameras with one pose per clip only: a view whose pose changes over the selected frames
(MultiCamVideo trajectories, the DyCheck hand-held camera) is refused, or left out with
``moving="drop"``.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from ...geometry.cameras import Camera, Rig
from ...common.progress import StepFn, report
from ...geometry.rig import validate_rig
from ...media.video import check_frame_budget, crop_intrinsics, default_size, resize_center_crop, snap_frame_count, _check_size
from .formats import open_capture
from .base import Capture, CaptureError, View, parse_views, rotation_angle_deg

__all__ = ["Selection", "MultiView", "select", "focus_depth", "look_at_point", "capture_rig", "undistorter",
           "read_view", "resized_cameras", "load_multiview"]

MOVE_DEG = 0.05  # a "fixed" camera turns less than this over the selection ...
MOVE_REL = 1e-3  # ... and moves less than this fraction of the rig's median camera spacing


@dataclass(frozen=True)
class Selection:
    """Views and frame indices picked from a capture. cameras: Camera (V,) at the first selected
    frame, native sizes (K per view), capture units. fps: of the selected frames (fps / stride)."""

    capture: Capture
    views: tuple[View, ...]
    indices: tuple[int, ...]
    cameras: Camera
    fps: float

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.views)


@dataclass(frozen=True)
class MultiView:
    """frames: (V, T, H, W, 3) float32 in [0, 1]; rig: Rig in scene units (view 0 = source);
    scale: capture units per scene unit; fps of the frames; cameras: Camera (V,) at (H, W) in the
    capture's world and units."""

    frames: Tensor
    rig: Rig
    scale: float
    fps: float
    cameras: Camera

    @property
    def view_major(self) -> Tensor:
        """(V*T, H, W, 3): all T frames of view 0, then view 1, ..."""
        return self.frames.reshape(-1, *self.frames.shape[2:])


def _frame_indices(capture: Capture, views: list[View], num_frames: int, start: int, stride: int,
                   snap: bool) -> list[int]:
    if num_frames < 0 or start < 0 or stride < 1:
        raise CaptureError(f"num_frames={num_frames}, start={start}, stride={stride}: need num_frames >= 0 "
                           "(0 = all), start >= 0 and stride >= 1")
    counts = {v.name: v.frames.count() for v in views}
    shortest = min(counts.values())
    if num_frames == 0 and len(set(counts.values())) > 1:
        raise CaptureError(f"{capture.label}: the views have unequal frame counts ({counts}): they are not trimmed "
                           f"to the same synchronized length; set num_frames to use the common part (at most "
                           f"{len(range(start, shortest, stride))} from start={start})")
    avail = len(range(start, shortest, stride))
    want = num_frames or avail
    if snap:
        if want < 1:
            raise CaptureError(f"{capture.label}: start={start} is beyond the {shortest} frames of the views")
        n = snap_frame_count(want)
        if n != want and num_frames:
            warnings.warn(f"num_frames={num_frames} snapped down to {n} (Wan needs 4k+1 frames)", stacklevel=3)
        want = n
    if want > avail or want < 1:
        short = [k for k, c in counts.items() if c == shortest]
        raise CaptureError(f"{capture.label}: from start={start} with stride={stride} the views hold {avail} frames "
                           f"({short[0]} has {shortest}) but num_frames={num_frames} was asked; set num_frames <= "
                           f"{snap_frame_count(avail) if snap and avail else avail}")
    idx = list(range(start, start + want * stride, stride))
    for v in views:
        imgs = v.frames.images
        if imgs is not None:
            gaps = [i for i in idx if imgs[i] is None]
            if gaps:
                runs = _runs([all(u.frames.images[i] is not None for u in views) for i in range(shortest)])
                raise CaptureError(f"{capture.label}: view {v.name} has no frame at index {gaps[0]} (of the selected "
                                   f"{idx[0]}..{idx[-1]}); all selected views have frames at {runs or 'no index'}")
    return idx


def _runs(ok: list[bool]) -> str:
    out, i = [], 0
    while i < len(ok):
        if ok[i]:
            j = i
            while j + 1 < len(ok) and ok[j + 1]:
                j += 1
            out.append(f"{i}..{j}")
            i = j + 1
        else:
            i += 1
    return ", ".join(out[:6])


def _moving(views: list[View], idx: list[int]) -> dict[str, tuple[float, float]]:
    """{view: (max turn in degrees, max centre shift)} for views whose pose changes over idx."""
    first = torch.stack([v.w2c[min(idx[0], v.w2c.shape[0] - 1)] for v in views])
    C0 = -(first[:, :3, :3].transpose(-1, -2) @ first[:, :3, 3:4])[..., 0]
    d = torch.cdist(C0, C0)
    spacing = float(d[d > 0].median()) if bool((d > 0).any()) else 1.0
    out = {}
    for v, P0, c0 in zip(views, first, C0):
        if v.w2c.shape[0] == 1:
            continue
        P = v.w2c[[i for i in idx if i < v.w2c.shape[0]]]
        if P.shape[0] < len(idx) or bool(torch.isnan(P).any()):
            raise CaptureError(f"view {v.name} has no pose for some of the selected frames {idx[0]}..{idx[-1]}")
        C = -(P[:, :3, :3].transpose(-1, -2) @ P[:, :3, 3:4])[..., 0]
        shift = float((C - c0).norm(dim=-1).max())
        turn = max(rotation_angle_deg(P0[:3, :3], R) for R in P[:, :3, :3])
        if turn > MOVE_DEG or shift > MOVE_REL * spacing:
            out[v.name] = (turn, shift)
    return out


def select(capture: Capture, views: str = "", num_frames: int = 81, start: int = 0, stride: int = 1,
           snap: bool = True, moving: str = "error", same_size: bool = False) -> Selection:
    """Pick views (``parse_views``; the first is the source) and frames ``start, start + stride, ...``
    (``num_frames`` of them, 0 = all, snapped down to 4k+1 when ``snap``). Raises CaptureError for
    fewer than 2 views, unequal frame rates, a selection past a view's end, missing frames, and
    moving cameras (``moving="drop"`` leaves them out instead); ``same_size`` also refuses views of
    different sizes (a dataset without resizing)."""
    if moving not in ("error", "drop"):
        raise CaptureError(f"moving={moving!r}: choose 'error' or 'drop'")
    vs = parse_views(capture, views)
    if len(vs) < 2:
        raise CaptureError(f"{capture.label}: {len(vs)} view(s) selected ({[v.name for v in vs]}); a rig needs a "
                           f"source and at least one target (views: {list(capture.names)})")
    rates = {v.name: v.fps for v in vs if v.fps}
    if rates and max(rates.values()) > 1.01 * min(rates.values()):
        raise CaptureError(f"{capture.label}: the selected views run at different frame rates {rates}; "
                           "select views of one kind (e.g. only HD cameras)")
    sizes = {v.name: (v.width, v.height) for v in vs}
    if same_size and len(set(sizes.values())) > 1:
        raise CaptureError(f"{capture.label}: the selected views have different sizes {sizes}; select views of one "
                           "size or give an output size")
    idx = _frame_indices(capture, vs, num_frames, start, stride, snap)
    moved = _moving(vs, idx)
    if moved:
        unit = "m" if capture.units == "metres" else "units"
        detail = ", ".join(f"{k}: {a:.2f} deg, {s:.3g} {unit}" for k, (a, s) in moved.items())
        if moving == "error":
            keep = [v.name for v in vs if v.name not in moved]
            raise CaptureError(f"{capture.label}: camera(s) move during the selected frames ({detail}); a rig holds "
                               f"one pose per view: leave them out (views={','.join(keep)!r}) or choose frames "
                               "where they stand still")
        warnings.warn(f"{capture.label}: leaving out moving camera(s) {detail}", stacklevel=2)
        vs = [v for v in vs if v.name not in moved]
        if len(vs) < 2:
            raise CaptureError(f"{capture.label}: fewer than 2 fixed cameras remain after leaving out the moving "
                               f"ones ({detail})")
    poses = torch.stack([v.w2c[min(idx[0], v.w2c.shape[0] - 1)] for v in vs])
    w, h = vs[0].width, vs[0].height
    cams = Camera(K=torch.stack([v.K for v in vs]), R=poses[:, :3, :3], t=poses[:, :3, 3], width=w, height=h)
    fps = (vs[0].fps or capture.fps) / stride
    return Selection(capture=capture, views=tuple(vs), indices=tuple(idx), cameras=cams, fps=fps)


def focus_depth(near: float, far: float) -> float:
    """LLFF's focus depth of near/far bounds: ``1 / ((1 - 0.75) / (0.9 near) + 0.75 / (5 far))``."""
    return 1.0 / ((1 - 0.75) / (0.9 * near) + 0.75 / (5.0 * far))


def look_at_point(cams: Camera, min_spread: float = 1e-3) -> Tensor | None:
    """Least-squares point nearest to every optical axis (world, (3,) float64), or None when the axes
    are (nearly) parallel (smallest eigenvalue of ``sum(I - d d^T)`` below ``min_spread * V``) or the
    point is not in front of every camera. ``argmin_p sum |(I - d d^T)(p - C)|^2``."""
    R, t = cams.R.double(), cams.t.double()
    C = -(R.transpose(-1, -2) @ t[..., None])[..., 0]
    d = R[:, 2]
    P = torch.eye(3, dtype=torch.float64) - d[:, :, None] * d[:, None, :]
    A, b = P.sum(0), (P @ C[..., None]).sum(0)[:, 0]
    if float(torch.linalg.eigvalsh(A)[0]) < min_spread * R.shape[0]:
        return None
    p = torch.linalg.solve(A, b)
    z = (R @ p + t)[:, 2]
    return p if bool((z > 0).all()) else None


def capture_rig(cams: Camera, names: tuple[str, ...], bounds: tuple[float, float] | None = None,
                label: str = "capture") -> tuple[Rig, float]:
    """Metric cameras (V,) (view 0 = source) -> (Rig in scene units, scale). See the module docstring
    for how the scale and the rig centre are chosen; the rig is checked with ``validate_rig``."""
    w2c = cams.viewmat.double()
    rel = w2c @ torch.linalg.inv(w2c[0])
    ok = bounds is not None and 0 < bounds[0] < bounds[1] and math.isfinite(bounds[1])
    p = look_at_point(cams)
    q = None if p is None else w2c[0, :3, :3] @ p + w2c[0, :3, 3]  # in the source camera frame
    if q is not None and (not ok or bounds[0] <= float(q[2]) <= bounds[1]):
        s = float(q[2])
        center = q / s
    elif ok:
        s = focus_depth(*bounds)
        center = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    else:
        raise CaptureError(f"{label}: cannot place the scene: the selected cameras' optical axes do not meet in "
                           "front of them and the format gives no near/far bounds; select cameras that look at "
                           "a common point")
    rig = Rig(cameras=Camera(K=cams.K.float(), R=rel[:, :3, :3].float(), t=(rel[:, :3, 3] / s).float(),
                             width=cams.width, height=cams.height),
              center=center.float(), names=tuple(names))
    return validate_rig(rig), float(s)


def undistorter(view: View) -> Callable[[Tensor], Tensor] | None:
    """The undistortion of a view's raw frames (kornia, OpenCV's model and pixel convention) as
    frame (H, W, 3) -> (H, W, 3) with the same pinhole K; None for a pinhole view. Pixels whose
    source falls outside the raw frame are black."""
    if view.dist is None:
        return None
    if float(view.K[0, 1]) != 0.0:
        raise CaptureError(f"view {view.name}: lens distortion with a skewed K is not supported; undistort the frames "
                           "first")
    from kornia.geometry.calibration import distort_points
    from kornia.geometry.transform import remap

    K_cv = view.K.clone()
    K_cv[:2, 2] -= 0.5  # ours (centres at +0.5) -> OpenCV's (centres at integers)
    H, W = view.height, view.width
    ii, jj = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    grid = torch.stack([jj, ii], -1).reshape(-1, 2)  # output pixel centres, OpenCV coordinates (x, y)
    src = distort_points(grid, K_cv, view.dist.double()).reshape(H, W, 2).float()
    mx, my = src[..., 0][None], src[..., 1][None]

    def apply(frame: Tensor) -> Tensor:
        if tuple(frame.shape[:2]) != (H, W):
            raise CaptureError(f"view {view.name}: frame is {frame.shape[1]}x{frame.shape[0]}, calibration says "
                               f"{W}x{H}")
        x = frame.permute(2, 0, 1)[None].float()
        return remap(x, mx, my, mode="bilinear", padding_mode="zeros", align_corners=True)[0].permute(1, 2, 0)

    return apply


def read_view(view: View, indices: tuple[int, ...], size: tuple[int, int] | None = None,
              on_frame: Callable[[int], None] | None = None):
    """Stream a view's frames: undistorted, then resized + centre-cropped to size (H, W) (None: native).
    Yields (H, W, 3) float32 in [0, 1]; ``on_frame(i)`` after each."""
    undistort = undistorter(view)
    for i, frame in enumerate(view.frames.read(indices)):
        if undistort is not None:
            frame = undistort(frame)
        elif tuple(frame.shape[:2]) != (view.height, view.width):
            raise CaptureError(f"view {view.name}: frame is {frame.shape[1]}x{frame.shape[0]}, expected "
                               f"{view.width}x{view.height}")
        if size is not None:
            frame = resize_center_crop(frame[None], size)[0]
        yield frame.clamp(0, 1)
        if on_frame is not None:
            on_frame(i)


def resized_cameras(sel: Selection, size: tuple[int, int]) -> Camera:
    """The selection's cameras after each view's resize + centre crop to size (H, W)."""
    K = torch.stack([crop_intrinsics(v.K, (v.height, v.width), size) for v in sel.views])
    return Camera(K=K, R=sel.cameras.R, t=sel.cameras.t, width=size[1], height=size[0])


def load_multiview(root: str | os.PathLike, format: str = "auto", views: str = "", num_frames: int = 81,
                   start: int = 0, stride: int = 1, size: tuple[int, int] | None = None, *,
                   label: str | None = None, on_step: StepFn | None = None, **kw) -> MultiView:
    """Read a capture folder: the selected views' frames (``select``), undistorted and resized to size
    (H, W) (multiples of 32; None = 384x672 by the source's aspect), and their Rig in scene units.
    ``on_step(done, V * T)`` after each frame."""
    _check_size(size)
    cap = open_capture(root, format, label=label, **kw)
    sel = select(cap, views, num_frames, start, stride, snap=True)
    size = size or default_size(sel.views[0].height, sel.views[0].width)
    V, T = len(sel.views), len(sel.indices)
    check_frame_budget(V * T, size)
    frames = torch.empty(V, T, size[0], size[1], 3)
    for v, view in enumerate(sel.views):
        step = lambda i, v=v: report(on_step, v * T + i + 1, V * T)  # noqa: E731
        for i, f in enumerate(read_view(view, sel.indices, size, step)):
            frames[v, i] = f
    cams = resized_cameras(sel, size)
    bounds = sel.views[0].bounds or cap.bounds
    rig, scale = capture_rig(cams, sel.names, bounds, cap.label)
    return MultiView(frames=frames, rig=rig, scale=scale, fps=sel.fps, cameras=cams)
