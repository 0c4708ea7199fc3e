"""The one camera type of the project, and its conventions (stated here once).

Conventions (every module obeys these):

* **OpenCV camera**: x right, y down, z forward. A point in front of the camera has z > 0.
* **World-to-camera** extrinsics: ``x_cam = R @ x_world + t``; ``viewmat = [[R, t], [0, 1]]``.
  The camera centre in world space is ``C = -R^T t``.
* **Intrinsics** ``K`` in pixels: ``u = fx * x / z + cx``, ``v = fy * y / z + cy``. Pixel ``(i, j)``
  (row ``i``, column ``j``) covers ``[j, j+1) x [i, i+1)``; its centre is ``(j + 0.5, i + 0.5)``
  (gsplat's convention). A centred principal point is ``cx = W / 2, cy = H / 2``.
* **World up** is ``-y`` (the OpenCV world of the source camera). Rigs orbit about the world
  y axis; the azimuth of a point is ``atan2(z, x)`` relative to the rig centre (SPEC 7).
* **Units**: rigs are expressed in *scene units*: one unit is the scene scale ``s`` = median
  metric depth of source frame 0 (SPEC 3). ``Rig.metric(s)`` gives metric cameras.
* Depth maps are metric **z-depth** (distance along the optical axis), not ray length.

Other formats (DA3 3x4 extrinsics, the host's ``LOAD3D_CAMERA`` dict, OpenGL/Blender
camera-to-world) are converted at the edge by the functions in this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

__all__ = ["Camera", "Rig", "intrinsics_from_fov", "look_at", "THREEJS_TO_WORLD", "camera_from_load3d",
           "camera_to_load3d", "opengl_c2w_to_w2c", "w2c_to_opengl_c2w", "relative_to"]


def _check_shape(name: str, x: Tensor, tail: tuple[int, ...]) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if tuple(x.shape[-len(tail):]) != tail:
        raise ValueError(f"{name} must have shape (..., {', '.join(map(str, tail))}), got {tuple(x.shape)}")


@dataclass(frozen=True)
class Camera:
    """Pinhole camera(s), OpenCV convention, world-to-camera.

    K: (..., 3, 3) intrinsics in pixels.
    R: (..., 3, 3) world-to-camera rotation.
    t: (..., 3) world-to-camera translation.
    width, height: image size in pixels (shared by the batch).
    """

    K: Tensor
    R: Tensor
    t: Tensor
    width: int
    height: int

    def __post_init__(self) -> None:
        _check_shape("K", self.K, (3, 3))
        _check_shape("R", self.R, (3, 3))
        _check_shape("t", self.t, (3,))
        if self.R.shape[:-2] != self.t.shape[:-1]:
            raise ValueError(f"R batch {tuple(self.R.shape[:-2])} and t batch {tuple(self.t.shape[:-1])} differ")
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f"camera size must be positive, got width={self.width}, height={self.height}")

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_viewmat(cls, viewmat: Tensor, K: Tensor, width: int, height: int) -> "Camera":
        """viewmat (..., 4, 4) or (..., 3, 4) world-to-camera."""
        if viewmat.shape[-1] != 4 or viewmat.shape[-2] not in (3, 4):
            raise ValueError(f"viewmat must be (..., 4, 4) or (..., 3, 4), got {tuple(viewmat.shape)}")
        return cls(K=K, R=viewmat[..., :3, :3], t=viewmat[..., :3, 3], width=int(width), height=int(height))

    # ---- derived quantities -------------------------------------------------------------
    @property
    def batch_shape(self) -> torch.Size:
        return self.R.shape[:-2]

    def __len__(self) -> int:
        if len(self.batch_shape) == 0:
            raise TypeError("a single Camera has no len(); it is not batched")
        return self.batch_shape[0]

    def __getitem__(self, idx) -> "Camera":
        K = self.K if self.K.dim() == 2 else self.K[idx]
        return Camera(K=K, R=self.R[idx], t=self.t[idx], width=self.width, height=self.height)

    @property
    def viewmat(self) -> Tensor:
        """(..., 4, 4) world-to-camera."""
        top = torch.cat([self.R, self.t[..., None]], dim=-1)
        bottom = torch.zeros_like(top[..., :1, :])
        bottom[..., 0, 3] = 1
        return torch.cat([top, bottom], dim=-2)

    @property
    def center(self) -> Tensor:
        """(..., 3) camera centre in world space, ``-R^T t``."""
        return -(self.R.transpose(-1, -2) @ self.t[..., None])[..., 0]

    @property
    def c2w(self) -> Tensor:
        """(..., 4, 4) camera-to-world (OpenCV axes)."""
        return torch.linalg.inv(self.viewmat)

    def to(self, *args, **kwargs) -> "Camera":
        return replace(self, K=self.K.to(*args, **kwargs), R=self.R.to(*args, **kwargs), t=self.t.to(*args, **kwargs))

    def resized(self, width: int, height: int) -> "Camera":
        """Same camera for another image size (K scaled per axis; a centre crop is not applied)."""
        sx, sy = width / self.width, height / self.height
        S = torch.tensor([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], dtype=self.K.dtype, device=self.K.device)
        return replace(self, K=S @ self.K, width=int(width), height=int(height))

    def project(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Project world points. points (..., N, 3) -> uv (..., N, 2) pixels, z (..., N) depth."""
        cam = points @ self.R.transpose(-1, -2) + self.t[..., None, :]
        z = cam[..., 2]
        uvw = cam @ self.K.transpose(-1, -2)
        uv = uvw[..., :2] / z[..., None].clamp(min=1e-12)
        return uv, z


