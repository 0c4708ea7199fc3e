"""Procedural 4D scene rendered by exact ray casting: ground truth for every stage (SPEC 9).

A pixel ray ``X(z) = C + z * R^T K^-1 (u, v, 1)`` (pixel centres ``u = j + 0.5``, ``v = i + 0.5``;
the ray's camera-space z component is 1, so the ray parameter *is* the z-depth) is intersected
analytically with every surface; the nearest hit with ``z > eps`` wins. Surfaces:

* planes ``n . X = d`` (the ground ``y = +h`` below the source camera; world up is ``-y``);
* an enclosing backdrop sphere seen from inside (its far root, so every ray hits something and
  depth is finite everywhere);
* moving, rotating, deforming ellipsoids and boxes (``X = c(t) + R(t) diag(s(t)) q`` with ``q`` on
  the unit sphere / unit cube). Textures are functions of the object-local ``q``, so they move
  with the objects, and are smooth sinusoid blends (bandlimited at 96 x 160).

Shading is Lambertian (view-independent): ``rgb = albedo * (a + (1 - a) max(0, n . l))``; the
backdrop is unshaded. World = the source camera's frame (OpenCV, metric), look-at ``(0, 0, D)``
with ``D = LAYOUT_DEPTH``; the layout makes the median depth of source frame 0 close to ``D``. The layout and
the objects' motion live in ``media.scene`` (re-exported here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ..geometry.cameras import Camera, Rig, intrinsics_from_fov
from ..geometry.source import Geometry, scene_scale
from ..common.progress import StepFn, report
from ..geometry.rig import arc_rig, orbit_eyes, ring_rig
from .scene import BOX, ELLIPSOID, LAYOUT_DEPTH, SceneSpec, make_scene, object_states  # noqa: F401 (re-exported)

__all__ = ["SceneSpec", "SyntheticCapture", "SyntheticTruth", "make_scene", "cast", "render", "render_truth",
           "make_capture", "make_moving_video",
           "object_states", "ELLIPSOID", "BOX", "LAYOUT_DEPTH", "RIG_KINDS"]

_EPS = 1e-4  # nearest accepted hit (metres)
_LIGHT = (0.35, -1.0, -0.45)  # towards the light (world up is -y)
_AMBIENT = 0.45
_RAYS_PER_CHUNK = 1 << 18
RIG_KINDS = ("ring", "arc")


def _pixel_rays(K: Tensor, R: Tensor, width: int, height: int, supersample: int) -> Tensor:
    """World ray directions (S, H, W, 3) of one camera (K, R (3, 3)) with camera-space z = 1.

    S = 1 + supersample^2 (1 when supersample = 1) subpixel samples; index 0 is the pixel centre
    (used for depth), the others are the centres of an n x n subgrid (averaged for colour)."""
    n = supersample
    offs = [(0.5, 0.5)] + ([((a + 0.5) / n, (b + 0.5) / n) for a in range(n) for b in range(n)] if n > 1 else [])
    off = torch.tensor(offs, dtype=torch.float64)  # (S, 2) (dx, dy)
    j = torch.arange(width, dtype=torch.float64)[None, None, :] + off[:, 0, None, None]  # (S, 1, W)
    i = torch.arange(height, dtype=torch.float64)[None, :, None] + off[:, 1, None, None]  # (S, H, 1)
    i, j = torch.broadcast_tensors(i, j)
    pix = torch.stack([j, i, torch.ones_like(i)], dim=-1)  # (S, H, W, 3)
    return pix @ (R.to(torch.float64).T @ torch.linalg.inv(K.to(torch.float64))).T  # R^T K^-1 (u, v, 1)


def _shade(albedo: Tensor, normal: Tensor) -> Tensor:
    l = torch.nn.functional.normalize(torch.tensor(_LIGHT, dtype=albedo.dtype), dim=0)
    return albedo * (_AMBIENT + (1 - _AMBIENT) * (normal @ l).clamp(min=0))[..., None]


def _blend(colors: Tensor, w: Tensor) -> Tensor:
    """colors (..., 2, 3), w (M,) in [0, 1] -> (M, 3)."""
    return colors[..., 0, :] * (1 - w[:, None]) + colors[..., 1, :] * w[:, None]


def _sphere_roots(o: Tensor, d: Tensor, radius2: float | Tensor) -> tuple[Tensor, Tensor]:
    """Roots of ``|o + z d|^2 = radius2`` for o (3,), d (M, 3): near, far (M,) (``inf`` if missed)."""
    a = (d * d).sum(-1)
    b = d @ o
    disc = b * b - a * (o @ o - radius2)
    root = disc.clamp(min=0).sqrt()
    miss = torch.full_like(b, math.inf)
    return torch.where(disc >= 0, (-b - root) / a, miss), torch.where(disc >= 0, (-b + root) / a, miss)


def _box_entry(o: Tensor, d: Tensor) -> Tensor:
    """Slab test against the cube ``[-1, 1]^3``: entry z (M,) (``inf`` if missed)."""
    inv = 1.0 / torch.where(d.abs() > 1e-12, d, torch.full_like(d, 1e-12))
    t1, t2 = (-1 - o) * inv, (1 - o) * inv
    near, far = torch.minimum(t1, t2).amax(-1), torch.maximum(t1, t2).amin(-1)
    return torch.where(far >= near, near, torch.full_like(near, math.inf))


def _plane_axes(n: Tensor) -> tuple[Tensor, Tensor]:
    """Two unit axes spanning the plane with normal n (3,)."""
    helper = torch.tensor([0.0, 0.0, 1.0] if float(n[2].abs()) < 0.9 else [1.0, 0.0, 0.0], dtype=n.dtype)
    a = torch.nn.functional.normalize(torch.linalg.cross(n, helper), dim=0)
    return a, torch.linalg.cross(n, a)


def _plane_rgb(scene: SceneSpec, p: int, X: Tensor, d: Tensor) -> Tensor:
    """Soft checker ``sin(k x) sin(k y)`` in plane coordinates about ``center``, faded with distance."""
    n, rel = scene.plane_n[p], X - scene.center
    a, b = _plane_axes(n)
    k = 2 * math.pi / scene.plane_wave[p]
    fade = torch.exp(-((rel - (rel @ n)[:, None] * n).norm(dim=-1) / scene.plane_fade[p]) ** 2)
    w = 0.5 + 0.5 * fade * torch.sin(k * (rel @ a)) * torch.sin(k * (rel @ b))
    facing = n * torch.where(d @ n > 0, -1.0, 1.0)[:, None]  # lit side faces the viewer
    return _shade(_blend(scene.plane_color[p], w), facing)


def _backdrop_rgb(scene: SceneSpec, X: Tensor) -> Tensor:
    """Unshaded dome: horizon-to-zenith blend plus a soft longitude-latitude checker."""
    q = (X - scene.center) / scene.backdrop_radius
    lon, lat = torch.atan2(q[:, 2], q[:, 0]), torch.asin((-q[:, 1]).clamp(-1, 1))
    check = 0.5 + 0.5 * torch.sin(6 * lon) * torch.cos(4 * lat)
    return _blend(scene.backdrop_color, (0.3 + 0.3 * torch.sin(lat) + 0.4 * check).clamp(0, 1))


def _object_rgb(scene: SceneSpec, k: int, q: Tensor, rot: Tensor, size: Tensor) -> Tensor:
    """Object k at local unit coordinates q (M, 3): texture of q, Lambertian with the world normal."""
    if int(scene.obj_kind[k]) == ELLIPSOID:
        n_local = q / size  # gradient of |X_local / size|^2
    else:
        n_local = torch.nn.functional.one_hot(q.abs().argmax(-1), 3).to(q.dtype) * torch.sign(q) / size
    normal = torch.nn.functional.normalize(n_local @ rot.T, dim=-1)
    f, ph = math.pi * scene.obj_tex[k], scene.obj_tex_phase[k]
    w = 0.5 + 0.3 * torch.sin(f[0] * q[:, 0] + ph[0]) * torch.sin(f[1] * q[:, 1] + ph[1]) \
        + 0.2 * torch.sin(f[2] * q[:, 2] + ph[2])
    return _shade(_blend(scene.obj_color[k], w.clamp(0, 1)), normal)


def cast(scene: SceneSpec, o: Tensor, d: Tensor, time: float) -> tuple[Tensor, Tensor, Tensor]:
    """Nearest hit of rays ``o + z d`` (o (3,), d (M, 3), float64) at one scene time.

    Every surface's ray parameter is solved analytically, the smallest ``z > eps`` wins, and only the
    winners are textured. Returns z (M,) (``inf`` where nothing is hit), surface id (M,) int64 (-1 none,
    0..P-1 planes, P backdrop, P+1+k object k) and rgb (M, 3) in [0, 1] (0 where nothing is hit)."""
    P, N = scene.plane_n.shape[0], scene.num_objects
    cands = []
    for p in range(P):  # planes n.X = d
        n = scene.plane_n[p]
        denom = d @ n
        denom = torch.where(denom.abs() > 1e-12, denom, torch.full_like(denom, 1e-12))
        cands.append((scene.plane_d[p] - o @ n) / denom)
    if math.isfinite(scene.backdrop_radius):  # far root: seen from inside
        cands.append(_sphere_roots(o - scene.center, d, scene.backdrop_radius ** 2)[1])
    else:
        cands.append(torch.full_like(d[:, 0], math.inf))
    cen, rot, size = object_states(scene, torch.tensor([time], dtype=torch.float64))
    local = []
    for k in range(N):  # X = c + rot (size * q)  =>  q = rot^T (X - c) / size (row vectors: x @ rot)
        ol, dl = ((o - cen[0, k]) @ rot[0, k]) / size[0, k], (d @ rot[0, k]) / size[0, k]
        local.append((ol, dl))
        cands.append(_sphere_roots(ol, dl, 1.0)[0] if int(scene.obj_kind[k]) == ELLIPSOID else _box_entry(ol, dl))
    zs = torch.stack(cands)  # (P + 1 + N, M)
    zs = torch.where(zs > _EPS, zs, torch.full_like(zs, math.inf))
    z, sid = zs.min(dim=0)
    sid = torch.where(torch.isfinite(z), sid, torch.full_like(sid, -1))
    rgb = torch.zeros(d.shape[0], 3, dtype=torch.float64)
    for surf in sid.unique().tolist():
        if surf < 0:
            continue
        m = sid == surf
        X = o + z[m, None] * d[m]
        if surf < P:
            rgb[m] = _plane_rgb(scene, surf, X, d[m])
        elif surf == P:
            rgb[m] = _backdrop_rgb(scene, X)
        else:
            k = surf - P - 1
            ol, dl = local[k]
            rgb[m] = _object_rgb(scene, k, ol + z[m, None] * dl[m], rot[0, k], size[0, k])
    return z, sid, rgb.clamp(0, 1)


def render(scene: SceneSpec, camera: Camera, times: Tensor, supersample: int = 1, *,
           on_step: StepFn | None = None) -> tuple[Tensor, Tensor]:
    """Exact ray-cast images of the scene for a single or batched ``camera`` (batch ``...``) in
    metric world units, at scene times ``times`` (T,).

    Returns rgb (..., T, H, W, 3) float32 in [0, 1] (mean of ``supersample^2`` subpixel rays) and
    depth (..., T, H, W) float32 metric z-depth of the pixel-centre ray (``inf`` = no hit).
    ``on_step(done, B * T)`` is called after each rendered image."""
    if int(supersample) < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    times = torch.as_tensor(times, dtype=torch.float64).reshape(-1)
    batch = camera.batch_shape
    H, W, T = camera.height, camera.width, times.numel()
    Ks = torch.broadcast_to(camera.K, (*batch, 3, 3)).reshape(-1, 3, 3)
    Rs, origins = camera.R.reshape(-1, 3, 3), camera.center.to(torch.float64).reshape(-1, 3)
    B = Rs.shape[0]
    rgb_out = torch.empty(B, T, H, W, 3, dtype=torch.float32)
    depth_out = torch.empty(B, T, H, W, dtype=torch.float32)
    for b in range(B):
        dirs = _pixel_rays(Ks[b], Rs[b], W, H, int(supersample))  # (S, H, W, 3)
        S, flat = dirs.shape[0], dirs.reshape(-1, 3)
        for ti, t in enumerate(times.tolist()):
            parts = [cast(scene, origins[b], chunk, t) for chunk in flat.split(_RAYS_PER_CHUNK)]
            z = torch.cat([p[0] for p in parts]).reshape(S, H, W)
            rgb = torch.cat([p[2] for p in parts]).reshape(S, H, W, 3)
            depth_out[b, ti] = z[0].float()
            rgb_out[b, ti] = (rgb[1:].mean(0) if S > 1 else rgb[0]).float()
            report(on_step, b * T + ti + 1, B * T)
    return rgb_out.reshape(*batch, T, H, W, 3), depth_out.reshape(*batch, T, H, W)


@dataclass(frozen=True)
class SyntheticTruth:
    """What it takes to ray-cast a capture's scene from any camera at any time: the scene, the capture's scale
    (metres per scene unit of its rig) and its time range (the scene times of its first and last frame).
    Only scoring reads it (``render_truth``): a pipeline under test never gets the truth."""

    scene: SceneSpec
    scale: float
    time_range: tuple[float, float] = (0.0, 1.0)


def render_truth(truth: SyntheticTruth, rig: Rig, orbit: bool, num_frames: int, time_start: float = 0.0,
                 time_end: float = 1.0, supersample: int = 1, *, on_step: StepFn | None = None) -> Tensor:
    """The exact images of the scene along ``rig`` with the cameras and times a fitted scene's render uses
    (``geometry.rig.render_jobs``): (num_frames, H, W, 3) for an orbit, (V * num_frames, H, W, 3) view-major
    for the rig's own cameras."""
    from ..geometry.rig import render_jobs

    jobs = render_jobs(rig, truth.scale, orbit, num_frames, time_start, time_end, truth.time_range)
    out = []
    for i, (cam, t) in enumerate(jobs):
        out.append(render(truth.scene, cam, torch.tensor([t]), supersample)[0][0])
        report(on_step, i + 1, len(jobs))
    return torch.stack(out)


