"""Camera rig presets in scene units (SPEC 3). Conventions: ``comfyui_full4d/geometry/cameras.py``.

The source camera is view 0 and sits at the world origin with identity rotation (world = the
source camera's frame). The scene centre (look-at point) defaults to ``(0, 0, 1)``: one scene
unit (the median source depth) in front of the source.
"""

from __future__ import annotations

import json
import math

import numpy as np
import torch
from torch import Tensor

from .cameras import Camera, Rig, camera_from_load3d, intrinsics_from_fov, look_at

__all__ = ["orbit_eyes", "render_jobs", "ring_rig", "paper6_rig", "arc_rig", "custom_rig", "append_load3d", "validate_rig", "interpolate_rig",
           "interpolate_rig_cameras", "build_rig", "PRESETS"]

PRESETS = ("ring", "paper6", "arc", "custom")


def ring_rig(num_views: int, K: Tensor, width: int, height: int, radius: float = 1.0,
             elevation_deg: float = 0.0, center: tuple[float, float, float] = (0.0, 0.0, 1.0)) -> Rig:
    """View 0 = the source (identity); views 1..V-1 on a circle about ``center``.

    Camera ``i`` sits at azimuth ``phi_i = 2*pi*i/V`` measured from the source about the world
    y axis (positive towards +x), at ``radius`` (scene units) and ``elevation_deg`` above the
    horizontal plane (world up is -y), looking at ``center``:
    ``C_i = center + radius * (cos(e) * (sin(phi), 0, -cos(phi)) + sin(e) * (0, -1, 0))``.

    K: (3, 3) shared intrinsics in pixels. Returns a Rig of V cameras.
    """
    if int(num_views) < 2:
        raise ValueError(f"num_views must be >= 2 (the source plus at least one target), got {num_views}")
    if not (radius > 0 and math.isfinite(radius)):
        raise ValueError(f"radius must be positive and finite, got {radius}")
    c = torch.tensor(center, dtype=torch.float64)
    e = math.radians(elevation_deg)
    phi = torch.arange(1, num_views, dtype=torch.float64) * (2 * math.pi / num_views)
    offs = torch.stack([torch.sin(phi) * math.cos(e), torch.full_like(phi, -math.sin(e)),
                        -torch.cos(phi) * math.cos(e)], dim=-1)
    eye = c + radius * offs
    R, t = look_at(eye, c.expand_as(eye))
    R = torch.cat([torch.eye(3, dtype=torch.float64)[None], R]).float()
    t = torch.cat([torch.zeros(1, 3, dtype=torch.float64), t]).float()
    Ks = K.float().expand(num_views, 3, 3).clone()
    names = ("source",) + tuple(f"ring{i}" for i in range(1, num_views))
    return Rig(cameras=Camera(K=Ks, R=R, t=t, width=width, height=height), center=c.float(), names=names)


def orbit_eyes(phi: Tensor, radius: float, elevation_deg: float, center: Tensor) -> Tensor:
    """(V, 3) eyes at azimuths phi (radians, from the source towards +x) about ``center``."""
    e = math.radians(elevation_deg)
    offs = torch.stack([torch.sin(phi) * math.cos(e), torch.full_like(phi, -math.sin(e)),
                        -torch.cos(phi) * math.cos(e)], dim=-1)
    return center + radius * offs


def _source_plus(eyes: Tensor, targets: Tensor, Ks: Tensor, width: int, height: int, center: Tensor,
                 names: tuple[str, ...]) -> Rig:
    """Rig of the identity source camera followed by look-at cameras (float32)."""
    R, t = look_at(eyes.double(), targets.double())
    R = torch.cat([torch.eye(3, dtype=torch.float64)[None], R]).float()
    t = torch.cat([torch.zeros(1, 3, dtype=torch.float64), t]).float()
    return Rig(cameras=Camera(K=Ks.float(), R=R, t=t, width=int(width), height=int(height)),
               center=center.float(), names=("source",) + names)


def paper6_rig(K: Tensor, width: int, height: int, radius: float = 1.0, elevation_deg: float = 0.0,
               center: tuple[float, float, float] = (0.0, 0.0, 1.0)) -> Rig:
    """The paper's 6-view setting: the source plus 5 cameras 60 degrees apart on the ring about
    ``center`` (the ``ring_rig`` layout with V = 6), named ``az60`` ... ``az300``."""
    rig = ring_rig(6, K, width, height, radius, elevation_deg, center)
    return Rig(cameras=rig.cameras, center=rig.center, names=("source",) + tuple(f"az{60 * i}" for i in range(1, 6)))


