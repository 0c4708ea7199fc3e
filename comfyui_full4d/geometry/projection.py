"""Point-cloud projection of the source video into rig cameras (SPEC 3).

Every valid source pixel ``(i, j)`` of frame ``t`` with depth ``z`` is lifted to the world,
``X = R_s^T (z K_s^-1 [j + 0.5, i + 0.5, 1]^T - t_s)``, and projected into target ``v``:
``x = R_v X + t_v``, ``(u, w) = (fx x/z + cx, fy y/z + cy)``; it lands in pixel
``(floor(w), floor(u))`` when ``z_v > 0`` and the pixel is inside the image. A z-buffer keeps
the nearest point per target pixel (ties: the lower source pixel index). Holes are black with
mask False. ``point_radius = r > 0`` splats each point to the ``(2r+1)^2`` pixels around it.

The fast path packs ``(float32 depth bits << 32) | point index`` into one int64 key per hit and
takes ``scatter_reduce(amin)`` over all target pixels of a chunk of frames and all views at
once; the colour of the winner is then gathered. ``project_to_cameras_reference`` does one
frame and one view at a time with two stable sorts instead of a scatter.
Conventions: ``comfyui_full4d/geometry/cameras.py``.
"""

from __future__ import annotations

import math
import warnings
from typing import Optional

import torch
from torch import Tensor

from .cameras import Rig
from .source import Geometry
from ..common.progress import StepFn, report

__all__ = ["project_to_cameras", "project_to_cameras_reference", "project_rig", "project_rig_batch", "contact_sheet"]

_EMPTY = torch.iinfo(torch.int64).max
_CHUNK_ELEMS = 1 << 22  # candidate hits (view x frame x point x footprint) per chunk: bounds peak memory


def _check(images: Tensor, depth: Tensor, K_src: Tensor, w2c_src: Tensor, K_dst: Tensor, w2c_dst: Tensor,
           size, conf: Optional[Tensor], point_radius: int) -> tuple[int, int]:
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[-1] != 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be (T, H, W, 3), got {shape}")
    T, H, W = images.shape[:3]
    if T == 0 or H == 0 or W == 0:
        raise ValueError(f"images must hold at least one frame of at least 1x1 pixels, got {tuple(images.shape)}")
    if not isinstance(depth, Tensor) or tuple(depth.shape) != (T, H, W):
        raise ValueError(f"depth must be (T, H, W) = {(T, H, W)} to match images, got "
                         f"{tuple(depth.shape) if isinstance(depth, Tensor) else type(depth).__name__}; "
                         "resize the depth or the images so they agree")
    if conf is not None and tuple(conf.shape) != (T, H, W):
        raise ValueError(f"conf must be (T, H, W) = {(T, H, W)} like depth, got {tuple(conf.shape)}")
    if tuple(K_src.shape) != (3, 3):
        raise ValueError(f"K_src must be (3, 3), got {tuple(K_src.shape)}")
    if tuple(w2c_src.shape) not in ((4, 4), (T, 4, 4)):
        raise ValueError(f"w2c_src must be (4, 4) or (T={T}, 4, 4), got {tuple(w2c_src.shape)}")
    if K_dst.dim() != 3 or tuple(K_dst.shape[1:]) != (3, 3):
        raise ValueError(f"K_dst must be (V, 3, 3), got {tuple(K_dst.shape)}")
    if w2c_dst.dim() != 3 or tuple(w2c_dst.shape[1:]) != (4, 4) or w2c_dst.shape[0] != K_dst.shape[0]:
        raise ValueError(f"w2c_dst must be (V, 4, 4) with V = {K_dst.shape[0]} (from K_dst), "
                         f"got {tuple(w2c_dst.shape)}")
    if K_dst.shape[0] < 1:
        raise ValueError("K_dst / w2c_dst hold no cameras (V = 0)")
    if int(point_radius) != point_radius or not 0 <= point_radius <= 8:
        raise ValueError(f"point_radius must be an integer in [0, 8], got {point_radius}")
    for name, x in (("K_src", K_src), ("w2c_src", w2c_src), ("K_dst", K_dst), ("w2c_dst", w2c_dst)):
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} holds NaN or inf values")
    Ho, Wo = (H, W) if size is None else (int(size[0]), int(size[1]))
    if size is not None and (len(size) != 2 or Ho < 1 or Wo < 1):
        raise ValueError(f"size must be (H', W') positive, got {size}")
    return Ho, Wo