@dataclass(frozen=True)
class SyntheticCapture:
    """A rendered synthetic capture in the project's conventions.

    views: (V, T, H, W, 3) float32 in [0, 1]; view 0 is the source video.
    depth: (V, T, H, W) metric z-depth, finite everywhere.
    rig: Rig in scene units (view 0 = source, identity pose); ``rig.metric(scale)`` rendered it.
    scale: metres per scene unit (median depth of source frame 0).
    times: (T,) scene time of each frame in [0, 1]; fps: frames per second; truth: the scene to ray-cast
    any other camera or time (scoring only).
    """

    views: Tensor
    depth: Tensor
    rig: Rig
    scale: float
    times: Tensor
    fps: float
    truth: SyntheticTruth | None = None

    @property
    def source(self) -> Tensor:
        """(T, H, W, 3) the source video."""
        return self.views[0]

    @property
    def source_depth(self) -> Tensor:
        """(T, H, W) metric z-depth of the source video."""
        return self.depth[0]

    @property
    def metric_cameras(self) -> Camera:
        """The rig's cameras (V,) in metres (``rig.metric(scale)``): the cameras that rendered ``views``."""
        return self.rig.metric(self.scale)

    @property
    def view_major(self) -> Tensor:
        """(V*T, H, W, 3) all T frames of view 0, then view 1, ... (the IMAGE batch layout)."""
        return self.views.reshape(-1, *self.views.shape[2:])

    def source_geometry(self) -> Geometry:
        """The source view's own geometry only (static camera, its exact depth, K of view 0): what a depth
        estimator gives from the source video, with nothing of the other views."""
        return Geometry.static(self.source_depth.clone(), self.rig.cameras.K[0].clone())

    def geometry(self) -> Geometry:
        """Ground-truth source geometry (static camera, K of view 0, scale of this capture), carrying the
        ground-truth depth of every rig view (``views_depth``) for the 4DGS fit's initialisation."""
        g = Geometry.static(self.source_depth.clone(), self.rig.cameras.K[0].clone())
        return replace(g, views_depth=self.depth.clone())