def arc_rig(num_views: int, span_deg: float, K: Tensor, width: int, height: int, radius: float = 1.0,
            elevation_deg: float = 0.0, center: tuple[float, float, float] = (0.0, 0.0, 1.0)) -> Rig:
    """The source plus ``num_views - 1`` cameras on an arc from the source: target ``k`` sits at
    azimuth ``phi_k = span * k / (V - 1)`` (k = 1..V-1; positive towards +x) on the ``ring_rig``
    circle, so the last target is ``span_deg`` away from the source."""
    if int(num_views) < 2:
        raise ValueError(f"num_views must be >= 2 (the source plus at least one target), got {num_views}")
    if not (0.0 < abs(span_deg) <= 360.0):
        raise ValueError(f"arc span_deg must be in (0, 360] in magnitude, got {span_deg}")
    if not (radius > 0 and math.isfinite(radius)):
        raise ValueError(f"radius must be positive and finite, got {radius}")
    c = torch.tensor(center, dtype=torch.float64)
    phi = torch.arange(1, num_views, dtype=torch.float64) * math.radians(span_deg) / (num_views - 1)
    eyes = orbit_eyes(phi, radius, elevation_deg, c)
    names = tuple(f"arc{math.degrees(p):.0f}" for p in phi.tolist())
    return _source_plus(eyes, c.expand_as(eyes), K.expand(num_views, 3, 3), width, height, c, names)


def custom_rig(spec: str | list, K: Tensor, width: int, height: int,
               center: tuple[float, float, float] = (0.0, 0.0, 1.0)) -> Rig:
    """A rig from a JSON list of target cameras; the source (identity) is view 0 and is added.

    Schema (scene units, our OpenCV world: x right, y down, z forward from the source), one
    object per target camera::

        [{"eye": [x, y, z], "target": [x, y, z], "fov_y_deg": 50, "name": "left"}, ...]

    ``eye`` is required; ``target`` defaults to ``center``; ``fov_y_deg`` defaults to the
    source intrinsics ``K``; ``name`` defaults to ``custom<k>``. Cameras have no roll (world up
    -y). Raises ValueError naming the entry and field that is wrong.
    """
    try:
        items = json.loads(spec) if isinstance(spec, str) else spec
    except json.JSONDecodeError as e:
        raise ValueError(f"custom rig JSON does not parse: {e}") from None
    if not isinstance(items, list) or not items:
        raise ValueError(f"custom rig must be a non-empty JSON list of cameras, got {str(spec)[:80]!r}")
    c = torch.tensor(center, dtype=torch.float64)
    eyes, targets, Ks, names = [], [], [], []
    for k, it in enumerate(items):
        if not isinstance(it, dict) or "eye" not in it:
            raise ValueError(f"custom rig entry {k} must be an object with an 'eye': [x, y, z], got {it!r}")
        for key in ("eye", "target"):
            if key in it and not (isinstance(it[key], list) and len(it[key]) == 3
                                  and all(isinstance(x, (int, float)) and math.isfinite(x) for x in it[key])):
                raise ValueError(f"custom rig entry {k}: '{key}' must be a list of 3 finite numbers, got {it[key]!r}")
        eyes.append(torch.tensor(it["eye"], dtype=torch.float64))
        targets.append(torch.tensor(it["target"], dtype=torch.float64) if "target" in it else c)
        fov = it.get("fov_y_deg")
        if fov is None:
            Ks.append(K.double())
        elif isinstance(fov, (int, float)) and 0 < fov < 180:
            Ks.append(intrinsics_from_fov(float(fov), width, height, dtype=torch.float64))
        else:
            raise ValueError(f"custom rig entry {k}: fov_y_deg must be in (0, 180), got {fov!r}")
        names.append(str(it.get("name", f"custom{k + 1}")))
    eyes_t, targets_t = torch.stack(eyes), torch.stack(targets)
    bad = ((eyes_t - targets_t).norm(dim=-1) < 1e-9).nonzero()[:, 0].tolist()
    if bad:
        raise ValueError(f"custom rig entries {bad}: eye equals target; move the camera or its target")
    Ks_t = torch.stack([K.double()] + Ks)
    return _source_plus(eyes_t, targets_t, Ks_t, width, height, c, tuple(names))


def append_load3d(rig: Rig, infos: list[dict], names: tuple[str, ...] | None = None) -> Rig:
    """The rig with cameras from ``LOAD3D_CAMERA`` dicts appended (``camera_from_load3d``; their
    field of view is the rig's view-0 intrinsics)."""
    if not infos:
        return rig
    cams = rig.cameras
    new = [camera_from_load3d(info, cams.K[0], cams.width, cams.height) for info in infos]
    K = torch.cat([cams.K.expand(rig.num_views, 3, 3)] + [c.K[None].to(cams.K.dtype) for c in new])
    R = torch.cat([cams.R] + [c.R[None].to(cams.R.dtype) for c in new])
    t = torch.cat([cams.t] + [c.t[None].to(cams.t.dtype) for c in new])
    names = names or tuple(f"load3d{k + 1}" for k in range(len(infos)))
    old = rig.names or tuple(f"view{k}" for k in range(rig.num_views))
    return Rig(cameras=Camera(K=K, R=R, t=t, width=cams.width, height=cams.height), center=rig.center,
               names=old + tuple(names))


