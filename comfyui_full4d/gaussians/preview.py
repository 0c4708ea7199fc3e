"""Quantised per-frame Gaussian buffers for the browser preview (issue 7).

Layout (little endian), "F4DP" version 1:

    header (52 bytes): magic b"F4DP" | version u16 | reserved u16 | N u32 | T u32 | fps f32
                       | aabb_min f32[3] | aabb_max f32[3] | log_scale_min f32 | log_scale_max f32
    T frames, each N * 17 bytes, stored as consecutive planes:
        positions u16 (N, 3)   q = round((x - min) / (max - min) * 65535)
        rgba      u8  (N, 4)   colour in [0, 1] and opacity in [0, 1] times 255
        scales    u8  (N, 3)   log-scale mapped linearly from [log_scale_min, log_scale_max] to 0..255
        quats     i8  (N, 4)   unit wxyz times 127

Error bounds: position <= extent / 131070 per axis, colour/opacity <= 1/510,
log-scale <= (max - min) / 510, quaternion component <= 1/254 (before renormalising).
"""

from __future__ import annotations

import json
import math
import os
import struct

import numpy as np
import torch

MAGIC = b"F4DP"
VERSION = 1
_HEADER = struct.Struct("<4sHHIIf3f3fff")
HEADER_BYTES = _HEADER.size
BYTES_PER_GAUSSIAN = 6 + 4 + 3 + 4
_KEYS = ("means", "quats", "scales", "opacities", "colors")


def _np(x, name: str, shape_tail: tuple[int, ...], n: int | None) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    a = a.astype(np.float64, copy=False)
    if a.shape[1:] != shape_tail or (n is not None and a.shape[0] != n):
        raise ValueError(f"frames[...]['{name}'] has shape {a.shape}; expected (N,{','.join(map(str, shape_tail))}) "
                         f"with the same N in every frame")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"frames[...]['{name}'] contains NaN/inf; clean the scene before previewing")
    return a


def encode_frames(frames: list[dict], fps: float = 16.0) -> bytes:
    """Encode T frames of N Gaussians each (means (N, 3), quats (N, 4) wxyz, scales (N, 3) linear,
    opacities (N,), colors (N, 3) in [0, 1]) into one "F4DP" buffer (header + T * N * 17 bytes)."""
    if not frames:
        raise ValueError("frames is empty; pass at least one frame dict")
    if not fps > 0:
        raise ValueError(f"fps={fps} must be > 0")
    n = None
    arrs = []
    for f in frames:
        missing = [k for k in _KEYS if k not in f]
        if missing:
            raise ValueError(f"frame dict lacks {missing}; needs keys {_KEYS}")
        m = _np(f["means"], "means", (3,), n)
        n = m.shape[0]
        arrs.append((m, _np(f["quats"], "quats", (4,), n), _np(f["scales"], "scales", (3,), n),
                     _np(f["opacities"], "opacities", (), n), _np(f["colors"], "colors", (3,), n)))
    lo = np.min([a[0].min(0) if n else np.zeros(3) for a in arrs], axis=0)
    hi = np.max([a[0].max(0) if n else np.ones(3) for a in arrs], axis=0)
    pad = 1e-5 * np.maximum(1.0, np.abs(lo))  # a degenerate range must stay non-empty in float32
    hi = np.where(hi - lo < pad, lo + pad, hi)
    logs = [np.log(np.clip(a[2], 1e-12, None)) for a in arrs]
    smin = float(min(l.min() for l in logs)) if n else 0.0
    smax = float(max(l.max() for l in logs)) if n else 1.0
    smax = max(smax, smin + 1e-5 * max(1.0, abs(smin)))
    out = [_HEADER.pack(MAGIC, VERSION, 0, n, len(frames), float(fps), *lo.astype(np.float32),
                        *hi.astype(np.float32), smin, smax)]
    lo32, hi32 = lo.astype(np.float32).astype(np.float64), hi.astype(np.float32).astype(np.float64)
    s32 = (float(np.float32(smin)), float(np.float32(smax)))
    for (m, q, _, o, c), ls in zip(arrs, logs):
        pos = np.round(np.clip((m - lo32) / (hi32 - lo32), 0, 1) * 65535).astype("<u2")
        rgba = np.round(np.clip(np.concatenate([c, o[:, None]], 1), 0, 1) * 255).astype(np.uint8)
        sc = np.round(np.clip((ls - s32[0]) / (s32[1] - s32[0]), 0, 1) * 255).astype(np.uint8)
        qn = q / np.clip(np.linalg.norm(q, axis=1, keepdims=True), 1e-12, None)
        qq = np.round(qn * 127).astype(np.int8)
        out += [pos.tobytes(), rgba.tobytes(), sc.tobytes(), qq.tobytes()]
    return b"".join(out)


