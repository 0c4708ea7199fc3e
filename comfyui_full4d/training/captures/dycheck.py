"""DyCheck (iPhone) and Nerfies / HyperNeRF: ``camera/<id>.json`` + ``rgb/<f>x/<id>.png`` +
``dataset.json`` + ``metadata.json``.

``dataset.json`` lists the frame ids; ``metadata.json`` maps each id to its ``camera_id`` and its
time index ``warp_id``. ``camera/<id>.json`` is the camera of that frame at full resolution, as
google/nerfies ``camera.py`` defines it: ``orientation`` is the world-to-camera rotation (rows =
camera axes, OpenCV: x right, y down, z forward), ``position`` the centre, so ``t = -R C``;
``focal_length``, ``pixel_aspect_ratio`` (fy = f * ratio), ``skew``, ``principal_point`` in pixels
with centres at +0.5 (their ``get_pixel_centers``), the same convention as ours; distortion
``radial_distortion`` [k1, k2, k3] and ``tangential_distortion`` [p1, p2] (OpenCV's model, i.e.
``[k1, k2, p1, p2, k3]``); ``image_size`` [W, H]. ``rgb/<f>x`` holds the frames downscaled by f:
``K`` scales by 1/f (focal and principal point, as Nerfies' ``Camera.scale``).

Units: DyCheck iPhone captures (``extra.json`` with ``fps``, Record3D poses) are metric; Nerfies /
HyperNeRF are posed by COLMAP (arbitrary scale) and store no frame rate (15 fps assumed, DyCheck's
default for them). ``scene.json`` ``near`` and ``far`` are in the
normalised frame ``(p - center) * scale``: divided by ``scale`` they bound the scene in world
units. The DyCheck iPhone camera 0 is the moving hand-held one; cameras 1 and 2 are fixed.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from .base import Capture, CaptureError, FrameSource, View, pose_matrix, rotation_angle_deg, where

__all__ = ["nerfies_to_camera", "camera_to_nerfies", "matches", "read", "DEFAULT_FPS"]

DEFAULT_FPS = 15.0  # DyCheck's default for Nerfies / HyperNeRF sequences (they store no frame rate)
_FACTORS = (1, 2, 4, 8, 16)


def nerfies_to_camera(cam: dict) -> tuple[Tensor, Tensor, Tensor, tuple[int, int]]:
    """A Nerfies camera dict -> (K (3, 3), w2c (4, 4), dist (5,) OpenCV order, (W, H)), float64."""
    f = float(cam["focal_length"])
    par = float(cam.get("pixel_aspect_ratio", 1.0))
    skew = float(cam.get("skew", 0.0))
    cx, cy = (float(x) for x in cam["principal_point"])
    K = torch.tensor([[f, skew, cx], [0.0, f * par, cy], [0.0, 0.0, 1.0]], dtype=torch.float64)
    R = torch.tensor(cam["orientation"], dtype=torch.float64).reshape(3, 3)
    C = torch.tensor(cam["position"], dtype=torch.float64).reshape(3)
    radial = [float(x) for x in cam.get("radial_distortion", (0.0, 0.0, 0.0))] + [0.0] * 3
    tang = [float(x) for x in cam.get("tangential_distortion", cam.get("tangential", (0.0, 0.0)))] + [0.0] * 2
    dist = torch.tensor([radial[0], radial[1], tang[0], tang[1], radial[2]], dtype=torch.float64)
    W, H = (int(x) for x in cam["image_size"])
    return K, pose_matrix(R, -(R @ C)), dist, (W, H)


def camera_to_nerfies(K: Tensor, w2c: Tensor, dist: Tensor, size: tuple[int, int]) -> dict:
    """Inverse of ``nerfies_to_camera`` (JSON-ready)."""
    R, t = w2c[:3, :3].double(), w2c[:3, 3].double()
    d = dist.double().tolist()
    return {"orientation": R.tolist(), "position": (-(R.T @ t)).tolist(), "focal_length": float(K[0, 0]),
            "principal_point": [float(K[0, 2]), float(K[1, 2])], "skew": float(K[0, 1]),
            "pixel_aspect_ratio": float(K[1, 1] / K[0, 0]), "radial_distortion": [d[0], d[1], d[4]],
            "tangential_distortion": [d[2], d[3]], "image_size": [int(size[0]), int(size[1])]}


def matches(root: Path) -> bool:
    return (root / "dataset.json").is_file() and (root / "metadata.json").is_file() and (root / "camera").is_dir()


def _json(root: Path, rel: str, label: str):
    try:
        return json.loads((root / rel).read_text())
    except FileNotFoundError:
        raise CaptureError(f"{where(label, rel)}: missing") from None
    except (OSError, json.JSONDecodeError) as e:
        raise CaptureError(f"{where(label, rel)}: not valid JSON ({e})") from None


def read(root: Path, label: str) -> Capture:
    """A DyCheck / Nerfies sequence folder -> Capture (one view per camera_id, frames by warp_id)."""
    ids = _json(root, "dataset.json", label).get("ids")
    meta = _json(root, "metadata.json", label)
    if not isinstance(ids, list) or not ids:
        raise CaptureError(f"{where(label, 'dataset.json')}: 'ids' must be a non-empty list of frame ids")
    entries: dict[int, dict[int, str]] = {}
    for fid in ids:
        m = meta.get(fid) if isinstance(meta, dict) else None
        if not isinstance(m, dict) or "camera_id" not in m or "warp_id" not in m:
            raise CaptureError(f"{where(label, 'metadata.json')}: frame {fid!r} needs camera_id and warp_id")
        entries.setdefault(int(m["camera_id"]), {})[int(m["warp_id"])] = str(fid)
    T = 1 + max(t for e in entries.values() for t in e)
    factor = next((f for f in _FACTORS if (root / "rgb" / f"{f}x" / f"{ids[0]}.png").is_file()), None)
    if factor is None:
        raise CaptureError(f"{where(label, 'rgb')}: no frames: expected rgb/1x/{ids[0]}.png (or 2x, 4x, ...)")
    rgb = root / "rgb" / f"{factor}x"
    extra = _json(root, "extra.json", label) if (root / "extra.json").is_file() else None
    views = []
    for cid in sorted(entries):
        frames = entries[cid]
        w2c = torch.full((T, 4, 4), float("nan"), dtype=torch.float64)
        first = None
        for t, fid in sorted(frames.items()):
            rel = f"camera/{fid}.json"
            try:
                K, pose, dist, size = nerfies_to_camera(_json(root, rel, label))
            except (KeyError, TypeError, ValueError) as e:
                raise CaptureError(f"{where(label, rel)}: not a Nerfies camera ({e!r})") from None
            if first is None:
                first = (K, dist, size)
            elif not (torch.allclose(K, first[0], rtol=1e-6, atol=1e-6) and torch.allclose(dist, first[1], atol=1e-9)):
                raise CaptureError(f"{where(label, rel)}: intrinsics change over time (zoom); camera {cid} needs one K")
            w2c[t] = pose
        K, dist, (W, H) = first
        images = tuple((rgb / f"{frames[t]}.png") if t in frames else None for t in range(T))
        for p in images:
            if p is not None and not p.is_file():
                raise CaptureError(f"{where(label, f'rgb/{factor}x/{p.name}')}: missing (listed in dataset.json)")
        w, h = round(W / factor), round(H / factor)
        K = torch.diag(torch.tensor([1 / factor, 1 / factor, 1.0], dtype=torch.float64)) @ K
        views.append(View(name=f"cam{cid}", frames=FrameSource(images=images), K=K, w2c=w2c, width=w, height=h,
                          dist=dist if bool(dist.abs().max() > 0) else None))
    bounds = None
    if (root / "scene.json").is_file():
        sc = _json(root, "scene.json", label)
        try:
            near, far, scale = float(sc["near"]), float(sc["far"]), float(sc["scale"])
            bounds = (near / scale, far / scale) if 0 < near < far and scale > 0 else None
        except (KeyError, TypeError, ValueError):
            bounds = None
    iphone = isinstance(extra, dict) and "fps" in extra  # DyCheck's iPhone processing writes fps and factor
    fps = float(extra["fps"]) if iphone else DEFAULT_FPS
    fixed = tuple(v.name for v in views if _is_fixed(v.w2c))
    return Capture(format="dycheck", label=label, views=tuple(views), fps=fps,
                   units="metres" if iphone else "arbitrary (COLMAP)",
                   default=fixed if 2 <= len(fixed) < len(views) else (), bounds=bounds)


def _is_fixed(w2c: Tensor, deg: float = 0.05) -> bool:
    """Every posed frame has the first posed frame's pose (within ``deg`` and 1e-6 relative)."""
    ok = ~torch.isnan(w2c[:, 0, 0])
    P = w2c[ok]
    if P.shape[0] < 2:
        return True
    C = -(P[:, :3, :3].transpose(-1, -2) @ P[:, :3, 3:4])[..., 0]
    span = float((C - C[0]).norm(dim=-1).max())
    return span <= 1e-6 * max(1.0, float(C[0].norm())) and all(
        rotation_angle_deg(P[0, :3, :3], P[i, :3, :3]) <= deg for i in range(P.shape[0]))