def validate_rig(rig: Rig, min_views: int = 2, tol: float = 1e-3) -> Rig:
    """Raise ValueError for a rig the pipeline cannot use; return it unchanged otherwise.

    Checks: at least ``min_views`` cameras; every R orthonormal with det +1 (within 1e-4);
    no two cameras coincident (centres closer than ``tol`` scene units and viewing directions
    within 1 degree); the look-at point ``rig.center`` in front of every camera (z > 0).
    """
    cams, V = rig.cameras, rig.num_views
    label = lambda i: rig.names[i] if rig.names else str(i)  # noqa: E731
    if V < min_views:
        raise ValueError(f"rig has {V} camera(s); it needs at least {min_views} (the source plus a target)")
    R = cams.R.double()
    err = (R @ R.transpose(-1, -2) - torch.eye(3, dtype=torch.float64)).abs().amax(dim=(-1, -2))
    det = torch.linalg.det(R)
    for i in range(V):
        if not (bool(torch.isfinite(R[i]).all()) and err[i] < 1e-4 and abs(float(det[i]) - 1) < 1e-4):
            raise ValueError(f"rig camera {label(i)}: rotation is not orthonormal with det +1 "
                             f"(|R R^T - I| = {float(err[i]):.2e}, det = {float(det[i]):.4f}); "
                             "pass world-to-camera rotations in the OpenCV convention")
    C = cams.center.double()
    for i in range(V):
        for j in range(i + 1, V):
            same_dir = float(R[i, 2] @ R[j, 2]) > math.cos(math.radians(1.0))
            if float((C[i] - C[j]).norm()) < tol and same_dir:
                raise ValueError(f"rig cameras {label(i)} and {label(j)} coincide (same centre {C[i].tolist()} "
                                 "and direction); remove one or move it")
    z = (R @ rig.center.double() + cams.t.double())[:, 2]
    behind = (z <= 1e-6).nonzero()[:, 0].tolist()
    if behind:
        raise ValueError(f"rig camera(s) {[label(i) for i in behind]} have the scene centre "
                         f"{rig.center.tolist()} behind them; point them at the scene")
    return rig