def intrinsics_from_fov(fov_y_deg: float, width: int, height: int, dtype=torch.float32) -> Tensor:
    """K (3, 3) with square pixels, vertical field of view ``fov_y_deg``, centred principal point."""
    if not (0.0 < fov_y_deg < 180.0):
        raise ValueError(f"fov_y_deg must be in (0, 180), got {fov_y_deg}")
    f = 0.5 * height / math.tan(math.radians(fov_y_deg) / 2)
    return torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=dtype)


def look_at(eye: Tensor, target: Tensor, up: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """World-to-camera (R, t) of cameras at ``eye`` looking at ``target`` (OpenCV axes).

    eye, target: (..., 3). up: (3,) world up, default ``(0, -1, 0)`` (world y points down).
    Returns R (..., 3, 3), t (..., 3). Raises ValueError when eye == target or the view
    direction is parallel to ``up``.
    """
    eye, target = torch.as_tensor(eye), torch.as_tensor(target, dtype=torch.as_tensor(eye).dtype)
    if up is None:
        up = torch.tensor([0.0, -1.0, 0.0], dtype=eye.dtype)
    fwd = target - eye
    n = fwd.norm(dim=-1, keepdim=True)
    if bool((n < 1e-9).any()):
        raise ValueError("look_at: a camera sits on its look-at point (eye == target)")
    z = fwd / n
    x = torch.cross((-up).expand_as(z), z, dim=-1)  # right = down x forward (OpenCV: x = y × z)
    xn = x.norm(dim=-1, keepdim=True)
    if bool((xn < 1e-9).any()):
        raise ValueError("look_at: the view direction is parallel to the up vector")
    x = x / xn
    y = torch.cross(z, x, dim=-1)
    R = torch.stack([x, y, z], dim=-2)  # rows: camera axes in world coords
    t = -(R @ eye[..., None])[..., 0]
    return R, t


@dataclass(frozen=True)
class Rig:
    """A camera rig in scene units (SPEC 3): view 0 is the source camera.

    cameras: batched Camera (V,), world = the source camera's frame at frame 0, translations
      in scene units (1 = median source depth of frame 0).
    center: (3,) the look-at point in scene units.
    names: one label per view.
    """

    cameras: Camera
    center: Tensor = field(default_factory=lambda: torch.tensor([0.0, 0.0, 1.0]))
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.cameras.batch_shape) != 1:
            raise ValueError(f"Rig cameras must be batched as (V,), got batch {tuple(self.cameras.batch_shape)}")
        if self.names and len(self.names) != len(self.cameras):
            raise ValueError(f"Rig has {len(self.cameras)} cameras but {len(self.names)} names")

    @property
    def num_views(self) -> int:
        return len(self.cameras)

    def metric(self, scale: float) -> Camera:
        """Cameras with translations in metres: ``t * scale``."""
        if not (scale > 0 and math.isfinite(scale)):
            raise ValueError(f"scene scale must be positive and finite, got {scale}")
        return replace(self.cameras, t=self.cameras.t * scale)


# ---- conversions at the edge --------------------------------------------------------------

# three.js world (x right, y up, z towards the viewer) -> ours (x right, y down, z forward).
THREEJS_TO_WORLD = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
# OpenGL / Blender camera axes (x right, y up, z backwards) <-> OpenCV camera axes; its own inverse.
_GL_TO_CV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))