def make_capture(num_views: int = 6, num_frames: int = 9, height: int = 96, width: int = 160, seed: int = 0,
                 fov_y_deg: float = 50.0, radius: float = 1.0, elevation_deg: float = 0.0, fps: float = 16.0,
                 supersample: int = 1, *, rig: str = "ring", span_deg: float = 120.0,
                 on_step: StepFn | None = None) -> SyntheticCapture:
    """Render ``make_scene(seed)`` from a rig about the scene centre ``(0, 0, 1)`` (scene units), scale ``s`` =
    median depth of source frame 0: ``rig`` "ring" (``geometry.rig.ring_rig``, views evenly spaced in azimuth)
    or "arc" (``geometry.rig.arc_rig``, the last target ``span_deg`` from the source).

    Returns views (V, T, H, W, 3) and depth (V, T, H, W) in a ``SyntheticCapture``; ``times`` are
    ``linspace(0, 1, T)``. ``on_step(done, V * T)`` is called after each rendered image."""
    for name, val in (("num_views", num_views), ("num_frames", num_frames), ("height", height), ("width", width)):
        if int(val) != val or int(val) < (2 if name == "num_views" else 1):
            lo = 2 if name == "num_views" else 1
            raise ValueError(f"{name} must be an integer >= {lo}, got {val}")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be positive and finite, got {fps}")
    if not (20.0 <= fov_y_deg <= 70.0):
        raise ValueError(f"fov_y_deg must be in [20, 70] for the synthetic layout (wider views see mostly "
                         f"backdrop, so the median-depth scale leaves the objects), got {fov_y_deg}")
    if not (math.isfinite(radius) and 0.9 <= radius <= 2.5):
        raise ValueError(f"radius must be in [0.9, 2.5] scene units (outside the moving objects, inside the "
                         f"backdrop), got {radius}")
    if not (-15.0 <= elevation_deg <= 75.0):
        raise ValueError(f"elevation_deg must be in [-15, 75] (cameras above the ground), got {elevation_deg}")
    if int(supersample) < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    K = intrinsics_from_fov(fov_y_deg, int(width), int(height))
    scene = make_scene(seed)
    times = torch.linspace(0.0, 1.0, int(num_frames)) if num_frames > 1 else torch.zeros(1)
    source = Camera(K=K, R=torch.eye(3), t=torch.zeros(3), width=int(width), height=int(height))
    _, d0 = render(scene, source, times[:1])
    scale = scene_scale(d0[0])
    if rig not in RIG_KINDS:
        raise ValueError(f"rig must be one of {RIG_KINDS}, got {rig!r}")
    if rig == "ring":
        rig = ring_rig(int(num_views), K, int(width), int(height), radius, elevation_deg, center=(0.0, 0.0, 1.0))
    else:
        rig = arc_rig(int(num_views), span_deg, K, int(width), int(height), radius, elevation_deg, center=(0.0, 0.0, 1.0))
    cams = rig.metric(scale)  # = SyntheticCapture.metric_cameras
    if bool((cams.center[:, 1] > scene.plane_d[0] - 0.05 * scale).any()):
        raise ValueError(f"elevation_deg={elevation_deg} with radius={radius} puts a camera below the ground; "
                         "raise elevation_deg")
    if bool(((cams.center.double() - scene.center).norm(dim=-1) > 0.9 * scene.backdrop_radius).any()):
        raise ValueError(f"radius={radius} with fov_y_deg={fov_y_deg} (scene scale {scale:.2f} m) puts a camera "
                         "outside the backdrop; lower radius or fov_y_deg")
    views, depth = render(scene, cams, times, supersample, on_step=on_step)
    truth = SyntheticTruth(scene, scale, (float(times[0]), float(times[-1])) if len(times) > 1 else (0.0, 1.0))
    return SyntheticCapture(views=views, depth=depth, rig=rig, scale=scale, times=times.float(), fps=float(fps),
                            truth=truth)