def _valid(depth: Tensor, conf: Optional[Tensor], conf_threshold: float) -> Tensor:
    finite = torch.isfinite(depth)
    if not bool(finite.all()):
        warnings.warn(f"depth has {int((~finite).sum())} NaN/inf values; those pixels are not projected",
                      stacklevel=3)
    ok = finite & (depth > 0)
    if not bool(ok[0].any()):
        raise ValueError("depth: frame 0 has no valid depth (all NaN, inf or <= 0); nothing can be projected. "
                         "Check the depth estimate (Full4DDA3Depth) and its input frames")
    if conf is not None:
        ok &= torch.nan_to_num(conf, nan=-math.inf) > conf_threshold
        if not bool(ok[0].any()):
            raise ValueError(f"conf: no pixel of frame 0 has confidence above conf_threshold={conf_threshold}; "
                             "lower conf_threshold")
    return ok


def _rays(K: Tensor, H: int, W: int) -> Tensor:
    """(H*W, 3) float64 ``K^-1 [j + 0.5, i + 0.5, 1]`` in row-major pixel order (on K's device)."""
    K = K.double()
    i, j = torch.meshgrid(torch.arange(H, dtype=torch.float64, device=K.device) + 0.5,
                          torch.arange(W, dtype=torch.float64, device=K.device) + 0.5, indexing="ij")
    x = (j.reshape(-1) - K[0, 2] - K[0, 1] * (i.reshape(-1) - K[1, 2]) / K[1, 1]) / K[0, 0]
    y = (i.reshape(-1) - K[1, 2]) / K[1, 1]
    return torch.stack([x, y, torch.ones_like(x)], dim=-1)


def _compose(dst: Tensor, src: Tensor) -> Tensor:
    """Source camera -> target camera: ``A = dst @ inv(src)`` for rigid world-to-camera poses,
    written as elementwise sums (bit-identical under any batching).

    dst (..., 4, 4), src (..., 4, 4) (broadcast) -> A (..., 3, 4)."""
    Rd, td, Rs, ts = dst[..., :3, :3], dst[..., :3, 3], src[..., :3, :3], src[..., :3, 3]
    # R = Rd Rs^T: R[r, c] = sum_k Rd[r, k] Rs[c, k]; t = td - R ts
    R = torch.stack([torch.stack([Rd[..., r, 0] * Rs[..., c, 0] + Rd[..., r, 1] * Rs[..., c, 1]
                                  + Rd[..., r, 2] * Rs[..., c, 2] for c in range(3)], -1) for r in range(3)], -2)
    t = torch.stack([td[..., r] - (R[..., r, 0] * ts[..., 0] + R[..., r, 1] * ts[..., 1] + R[..., r, 2] * ts[..., 2])
                     for r in range(3)], -1)
    return torch.cat([R, t[..., None]], -1)


def _ray_dirs(A: Tensor, rays: Tensor) -> Tensor:
    """Source rays (N, 3) (last component 1) in target axes: ``B = A[:, :3] ray``.

    A (..., 3, 4) -> (..., N, 3); a point at depth z lands at ``z * B + A[:, 3]``."""
    A = A[..., None, :, :]
    return torch.stack([A[..., r, 0] * rays[:, 0] + A[..., r, 1] * rays[:, 1] + A[..., r, 2] for r in range(3)], -1)


def _target_points(A: Tensor, B: Tensor, z: Tensor) -> Tensor:
    """z (..., N) source depths, B (..., N, 3), A (..., 3, 4) -> (..., N, 3) target-camera points."""
    return B * z[..., None] + A[..., None, :, 3]


def _pixels(cam: Tensor, K: Tensor, Ho: int, Wo: int) -> tuple[Tensor, Tensor, Tensor]:
    """cam (..., 3) camera points, K (..., 3, 3) broadcastable -> pixel x, y (int64), z (float32).

    Points behind the camera or far outside the image get x = y = -2**40 (never inside)."""
    z = cam[..., 2]
    front = z > 0
    zs = torch.where(front, z, torch.ones_like(z))
    u = K[..., 0, 0] * cam[..., 0] / zs + K[..., 0, 1] * cam[..., 1] / zs + K[..., 0, 2]
    w = K[..., 1, 1] * cam[..., 1] / zs + K[..., 1, 2]
    ok = front & (u > -16) & (u < Wo + 16) & (w > -16) & (w < Ho + 16)
    far = torch.full_like(u, -(2.0 ** 40))
    x = torch.where(ok, u, far).floor().long()
    y = torch.where(ok, w, far).floor().long()
    return x, y, z.float()