def decode_frames(buf: bytes) -> tuple[dict, list[dict[str, np.ndarray]]]:
    """Inverse of ``encode_frames``: (header dict, list of T frame dicts of float32 arrays)."""
    if len(buf) < HEADER_BYTES or buf[:4] != MAGIC:
        raise ValueError("buf is not an F4DP preview buffer (bad magic); produce it with encode_frames")
    magic, ver, _, n, t, fps, *rest = _HEADER.unpack_from(buf, 0)
    if ver != VERSION:
        raise ValueError(f"F4DP version {ver} unsupported; expected {VERSION}")
    lo, hi = np.array(rest[0:3], np.float64), np.array(rest[3:6], np.float64)
    smin, smax = rest[6], rest[7]
    if len(buf) != HEADER_BYTES + t * n * BYTES_PER_GAUSSIAN:
        raise ValueError(f"F4DP buffer has {len(buf)} bytes; header says N={n}, T={t}")
    frames, off = [], HEADER_BYTES
    for _ in range(t):
        pos = np.frombuffer(buf, "<u2", n * 3, off).reshape(n, 3); off += n * 6
        rgba = np.frombuffer(buf, np.uint8, n * 4, off).reshape(n, 4); off += n * 4
        sc = np.frombuffer(buf, np.uint8, n * 3, off).reshape(n, 3); off += n * 3
        qq = np.frombuffer(buf, np.int8, n * 4, off).reshape(n, 4); off += n * 4
        q = qq.astype(np.float64) / 127
        q /= np.clip(np.linalg.norm(q, axis=1, keepdims=True), 1e-12, None)
        frames.append({"means": (lo + pos / 65535 * (hi - lo)).astype(np.float32),
                       "colors": (rgba[:, :3] / 255).astype(np.float32),
                       "opacities": (rgba[:, 3] / 255).astype(np.float32),
                       "scales": np.exp(smin + sc / 255 * (smax - smin)).astype(np.float32),
                       "quats": q.astype(np.float32)})
    header = {"n": n, "num_frames": t, "fps": fps, "aabb": np.stack([lo, hi]).astype(np.float32),
              "log_scale_range": (smin, smax)}
    return header, frames


def read_ply_gaussians(path: str) -> dict[str, np.ndarray]:
    """Static 3DGS PLY (binary little endian; x,y,z, f_dc_0..2, opacity logit, scale_0..2 log, rot_0..3 wxyz)
    -> one frame dict. Colour = 0.5 + C0 * f_dc with C0 = 0.28209479."""
    with open(path, "rb") as fh:
        data = fh.read()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply") or end < 0:
        raise ValueError(f"ply_path={path!r} is not a PLY file")
    head = data[:end].decode("ascii", "replace").splitlines()
    if "format binary_little_endian 1.0" not in head:
        raise ValueError(f"ply_path={path!r}: only binary_little_endian PLY is supported")
    types = {"float": "<f4", "double": "<f8", "uchar": "u1", "int": "<i4", "uint": "<u4", "short": "<i2",
             "ushort": "<u2", "char": "i1", "float32": "<f4", "uint8": "u1"}
    n, props, in_vertex = 0, [], False
    for line in head:
        p = line.split()
        if p[:2] == ["element", "vertex"]:
            n, in_vertex = int(p[2]), True
        elif p and p[0] == "element":
            in_vertex = False
        elif p and p[0] == "property" and in_vertex:
            props.append((p[2], types[p[1]]))
    arr = np.frombuffer(data, np.dtype(props), n, end + len(b"end_header\n"))
    need = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
            "rot_0", "rot_1", "rot_2", "rot_3"]
    missing = [k for k in need if k not in arr.dtype.names]
    if missing:
        raise ValueError(f"ply_path={path!r} lacks 3DGS properties {missing}")
    col = lambda *ks: np.stack([arr[k].astype(np.float64) for k in ks], 1)
    return {"means": col("x", "y", "z"), "quats": col("rot_0", "rot_1", "rot_2", "rot_3"),
            "scales": np.exp(col("scale_0", "scale_1", "scale_2")),
            "opacities": 1 / (1 + np.exp(-arr["opacity"].astype(np.float64))),
            "colors": np.clip(0.5 + 0.28209479 * col("f_dc_0", "f_dc_1", "f_dc_2"), 0, 1)}