def make_moving_video(seed: int, num_frames: int = 9, height: int = 96, width: int = 160, *, fov_y_deg: float = 50.0,
                      radius: float = 1.0, elevation_deg: float = 10.0, azimuth_deg: float = 0.0,
                      sweep_deg: float = 30.0, time_start: float = 0.0, time_span: float = 1.0,
                      supersample: int = 1) -> Tensor:
    """A single-view video of ``make_scene(seed)`` from a moving camera: frame ``k`` (of T) at scene time
    ``time_start + time_span * k / (T - 1)``, its camera on the circle of ``radius`` about the layout's centre
    (in units of ``LAYOUT_DEPTH``, the source camera's distance to it) at azimuth ``azimuth_deg + sweep_deg * k /
    (T - 1)`` (0 = the source camera's side, positive towards +x) and ``elevation_deg``, looking at the centre.

    Returns frames (T, H, W, 3) float32 in [0, 1]."""
    from ..geometry.cameras import look_at

    scene = make_scene(seed)
    T = int(num_frames)
    k = torch.arange(T, dtype=torch.float64) / max(T - 1, 1)
    phi = torch.deg2rad(azimuth_deg + sweep_deg * k)
    eyes = orbit_eyes(phi, radius * LAYOUT_DEPTH, elevation_deg, scene.center)
    R, t = look_at(eyes, scene.center.expand_as(eyes))
    K = intrinsics_from_fov(fov_y_deg, int(width), int(height))
    frames = torch.empty(T, int(height), int(width), 3)
    for i in range(T):
        cam = Camera(K=K, R=R[i].float(), t=t[i].float(), width=int(width), height=int(height))
        frames[i] = render(scene, cam, torch.tensor([time_start + time_span * float(k[i])]), supersample)[0][0]
    return frames