def _vec3(info: dict, key: str) -> Tensor:
    v = info.get(key) if isinstance(info, dict) else None
    if not isinstance(v, dict) or not all(isinstance(v.get(a), (int, float)) for a in "xyz"):
        raise ValueError(f"LOAD3D_CAMERA['{key}'] must be a dict with numeric x, y, z, got {v!r}")
    out = torch.tensor([float(v["x"]), float(v["y"]), float(v["z"])], dtype=torch.float64)
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"LOAD3D_CAMERA['{key}'] holds NaN/inf: {v!r}")
    return out


def camera_from_load3d(info: dict, K: Tensor, width: int, height: int) -> Camera:
    """A Camera from the host's ``LOAD3D_CAMERA`` dict (``{position, target, zoom, cameraType}``).

    The dict is in the three.js world of the 3D viewer (y up, a camera looks down its -z), so
    ``X_ours = diag(1, -1, -1) X_three`` (``THREEJS_TO_WORLD``): x stays, y and z flip; the
    viewer's up (+y) becomes our up (-y). Positions are taken as scene units. The camera sits at
    ``position`` and looks at ``target`` with no roll (``look_at``). The dict carries no field of
    view, so ``K`` (3, 3) (normally the source intrinsics, shared by the rig) gives it; ``zoom``
    (three.js: fov narrowed by the factor zoom) multiplies fx and fy. Only ``cameraType``
    ``"perspective"`` is accepted.
    """
    kind = info.get("cameraType", "perspective") if isinstance(info, dict) else None
    if kind != "perspective":
        raise ValueError(f"LOAD3D_CAMERA cameraType must be 'perspective' (a pinhole camera), got {kind!r}; "
                         "switch the 3D viewer to a perspective camera")
    zoom = float(info.get("zoom", 1) or 1)
    if not (zoom > 0 and math.isfinite(zoom)):
        raise ValueError(f"LOAD3D_CAMERA zoom must be positive, got {info.get('zoom')!r}")
    eye = THREEJS_TO_WORLD @ _vec3(info, "position")
    target = THREEJS_TO_WORLD @ _vec3(info, "target")
    if float((eye - target).norm()) < 1e-9:
        raise ValueError(f"LOAD3D_CAMERA position equals target ({info['position']}); move the camera")
    R, t = look_at(eye, target)
    Kz = K.double().clone()
    Kz[0, 0] *= zoom
    Kz[1, 1] *= zoom
    Kz[0, 1] *= zoom
    return Camera(K=Kz.to(K.dtype), R=R.to(K.dtype), t=t.to(K.dtype), width=int(width), height=int(height))


def camera_to_load3d(camera: Camera, target: Tensor | None = None) -> dict:
    """The ``LOAD3D_CAMERA`` dict of a single Camera (inverse of ``camera_from_load3d`` for
    cameras without roll). target: (3,) look-at point in our world, default one unit ahead."""
    C = camera.center.double()
    if target is None:
        target = C + camera.R[2].double()
    p, q = THREEJS_TO_WORLD @ C, THREEJS_TO_WORLD @ torch.as_tensor(target, dtype=torch.float64)
    as_dict = lambda v: {"x": float(v[0]), "y": float(v[1]), "z": float(v[2])}  # noqa: E731
    return {"position": as_dict(p), "target": as_dict(q), "zoom": 1, "cameraType": "perspective"}


def opengl_c2w_to_w2c(c2w: Tensor) -> Tensor:
    """OpenGL/Blender camera-to-world (..., 4, 4) -> our OpenCV world-to-camera (..., 4, 4).

    Same world frame; the camera axes flip y and z: ``w2c = inv(c2w @ diag(1, -1, -1, 1))``."""
    _check_shape("c2w", c2w, (4, 4))
    return torch.linalg.inv(c2w.double() @ _GL_TO_CV).to(c2w.dtype)


def w2c_to_opengl_c2w(w2c: Tensor) -> Tensor:
    """Inverse of ``opengl_c2w_to_w2c``: (..., 4, 4) -> (..., 4, 4)."""
    _check_shape("w2c", w2c, (4, 4))
    return (torch.linalg.inv(w2c.double()) @ _GL_TO_CV).to(w2c.dtype)


def relative_to(w2c: Tensor, ref_w2c: Tensor) -> Tensor:
    """Poses relative to a reference camera (SPEC 3): ``w2c @ inv(ref_w2c)``, so the reference
    becomes the identity and the world is its camera frame. w2c (..., 4, 4), ref_w2c (4, 4)."""
    _check_shape("w2c", w2c, (4, 4))
    _check_shape("ref_w2c", ref_w2c, (4, 4))
    return (w2c.double() @ torch.linalg.inv(ref_w2c.double())).to(w2c.dtype)