def cameras_json(rig, scale: float, orbit_n: int = 60) -> dict:
    """The cameras ``render_rig`` (Full4DRender4DGS) renders a scene of metric ``scale`` from, for the widget:
    the rig's ``rig.metric(scale)`` and its orbit's ``interpolate_rig_cameras(rig, orbit_n).metric(scale)``, so
    "orbit" camera i is Full4DRender4DGS's orbit camera i at ``num_frames = orbit_n``.

    Rig (scene units, OpenCV world-to-camera) -> {"rig": [...], "orbit": [...], "center": (3,) the rig's
    look-at point in metres (``rig.center * scale``, what drag-orbit turns about), "scale": scale}; per camera
    {name, eye (3,) = -R^T t, R (9,) row-major world-to-camera, forward (3,) = R[2], up (3,) = -R[1],
    fov_y_deg, K [fx, fy, cx, cy] in pixels of the rig's image, width, height}. World up = -y."""
    from ..geometry.rig import interpolate_rig_cameras

    scale = float(scale)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale={scale}: the scene scale (metres per scene unit) must be positive and finite")

    def cams(r) -> list[dict]:
        c = r.metric(scale)
        R, t = c.R.double(), c.t.double()
        V = R.shape[0]
        eye = -(R.transpose(-1, -2) @ t.unsqueeze(-1)).squeeze(-1)
        K = c.K.double().expand(V, 3, 3)
        fov = 2 * torch.atan(0.5 * c.height / K[:, 1, 1]) * 180 / torch.pi
        names = r.names or tuple(f"view{i}" for i in range(V))
        return [{"name": str(names[i]), "eye": eye[i].tolist(), "R": R[i].reshape(9).tolist(),
                 "forward": R[i, 2].tolist(), "up": (-R[i, 1]).tolist(), "fov_y_deg": float(fov[i]),
                 "K": [float(K[i, 0, 0]), float(K[i, 1, 1]), float(K[i, 0, 2]), float(K[i, 1, 2])],
                 "width": int(c.width), "height": int(c.height)} for i in range(V)]

    out = {"rig": cams(rig), "center": [float(v) * scale for v in rig.center], "orbit": [], "scale": scale}
    if rig.num_views >= 2:
        out["orbit"] = cams(interpolate_rig_cameras(rig, orbit_n))
    return out


SCALE_COMMENT = "full4d_scale"  # PLY header line "comment full4d_scale <metres per scene unit>" (export.write_ply)


def ply_recorded_scale(path: str, root: str | None = None) -> tuple[float | None, str]:
    """The metric scale a per-frame PLY of Full4DSave4DGS records: its header's ``comment full4d_scale <s>``,
    else the ``scale`` in the extras of the ``scene4d.safetensors`` written beside it (read only when it lies
    inside the folder ``root``, if given). (None, "") when neither (e.g. a PLY from core's SplatToFile3D, which
    writes no comment), with where it was found otherwise."""
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    end = head.find(b"end_header")
    for line in head[:end if end >= 0 else len(head)].decode("ascii", "replace").splitlines():
        p = line.split()
        if p[:2] == ["comment", SCALE_COMMENT] and len(p) >= 3:
            return _positive(p[2], f"ply_path: {path}: header comment {SCALE_COMMENT}"), "the PLY header"
    beside = os.path.realpath(os.path.join(os.path.dirname(path), "scene4d.safetensors"))
    inside = root is None or os.path.commonpath([os.path.realpath(root), beside]) == os.path.realpath(root)
    if inside and os.path.isfile(beside):
        from safetensors import safe_open

        try:
            with safe_open(beside, "np") as f:
                extras = json.loads((f.metadata() or {}).get("extras", "{}"))
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"ply_path: {beside!r} beside the PLY is not a readable 4D scene file ({e})") from None
        if "scale" in extras:
            return _positive(extras["scale"], f"ply_path: {beside} beside the PLY: its scale"), \
                "scene4d.safetensors beside the PLY"
    return None, ""


def _positive(v, what: str) -> float:
    try:
        s = float(v)
    except (TypeError, ValueError):
        s = float("nan")
    if not (math.isfinite(s) and s > 0):
        raise ValueError(f"{what} = {v!r} is not a positive scale")
    return s


def preview_scale(scene=None, ply_path: str | None = None, geometry_scale: float | None = None,
                  root: str | None = None) -> tuple[float, str]:
    """(scale, sentence) for the widget's cameras: a scene's own ``extras["scale"]`` (what its renders use;
    1 when absent, as ``render_rig``); for a PLY what it records (``ply_recorded_scale``, ``root`` as there),
    else the connected geometry's scale, else 1 (the rig's scene units)."""

    def unused(s: float) -> str:
        g = geometry_scale
        return f"; the geometry's {float(g):.4g} is not used" if g is not None and abs(float(g) - s) > 1e-6 * s else ""

    if scene is not None:
        s = float(scene.extras.get("scale", 1.0))
        return s, f"scale {s:.4g} m per rig unit, the scene's own (its renders use it){unused(s)}"
    recorded, where = ply_recorded_scale(ply_path, root) if ply_path else (None, "")
    if recorded is not None:
        return recorded, f"scale {recorded:.4g} m per rig unit, from {where}{unused(recorded)}"
    if geometry_scale is not None:
        s = _positive(geometry_scale, "geometry.scale")
        return s, f"scale {s:.4g} m per rig unit, from the geometry input (the PLY records none)"
    return 1.0, ("scale 1: the PLY records no scale and no geometry is connected, so the rig is drawn in its scene "
                 "units; connect the source geometry if the splats are metric")


def scene_frames(scene, times: list[float]) -> list[dict]:
    """SCENE4D (``.at(time)`` + SH) -> frame dicts with DC colour (0.5 + C0 * sh[:, 0])."""
    frames = []
    with torch.no_grad():
        for tm in times:
            m, q, s, o, sh = scene.at(float(tm))
            frames.append({"means": m, "quats": q, "scales": s, "opacities": o,
                           "colors": (0.5 + 0.28209479 * sh[:, 0]).clamp(0, 1)})
    return frames