def _offsets(r: int) -> tuple[Tensor, Tensor]:
    d = torch.arange(-r, r + 1)
    dy, dx = torch.meshgrid(d, d, indexing="ij")
    return dx.reshape(-1), dy.reshape(-1)


def _check_in_front(front: Tensor, offset: int = 0) -> None:
    """front: (V,) bool, a valid frame-0 point lies in front of camera ``offset + v``."""
    if not bool(front.all()):
        bad = ((~front).nonzero()[:, 0].cpu() + offset).tolist()
        raise ValueError(f"w2c_dst: camera(s) {bad} have every point of the scene behind them (the scene is "
                         "behind the camera); check the rig's look-at point and the pose convention "
                         "(world-to-camera, OpenCV: z forward)")


def project_to_cameras(images: Tensor, depth: Tensor, K_src: Tensor, w2c_src: Tensor, K_dst: Tensor,
                       w2c_dst: Tensor, size: Optional[tuple[int, int]] = None, conf: Optional[Tensor] = None,
                       conf_threshold: float = 0.0, point_radius: int = 0, *,
                       on_step: StepFn | None = None) -> tuple[Tensor, Tensor]:
    """Z-buffer the source pixels' points into each target camera (SPEC 3).

    images: (T, H, W, 3) float in [0, 1]; depth: (T, H, W) metric z-depth (NaN/inf/<= 0 invalid,
    NaN/inf warned about); conf: (T, H, W) or None, pixels need ``conf > conf_threshold``.
    K_src: (3, 3) at (H, W); w2c_src: (4, 4), or (T, 4, 4) for a moving source camera.
    K_dst: (V, 3, 3) at the output size; w2c_dst: (V, 4, 4). size: (H', W'), default (H, W).
    Returns renders (V, T, H', W', 3) (images' dtype and device; holes black) and masks (V, T, H', W') bool.
    Work is chunked over frames and views (about 4M candidate hits per chunk); ``on_step(done, T)`` per chunk.
    """
    Ho, Wo = _check(images, depth, K_src, w2c_src, K_dst, w2c_dst, size, conf, point_radius)
    T, H, W = depth.shape
    V, N, r = K_dst.shape[0], H * W, int(point_radius)
    dev = images.device  # everything runs on the images' device
    depth = depth.to(dev)
    valid = _valid(depth, None if conf is None else conf.to(dev), conf_threshold).reshape(T, N)
    rays = _rays(K_src.to(dev), H, W)
    w2c_s = w2c_src.to(dev).double().expand(T, 4, 4)
    static = w2c_src.dim() == 2 or bool((w2c_src == w2c_src[:1]).all())
    Kd, Md = K_dst.to(dev).double()[:, None, None], w2c_dst.to(dev).double()[:, None]  # (V, 1, 1, 3, 3), (V, 1, 4, 4)
    dx, dy = (o.to(dev) for o in _offsets(r))
    F = dx.numel()
    colors = images.reshape(T * N, 3)
    renders = torch.zeros(V, T, Ho, Wo, 3, dtype=images.dtype, device=dev)
    masks = torch.zeros(V, T, Ho, Wo, dtype=torch.bool, device=dev)
    vstep = max(1, min(V, _CHUNK_ELEMS // max(1, N * F)))  # views per chunk
    step = max(1, _CHUNK_ELEMS // max(1, vstep * N * F)) if vstep == V else 1  # frames per chunk
    for t0 in range(0, T, step):
        t1 = min(T, t0 + step)
        Tc = t1 - t0
        zs = depth[t0:t1].reshape(Tc, N).double()
        for v0 in range(0, V, vstep):
            v1 = min(V, v0 + vstep)
            Vc = v1 - v0
            A = _compose(Md[v0:v1], w2c_s[t0:t0 + 1] if static else w2c_s[t0:t1])  # (Vc, 1 or Tc, 3, 4)
            B = _ray_dirs(A, rays)  # (Vc, 1 or Tc, N, 3): one pass per view when the source is static
            x, y, z = _pixels(_target_points(A, B, zs), Kd[v0:v1], Ho, Wo)  # (Vc, Tc, N)
            del B
            ok = valid[t0:t1].expand(Vc, Tc, N)
            if t0 == 0:
                _check_in_front((ok[:, 0] & (z[:, 0] > 0)).any(dim=-1), v0)
            vi, fi, ni = (ok & (z > 0)).nonzero(as_tuple=True)  # (M,) hits
            x, y = x[vi, fi, ni], y[vi, fi, ni]
            key = (z[vi, fi, ni].view(torch.int32).long() << 32) | ni  # depth first, then source pixel
            del z, ok
            xs, ys = x[:, None] + dx, y[:, None] + dy  # (M, F)
            inside = (xs >= 0) & (xs < Wo) & (ys >= 0) & (ys < Ho)
            slot = ((vi[:, None] * Tc + fi[:, None]) * Ho + ys) * Wo + xs
            buf = torch.full((Vc * Tc * Ho * Wo,), _EMPTY, dtype=torch.int64, device=dev)
            buf.scatter_reduce_(0, slot[inside], key[:, None].expand(-1, F)[inside], reduce="amin")
            idx = (buf != _EMPTY).nonzero()[:, 0]
            src = (t0 + (idx // (Ho * Wo)) % Tc) * N + (buf[idx] & 0xFFFFFFFF)
            out = torch.zeros(Vc * Tc * Ho * Wo, 3, dtype=images.dtype, device=dev)
            out[idx] = colors[src]
            hit = torch.zeros(Vc * Tc * Ho * Wo, dtype=torch.bool, device=dev)
            hit[idx] = True
            renders[v0:v1, t0:t1] = out.reshape(Vc, Tc, Ho, Wo, 3)
            masks[v0:v1, t0:t1] = hit.reshape(Vc, Tc, Ho, Wo)
        report(on_step, t1, T)
    return renders, masks


def project_to_cameras_reference(images: Tensor, depth: Tensor, K_src: Tensor, w2c_src: Tensor, K_dst: Tensor,
                                 w2c_dst: Tensor, size: Optional[tuple[int, int]] = None,
                                 conf: Optional[Tensor] = None, conf_threshold: float = 0.0,
                                 point_radius: int = 0) -> tuple[Tensor, Tensor]:
    """Plain per-frame, per-view loop with the same contract as ``project_to_cameras``.

    The z-buffer is three stable sorts (source pixel, depth, target pixel): the first entry of
    each target-pixel group is the nearest point, ties going to the lower source pixel index.
    """
    Ho, Wo = _check(images, depth, K_src, w2c_src, K_dst, w2c_dst, size, conf, point_radius)
    T, H, W = depth.shape
    V = K_dst.shape[0]
    valid = _valid(depth, conf, conf_threshold).reshape(T, -1)
    rays = _rays(K_src, H, W)
    w2c_s = w2c_src.double().expand(T, 4, 4)
    dx, dy = _offsets(int(point_radius))
    renders = torch.zeros(V, T, Ho, Wo, 3, dtype=images.dtype)
    masks = torch.zeros(V, T, Ho, Wo, dtype=torch.bool)
    for t in range(T):
        n = valid[t].nonzero()[:, 0]
        zt = depth[t].reshape(-1)[n].double()
        for v in range(V):
            A = _compose(w2c_dst[v].double(), w2c_s[t])  # source camera -> target camera
            x, y, z = _pixels(_target_points(A, _ray_dirs(A, rays[n]), zt), K_dst[v].double(), Ho, Wo)
            if t == 0:
                _check_in_front(torch.tensor([bool((z > 0).any())]), v)
            pix, zs, src = [], [], []
            for ox, oy in zip(dx.tolist(), dy.tolist()):
                xs, ys = x + ox, y + oy
                keep = (xs >= 0) & (xs < Wo) & (ys >= 0) & (ys < Ho) & (z > 0)
                pix.append(ys[keep] * Wo + xs[keep])
                zs.append(z[keep])
                src.append(n[keep])
            pix, zs, src = torch.cat(pix), torch.cat(zs), torch.cat(src)
            order = torch.sort(src, stable=True).indices  # least significant key first
            pix, zs, src = pix[order], zs[order], src[order]
            order = torch.sort(zs, stable=True).indices
            pix, zs, src = pix[order], zs[order], src[order]
            order = torch.sort(pix, stable=True).indices
            pix, zs, src = pix[order], zs[order], src[order]
            first = torch.ones_like(pix, dtype=torch.bool)
            first[1:] = pix[1:] != pix[:-1]
            pix, src = pix[first], src[first]
            renders[v, t].view(-1, 3)[pix] = images[t].reshape(-1, 3)[src]
            masks[v, t].view(-1)[pix] = True
    return renders, masks


def project_rig(images: Tensor, geometry: Geometry, rig: Rig, size: Optional[tuple[int, int]] = None,
                conf_threshold: float = 0.0, point_radius: int = 0, *,
                on_step: StepFn | None = None) -> tuple[Tensor, Tensor]:
    """Project the source video into every camera of a rig in scene units (SPEC 3).

    images: (T, H, W, 3) in [0, 1] at the geometry's size. The rig is scale-free: its metric
    cameras are ``rig.metric(geometry.scale)``, resized to ``size`` (H', W'; default the rig's
    own size). Per-frame source poses ``geometry.w2c`` (T, 4, 4) place each frame's points.
    A view whose camera is the source camera of frame t (same pose and K) gets the source frame
    itself (mask True), as SPEC 3 says for view 0.
    Returns renders (V, T, H', W', 3) and masks (V, T, H', W') bool.
    """
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (T, H, W, 3), got {getattr(images, 'shape', type(images).__name__)}")
    if tuple(images.shape[:3]) != (geometry.num_frames, *geometry.size):
        raise ValueError(f"images {tuple(images.shape[:3])} (T, H, W) do not match the geometry "
                         f"{(geometry.num_frames, *geometry.size)}; feed the video the geometry was estimated from")
    cams = rig.metric(geometry.scale)
    Ho, Wo = (cams.height, cams.width) if size is None else (int(size[0]), int(size[1]))
    if (Wo, Ho) != (cams.width, cams.height):
        cams = cams.resized(Wo, Ho)
    renders, masks = project_to_cameras(images, geometry.depth, geometry.K, geometry.w2c, cams.K, cams.viewmat,
                                        (Ho, Wo), geometry.conf, conf_threshold, point_radius, on_step=on_step)
    if (Ho, Wo) == geometry.size:
        for v in range(cams.batch_shape[0]):
            if not torch.allclose(cams.K[v].double(), geometry.K.double(), atol=1e-4):
                continue
            for t in range(geometry.num_frames):
                if torch.allclose(cams.viewmat[v].double(), geometry.w2c[t].double(), atol=1e-6):
                    renders[v, t] = images[t].to(renders.dtype)
                    masks[v, t] = True
    return renders, masks


def contact_sheet(renders: Tensor, max_width: int = 1024) -> Tensor:
    """A V x T grid (rows = views) of renders (V, T, H, W, 3), downscaled so the sheet is at
    most ``max_width`` wide (area averaging, 1-pixel gaps). Returns (1, H_s, W_s, 3)."""
    V, T, H, W, _ = renders.shape
    f = max(1, math.ceil(T * (W + 1) / max_width))
    h, w = max(1, H // f), max(1, W // f)
    small = torch.nn.functional.adaptive_avg_pool2d(renders.reshape(V * T, H, W, 3).permute(0, 3, 1, 2).float(),
                                                    (h, w)).permute(0, 2, 3, 1).reshape(V, T, h, w, 3)
    sheet = torch.full((V * (h + 1) - 1, T * (w + 1) - 1, 3), 0.25, device=renders.device)
    for v in range(V):
        for t in range(T):
            sheet[v * (h + 1):v * (h + 1) + h, t * (w + 1):t * (w + 1) + w] = small[v, t]
    return sheet[None]


def project_rig_batch(images: Tensor, geometry: Geometry, rig: Rig, size: Optional[tuple[int, int]] = None,
                      conf_threshold: float = 0.0, point_radius: int = 0, *,
                      on_step: StepFn | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """``project_rig`` in the host's batch layout: renders (V*T, H', W', 3) view-major, masks
    (V*T, H', W') float {0, 1}, and a V x T contact sheet (1, h, w, 3)."""
    renders, masks = project_rig(images, geometry, rig, size, conf_threshold, point_radius, on_step=on_step)
    V, T = renders.shape[:2]
    return (renders.reshape(V * T, *renders.shape[2:]).float(), masks.reshape(V * T, *masks.shape[2:]).float(),
            contact_sheet(renders))
