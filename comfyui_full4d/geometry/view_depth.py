"""Metric depth of the generated views in the rig's cameras, from DA3 (SPEC 6 initialisation).

SPEC 6 initialises the Gaussians from the fused point clouds of *all* views; a generated view has
no depth of its own, so DA3 runs on the V views of a frame as one multi-view batch and its output
is aligned to the rig. DA3 returns, per view, z-depth ``d_v`` and world-to-camera extrinsics
``E_v`` in its own frame and scale (see ``comfyui_full4d.geometry.depth``). The similarity
``X_rig = s R X_da3 + t`` from DA3's frame to the rig's metric world is the Umeyama fit of DA3's
camera centres ``-R_v^T t_v`` to the rig's (``comfyui_full4d.geometry.align.umeyama``). A similarity
scales z-depth by ``s`` and leaves it otherwise unchanged (its rigid part moves the camera with
the points), so the metric depth in rig camera ``v`` is ``s * d_v``.

Degenerate rigs (Umeyama's rotation is undetermined), decided on the rig's centres alone:

* ``collinear`` (2 views, a dolly; second principal spread < 1e-3 of the first): scale only,
  ``s`` = RMS spread of the rig's centres / RMS spread of DA3's (the ratio of spreads).
* ``coincident`` (a rotation-only rig; spread < 1e-6 * max(1, |C|) metres): scale only, ``s`` =
  median over pixels of ``reference_depth / d_0`` (view 0's metric depth, e.g. the source
  geometry's depth); without ``reference_depth`` this raises ValueError.

More than ``batch`` views run in chunks: the non-anchor views are dealt out in turn
(``1 + c, 1 + c + n, ...``, so every chunk spans the rig) and view 0 rides along in every chunk
as its first (DA3's reference) view. Each chunk is aligned to the rig on its own (its own
Umeyama fit, the anchor's centre included); view 0's output comes from the first chunk. A later
chunk whose rig centres coincide takes its scale from the anchor: its view-0 depth is matched to
the first chunk's metric view-0 depth (same image, same network: only the scale differs).

DA3's intrinsics do not enter the depth: the caller back-projects with the rig's ``K`` (or the
re-calibrated one), and a DA3 focal length that is off by a per-pass factor only scales DA3's depth,
which the alignment's scale absorbs together with the rest.

Re-calibration input (``AlignInfo.poses`` / ``focal_ratio``, used by ``recalibrate``): every view's
DA3 pose carried into the rig's metric world by the similarity that puts DA3's view 0 exactly on the
rig's view 0 (the source camera is real and known; the generated views are what may have drifted)
with the pass's scale ``s``: with DA3's ``(R_d0, t_d0)`` and the rig's ``(R_0, t_0)``,
``X_rig = s W X_da3 + w`` for ``W = R_0^T R_d0``, ``w = R_0^T (s t_d0 - t_0)``, so view ``v`` is
``R_v = R_dv W^T``, ``t_v = s t_dv - R_v w``. Its focal ratio is DA3's ``f_v / f_0`` in the same pass
(a bias common to a pass cancels). The Umeyama scale absorbs part of any drift of the views (it fits
the drifted centres to the rig's); ``scale_from_reference`` takes every pass's scale from view 0's
metric depth instead (``reference_depth``, the source geometry that defines the rig's metres; later
chunks from the first chunk's view 0), which a drift of the target views does not bias.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from .align import umeyama
from .cameras import Camera
from .depth import DA3Model, _resize_masked, _run_chunk, da3_input_size
from ..common.progress import StepFn, report

__all__ = ["AlignInfo", "Recalibration", "estimate_view_depth", "recalibrate", "view_chunks"]

COINCIDENT_TOL = 1e-6  # rig centre spread <= this * max(1 m, largest |C|): one point
COLLINEAR_TOL = 1e-3  # second principal spread <= this * the first: a line


@dataclass(frozen=True)
class AlignInfo:
    """The similarity ``X_rig = s R X_da3 + t`` of every DA3 pass (F frames x C chunks of views).

    scale (F, C) metres per DA3 unit; rotation (F, C, 3, 3) and translation (F, C, 3) (NaN where
    undetermined: the scale-only modes); residual (F, C) RMS camera-centre error after the fit
    divided by the RMS spread of the rig's centres (NaN in the ``reference`` mode, where the rig
    has no size); modes (F, C) ``"similarity"``, ``"collinear"`` or ``"reference"``; chunks: the
    view indices of each chunk (view 0 first in each). poses (F, V, 3, 4) float64: DA3's
    world-to-camera of every view anchored on the rig's view 0 (module docstring; view 0 is the
    rig's); focal_ratio (F, V, 2): DA3's (fx, fy) of each view over view 0's in its pass.
    """

    scale: Tensor
    rotation: Tensor
    translation: Tensor
    residual: Tensor
    modes: tuple[tuple[str, ...], ...]
    chunks: tuple[tuple[int, ...], ...]
    poses: Tensor | None = None
    focal_ratio: Tensor | None = None

    @property
    def worst_residual(self) -> float:
        """Largest finite residual (NaN if none): warn when it exceeds a few percent."""
        r = self.residual[torch.isfinite(self.residual)]
        return float(r.max()) if r.numel() else float("nan")


def view_chunks(num_views: int, batch: int) -> list[list[int]]:
    """Views per DA3 pass: all at once if ``num_views <= batch``, else ``[0] + rest[c::n]`` for n chunks."""
    if num_views <= batch:
        return [list(range(num_views))]
    n = math.ceil((num_views - 1) / (batch - 1))
    rest = list(range(1, num_views))
    return [[0] + rest[c::n] for c in range(n)]


def _spread(x: Tensor) -> float:
    """RMS distance (float) of points x (N, 3) from their mean."""
    return float((x - x.mean(0)).pow(2).sum(-1).mean().sqrt())


def _rig_kind(centres: Tensor) -> str:
    """``"similarity"``, ``"collinear"`` or ``"coincident"`` for camera centres (N, 3) float64."""
    tol = COINCIDENT_TOL * max(1.0, float(centres.norm(dim=-1).max()))
    if len(centres) < 2 or _spread(centres) <= tol:
        return "coincident"
    sv = torch.linalg.svdvals(centres - centres.mean(0))
    if len(centres) < 3 or float(sv[1]) <= COLLINEAR_TOL * float(sv[0]):
        return "collinear"
    return "similarity"


def _fit_similarity(src: Tensor, dst: Tensor) -> tuple[float, Tensor, Tensor, float]:
    """Umeyama ``dst ~ s R src + t`` for (N, 3) float64 centres; returns s, R, t, relative RMS residual."""

    s, R, t = umeyama(src, dst)
    err = s * src @ R.T + t - dst
    return s, R, t, float(err.pow(2).sum(-1).mean().sqrt()) / _spread(dst)


def _fit_collinear(src: Tensor, dst: Tensor) -> tuple[float, float]:
    """Scale-only fit of collinear centres (N >= 2, 3): s = spread(dst) / spread(src), relative residual
    of the best 1D fit along the two lines (DA3's off-line part counts as error)."""
    sc, dc = src - src.mean(0), dst - dst.mean(0)
    s = _spread(dst) / _spread(src)
    a = dc @ torch.linalg.svd(dc, full_matrices=False).Vh[0]
    b = sc @ torch.linalg.svd(sc, full_matrices=False).Vh[0]
    if float((a * b).sum()) < 0:
        b = -b
    off = (sc.pow(2).sum(-1) - b**2).clamp(min=0) * s**2 + (dc.pow(2).sum(-1) - a**2).clamp(min=0)
    return s, float(((a - s * b) ** 2 + off).mean().sqrt()) / _spread(dst)


def _median_ratio(reference: Tensor, depth: Tensor) -> float:
    """Median over pixels valid in both of ``reference / depth`` ((H, W) each)."""
    ok = torch.isfinite(reference) & (reference > 0) & torch.isfinite(depth) & (depth > 0)
    if not bool(ok.any()):
        raise ValueError("reference_depth and DA3's view-0 depth share no valid pixel; cannot set the scale")
    return float((reference[ok].double() / depth[ok].double()).median())


def _align(kind: str, da3_c: Tensor, rig_c: Tensor, d0: Tensor, reference: Optional[Tensor],
           where: str) -> tuple[float, Tensor, Tensor, float, str]:
    """Align one DA3 pass: (s, R, t, residual, mode); R, t NaN and residual NaN where undetermined."""
    nan3, nan33 = torch.full((3,), math.nan, dtype=torch.float64), torch.full((3, 3), math.nan, dtype=torch.float64)
    da3_flat = len(da3_c) < 2 or _spread(da3_c) <= 1e-9 * max(1.0, float(da3_c.norm(dim=-1).max()))
    if kind != "coincident" and not da3_flat:
        if kind == "similarity":
            s, R, t, res = _fit_similarity(da3_c, rig_c)
            return s, R, t, res, "similarity"
        s, res = _fit_collinear(da3_c, rig_c)
        return s, nan33, nan3, res, "collinear"
    if reference is None:
        why = "the rig's cameras share one centre" if kind == "coincident" else "DA3 put the cameras at one point"
        raise ValueError(f"cannot align DA3 to the rig for {where}: {why}, so DA3's scale is undetermined; "
                         "connect reference_depth (view 0's metric depth, e.g. the source geometry's depth)")
    return _median_ratio(reference, d0), nan33, nan3, math.nan, "reference"


def _anchored_poses(E: Tensor, K: Tensor, s: float, rig0: Tensor) -> tuple[Tensor, Tensor]:
    """DA3 w2c E (n, 3, 4) and K (n, 3, 3) of one pass (view 0 first), its scale s and the rig's view-0
    w2c rig0 (3, 4) -> poses (n, 3, 4) in the rig's metric world and focal ratios (n, 2) (module doc)."""
    Rd, td = E[:, :, :3], E[:, :, 3]
    W = rig0[:, :3].T @ Rd[0]
    w = rig0[:, :3].T @ (s * td[0] - rig0[:, 3])
    R = Rd @ W.T
    t = s * td - (R @ w[:, None])[..., 0]
    f = torch.stack([K[:, 0, 0], K[:, 1, 1]], -1).double()
    return torch.cat([R, t[..., None]], -1), f / f[:1]


def _check_frames(frames: Sequence[int], T: int) -> list[int]:
    try:
        fr = [int(f) for f in frames]
    except (TypeError, ValueError):
        raise ValueError(f"frames must be a sequence of frame indices, got {frames!r}") from None
    if not fr or any(f != g for f, g in zip(fr, frames)):
        raise ValueError(f"frames must be a non-empty sequence of integer frame indices, got {frames!r}")
    bad = [f for f in fr if not 0 <= f < T]
    if bad:
        raise ValueError(f"frames {bad} out of range: the views have T={T} frames (indices 0..{T - 1})")
    return fr


def _check_reference(reference: Optional[Tensor], F: int, H: int, W: int) -> Optional[Tensor]:
    """reference_depth (H', W') or (F, H', W') -> (F, H, W) float32 (masked resize), or None."""
    if reference is None:
        return None
    if not isinstance(reference, Tensor) or reference.dim() not in (2, 3) or (
            reference.dim() == 3 and reference.shape[0] != F):
        got = tuple(reference.shape) if isinstance(reference, Tensor) else type(reference).__name__
        raise ValueError(f"reference_depth must be view 0's metric depth, (H, W) or (F={F}, H, W) for the "
                         f"{F} requested frames, got {got}")
    ref = reference.float().expand(F, *reference.shape[-2:])
    if tuple(ref.shape[-2:]) != (H, W):
        ref = _resize_masked(ref, torch.ones_like(ref), (H, W))[0]
    return ref


def _check_inputs(views: Tensor, cameras: Camera, batch: int) -> None:
    if not isinstance(views, Tensor) or views.dim() != 5 or views.shape[-1] != 3 or 0 in views.shape:
        raise ValueError(f"views must be a non-empty (V, T, H, W, 3) tensor, got "
                         f"{tuple(views.shape) if isinstance(views, Tensor) else type(views).__name__}")
    V, _, H, W, _ = views.shape
    if not isinstance(cameras, Camera) or len(cameras.batch_shape) != 1 or len(cameras) != V:
        got = tuple(cameras.batch_shape) if isinstance(cameras, Camera) else type(cameras).__name__
        raise ValueError(f"cameras must be a batched Camera (V={V},), one per view (the rig's metric cameras), "
                         f"got {got}")
    if (cameras.width, cameras.height) != (W, H):
        raise ValueError(f"cameras are {cameras.width}x{cameras.height} but the views are {W}x{H}; resize the "
                         "rig (Camera.resized) or the images")
    if int(batch) != batch or batch < 1 or (batch < 2 and V > 1):
        raise ValueError(f"batch must be an integer >= 2 (view 0 anchors every chunk) for V={V} views, got {batch}")


def estimate_view_depth(model: Union[DA3Model, torch.nn.Module], views: Tensor, cameras: Camera,
                        frames: Sequence[int] = (0,), *, batch: int = 8, reference_depth: Optional[Tensor] = None,
                        process_res: Optional[int] = None, scale_from_reference: bool = False,
                        on_step: StepFn | None = None) -> tuple[Tensor, Tensor, AlignInfo]:
    """DA3 on the V views of each requested frame, aligned to the rig: ``depth_v = s * d_v`` (SPEC 6).

    views (V, T, H, W, 3) in [0, 1] (view 0 = the source); cameras: batched Camera (V,) metric,
    world-to-camera, at (W, H) (the rig's ``rig.metric(scale)``); frames: F frame indices in [0, T).
    batch: views per DA3 pass (more run in chunks anchored on view 0, see module doc).
    reference_depth: (H, W) or (F, H, W) metric z-depth of view 0 (NaN = invalid; any size, resized),
    needed only when the rig's centres coincide or DA3 puts the cameras at one point (and by
    ``scale_from_reference``: every pass's scale from it, module doc). process_res: DA3's input size.
    Returns depth (V, F, H, W) float32 metric z-depth in each rig camera (NaN = invalid), conf
    (V, F, H, W) (0 = invalid) and the AlignInfo. ``on_step(done, F * C)`` after each DA3 pass.
    """
    net = model.net if isinstance(model, DA3Model) else model
    res = int(process_res or (model.process_res if isinstance(model, DA3Model) else 504))
    _check_inputs(views, cameras, batch)
    V, T, H, W, _ = views.shape
    fr = _check_frames(frames, T)
    ref = _check_reference(reference_depth, len(fr), H, W)
    if scale_from_reference and ref is None:
        raise ValueError("scale_from_reference needs reference_depth (view 0's metric depth)")
    size = da3_input_size(H, W, res)
    rig_c = cameras.center.detach().cpu().double()
    chunks = view_chunks(V, int(batch))
    kinds = [_rig_kind(rig_c[idx]) for idx in chunks]
    if kinds[0] == "coincident" and ref is None:
        raise ValueError("the rig's cameras share one centre (a rotation-only rig), so DA3's scale cannot be fitted "
                         "to it; connect reference_depth (view 0's metric depth, e.g. the source geometry's depth)")
    F, C = len(fr), len(chunks)
    depth = torch.full((V, F, H, W), math.nan)
    conf = torch.zeros(V, F, H, W)
    scale, residual = torch.empty(F, C, dtype=torch.float64), torch.empty(F, C, dtype=torch.float64)
    rot, trans = torch.empty(F, C, 3, 3, dtype=torch.float64), torch.empty(F, C, 3, dtype=torch.float64)
    modes: list[tuple[str, ...]] = []
    poses = torch.full((F, V, 3, 4), math.nan, dtype=torch.float64)
    focal = torch.full((F, V, 2), math.nan, dtype=torch.float64)
    rig0 = torch.cat([cameras.R[0], cameras.t[0, :, None]], -1).detach().cpu().double()
    for i, f in enumerate(fr):
        anchor, row = None, []
        for c, idx in enumerate(chunks):
            out = _run_chunk(net, views[idx, f], size)  # resized on DA3's device, results on the CPU
            d, cf = _resize_masked(out["depth"], out["depth_conf"], (H, W))  # (n, H, W)
            E = out["extrinsics"].double()  # (n, 3, 4) world-to-camera in DA3's frame
            da3_c = -(E[:, :3, :3].transpose(-1, -2) @ E[:, :3, 3:])[..., 0]  # (n, 3) DA3 camera centres
            r = anchor if c > 0 else (ref[i] if ref is not None else None)  # coincident fallback's reference
            s, rot[i, c], trans[i, c], residual[i, c], mode = _align(
                kinds[c], da3_c, rig_c[idx], d[0], r, f"frame {f}, views {idx}")
            if scale_from_reference and r is not None:
                s = _median_ratio(r, d[0])
            if not (math.isfinite(s) and s > 0):
                raise ValueError(f"DA3 alignment for frame {f}, views {idx} gave scale {s}; check the views")
            scale[i, c] = s
            row.append(mode)
            keep = slice(0, None) if c == 0 else slice(1, None)  # view 0 from the first chunk only
            depth[idx[keep], i], conf[idx[keep], i] = d[keep] * s, cf[keep]
            p, fr_ = _anchored_poses(E, out["intrinsics"].double(), s, rig0)
            poses[i, idx[keep]], focal[i, idx[keep]] = p[keep], fr_[keep]
            if c == 0:
                anchor = d[0] * s
            report(on_step, i * C + c + 1, F * C)
        modes.append(tuple(row))
    info = AlignInfo(scale=scale, rotation=rot, translation=trans, residual=residual, modes=tuple(modes),
                     chunks=tuple(tuple(x) for x in chunks), poses=poses, focal_ratio=focal)
    return depth, conf, info


RECALIBRATE_MAX_RESIDUAL = 0.2  # DA3 centre offset from the rig (of the rig's RMS spread) up to which DA3 is trusted
RECALIBRATE_MAX_ANGLE = 20.0  # degrees of DA3 orientation change from the rig up to which DA3 is trusted
RECALIBRATE_MAX_ZOOM = 1.5  # DA3 focal / the view's rig focal above which (or below 1/this) DA3 is not trusted


@dataclass(frozen=True)
class Recalibration:
    """What ``recalibrate`` did, per view (V,): refined (bool), and DA3's estimate against the rig camera:
    moved (metres between the centres), turned (degrees between the orientations), focal (DA3's fx over
    the rig's), residual (moved over the rig's RMS centre spread)."""

    refined: tuple[bool, ...]
    moved: tuple[float, ...]
    turned: tuple[float, ...]
    focal: tuple[float, ...]
    residual: tuple[float, ...]

    def text(self) -> str:
        """One line for the node's text."""
        done = [f"view {v} (moved {self.moved[v]:.3f} m, turned {self.turned[v]:.1f} deg, focal x{self.focal[v]:.3f})"
                for v in range(1, len(self.refined)) if self.refined[v]]
        kept = [f"{v} (residual {self.residual[v]:.2f})" for v in range(1, len(self.refined)) if not self.refined[v]]
        out = "re-calibrated from DA3: " + (", ".join(done) if done else "no view")
        return out + (f"; kept the rig for view {', '.join(kept)}" if kept else "")


def recalibrate(cameras: Camera, info: AlignInfo, frame: int = 0, max_residual: float = RECALIBRATE_MAX_RESIDUAL,
                max_angle: float = RECALIBRATE_MAX_ANGLE) -> tuple[Camera, Recalibration]:
    """Refine the rig's metric cameras (V,) from DA3's anchored estimate (``AlignInfo.poses``, module doc) of
    the ``frame``-th requested frame: every target view whose DA3 centre lies within ``max_residual`` of the
    rig's RMS centre spread from the rig's, whose orientation is within ``max_angle`` degrees and whose focal
    (view 0's rig focal times DA3's ratio ``f_v / f_0``) is within a factor ``RECALIBRATE_MAX_ZOOM`` of the view's
    own rig focal (rigs may mix lenses) takes DA3's pose and that focal (principal point kept); view 0 (the source
    camera) and the others keep the rig. Returns the cameras
    (K (V, 3, 3)) and the ``Recalibration`` record."""
    if info.poses is None or info.focal_ratio is None:
        raise ValueError("recalibrate needs the AlignInfo of estimate_view_depth (poses and focal ratios)")
    V = len(cameras)
    pose, ratio = info.poses[frame], info.focal_ratio[frame]  # (V, 3, 4), (V, 2)
    R0, t0 = cameras.R.detach().cpu().double(), cameras.t.detach().cpu().double()
    K0 = cameras.K.detach().cpu().double().expand(V, 3, 3)
    c_rig = -(R0.transpose(-1, -2) @ t0[..., None])[..., 0]
    c_da3 = -(pose[:, :, :3].transpose(-1, -2) @ pose[:, :, 3:])[..., 0]
    moved = (c_da3 - c_rig).norm(dim=-1)
    residual = moved / max(_spread(c_rig), 1e-12)
    cos = ((pose[:, :, :3] @ R0.transpose(-1, -2)).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    turned = torch.rad2deg(torch.arccos(cos.clamp(-1, 1)))
    f = torch.stack([K0[0, 0, 0] * ratio[:, 0], K0[0, 1, 1] * ratio[:, 1]], -1)  # (V, 2) view 0's focal x ratio
    zoom = f / torch.stack([K0[:, 0, 0], K0[:, 1, 1]], -1)  # against each view's own rig focal (mixed lenses)
    ok = torch.isfinite(residual) & (residual <= max_residual) & (turned <= max_angle)
    most = RECALIBRATE_MAX_ZOOM
    ok &= torch.isfinite(zoom).all(-1) & (zoom > 1 / most).all(-1) & (zoom < most).all(-1)
    ok[0] = False
    R, t, K = R0.clone(), t0.clone(), K0.clone()
    R[ok], t[ok] = pose[ok, :, :3], pose[ok, :, 3]
    K[ok, 0, 0], K[ok, 1, 1] = f[ok, 0], f[ok, 1]
    dtype = cameras.R.dtype
    out = Camera(K=K.to(dtype), R=R.to(dtype), t=t.to(dtype), width=cameras.width, height=cameras.height)
    rec = Recalibration(refined=tuple(bool(x) for x in ok), moved=tuple(float(x) for x in moved),
                        turned=tuple(float(x) for x in turned), focal=tuple(float(x) for x in zoom[:, 0]),
                        residual=tuple(float(x) for x in residual))
    return out, rec