def _sorted_keys(R: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Order of the cameras by azimuth ``atan2(z_c, x_c)`` of their centres about the mean centre."""
    C = -np.einsum("vji,vj->vi", R, t)  # centres -R^T t
    d = C - C.mean(axis=0)
    order = np.argsort(np.arctan2(d[:, 2], d[:, 0]), kind="stable")
    return order, C[order], R[order]


def interpolate_rig(R: Tensor, t: Tensor, n: int = 120) -> tuple[Tensor, Tensor]:
    """Closed camera orbit through a rig (SPEC 7, paper App. B).

    R: (V, 3, 3) world-to-camera rotations, t: (V, 3) translations (float32/float64, CPU).
    1. Sort cameras by the azimuth ``atan2(z_c, x_c)`` of their centres ``C = -R^T t`` about the
       rig centre (mean of the centres), i.e. in the horizontal x-z plane (world up is -y).
    2. Knots: uniform per key, ``s_k = k / V`` for k = 0..V, the first key appended at s = 1.
       Centres: periodic cubic spline (C2, ``CubicSpline(bc_type='periodic')``) through them.
    3. Orientations: unit quaternions of the sorted keys, each sign-flipped to the hemisphere of
       its predecessor (shortest arc), SLERP between consecutive keys at the same parameters.
    4. Samples at ``s_i = i / n``, i = 0..n-1; translations ``t = -R C``. Samples landing on a
       knot reproduce that key exactly (sample 0 = the first sorted camera).
    Returns R_out (n, 3, 3), t_out (n, 3) in the input dtype.
    """
    from scipy.interpolate import CubicSpline
    from scipy.spatial.transform import Rotation, Slerp

    if not isinstance(R, Tensor) or R.dim() != 3 or tuple(R.shape[1:]) != (3, 3):
        raise ValueError(f"R must be (V, 3, 3), got {getattr(R, 'shape', type(R).__name__)}")
    if not isinstance(t, Tensor) or tuple(t.shape) != (R.shape[0], 3):
        raise ValueError(f"t must be (V={R.shape[0]}, 3) like R, got {getattr(t, 'shape', type(t).__name__)}")
    V = R.shape[0]
    if V < 2:
        raise ValueError(f"interpolate_rig needs at least 2 cameras, got {V}")
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n}")
    Rn, tn = R.detach().cpu().double().numpy(), t.detach().cpu().double().numpy()
    if not (np.isfinite(Rn).all() and np.isfinite(tn).all()):
        raise ValueError("interpolate_rig: R and t must be finite (a camera has NaN or inf)")
    order, C, Rs = _sorted_keys(Rn, tn)
    if np.linalg.norm(C[1:] - C[:-1], axis=-1).min() < 1e-9 or np.linalg.norm(C[-1] - C[0]) < 1e-9:
        raise ValueError("interpolate_rig: two consecutive cameras (by azimuth) share a centre; remove duplicates")
    knots = np.arange(V + 1) / V
    spline = CubicSpline(knots, np.concatenate([C, C[:1]]), bc_type="periodic", axis=0)
    q = Rotation.from_matrix(np.concatenate([Rs, Rs[:1]])).as_quat()  # (V+1, 4) x, y, z, w
    for k in range(1, V + 1):  # shortest arc: keep each key in its predecessor's hemisphere
        if q[k] @ q[k - 1] < 0:
            q[k] = -q[k]
    s = np.arange(int(n)) / int(n)
    R_out = Slerp(knots, Rotation.from_quat(q))(s).as_matrix()
    C_out = spline(s)
    on_knot = np.isclose(s * V, np.round(s * V), rtol=0, atol=1e-12)
    key = np.round(s * V).astype(int) % V
    R_out[on_knot], C_out[on_knot] = Rs[key[on_knot]], C[key[on_knot]]
    t_out = -np.einsum("nij,nj->ni", R_out, C_out)
    t_out[on_knot] = tn[order][key[on_knot]]
    return torch.from_numpy(R_out).to(R.dtype), torch.from_numpy(t_out).to(t.dtype)


def interpolate_rig_cameras(rig: Rig, n: int = 120) -> Rig:
    """``interpolate_rig`` on a Rig: n cameras in scene units with view 0's intrinsics, names
    ``orbit<i>``; view 0 is the first camera in azimuth order (not necessarily the source)."""
    cams = rig.cameras
    R, t = interpolate_rig(cams.R, cams.t, n)
    K = cams.K if cams.K.dim() == 2 else cams.K[0]
    return Rig(cameras=Camera(K=K.expand(int(n), 3, 3).clone(), R=R, t=t, width=cams.width, height=cams.height),
               center=rig.center, names=tuple(f"orbit{i}" for i in range(int(n))))


def build_rig(preset: str, K: Tensor, width: int, height: int, num_views: int = 6, radius: float = 1.0,
              elevation_deg: float = 0.0, span_deg: float = 90.0, custom_json: str = "",
              load3d: list[dict] | tuple = ()) -> Rig:
    """One of ``PRESETS`` (``ring``: num_views on a circle; ``paper6``: 6 views 60 degrees apart;
    ``arc``: num_views over span_deg; ``custom``: ``custom_rig(custom_json)``), plus cameras from
    ``LOAD3D_CAMERA`` dicts appended, validated (``validate_rig``). K: (3, 3) at (height, width)."""
    if preset == "ring":
        rig = ring_rig(num_views, K, width, height, radius, elevation_deg)
    elif preset == "paper6":
        rig = paper6_rig(K, width, height, radius, elevation_deg)
    elif preset == "arc":
        rig = arc_rig(num_views, span_deg, K, width, height, radius, elevation_deg)
    elif preset == "custom":
        rig = custom_rig(custom_json, K, width, height)
    else:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    return validate_rig(append_load3d(rig, [c for c in load3d if c is not None]))


def render_jobs(rig: Rig, scale: float, orbit: bool, num_frames: int, time_start: float, time_end: float,
                time_range: tuple[float, float] = (0.0, 1.0)) -> list[tuple[Camera, float]]:
    """The (metric camera, scene time) of every image a render of a 4D scene along ``rig`` holds, in order: the
    one rule for the fitted scene's renders (``gaussians.pipeline.render_rig``) and the synthetic truth's
    (``media.synthetic.render_truth``).

    Times: ``num_frames`` samples of ``linspace(time_start, time_end)`` (fractions of ``time_range``). orbit:
    ``num_frames`` cameras of ``interpolate_rig_cameras(rig, num_frames)``, camera ``i`` at time ``i``; else every
    rig camera at every time (view-major). Cameras ``rig.metric(scale)`` (metres)."""
    n = int(num_frames)
    s = [time_start + (time_end - time_start) * i / (n - 1) for i in range(n)] if n > 1 else [float(time_start)]
    t0, t1 = time_range
    times = [t0 + f * (t1 - t0) for f in s]  # plain floats: no tensor made off the render's device
    if orbit:
        cams = interpolate_rig_cameras(rig, n).metric(scale)
        return [(cams[i], times[i]) for i in range(n)]
    cams = rig.metric(scale)
    return [(cams[v], t) for v in range(len(cams)) for t in times]
