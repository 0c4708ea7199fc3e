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


def cameras_json(rig, orbit_n: int = 60) -> dict:
    """Rig (scene units, OpenCV world-to-camera) -> {"rig": [...], "orbit": [...]} of
    {name, eye (3,), forward (3,), up (3,), fov_y_deg} in world coordinates (world up = -y) for the widget."""
    from ..geometry.rig import interpolate_rig_cameras

    def cams(r) -> list[dict]:
        c = r.cameras
        R, t = c.R.double(), c.t.double()
        eye = -(R.transpose(-1, -2) @ t.unsqueeze(-1)).squeeze(-1)
        fy = c.K[..., 1, 1].double().expand(R.shape[0])
        fov = 2 * torch.atan(0.5 * c.height / fy) * 180 / torch.pi
        names = r.names or tuple(f"view{i}" for i in range(len(c)))
        return [{"name": str(names[i]), "eye": eye[i].tolist(), "forward": R[i, 2].tolist(),
                 "up": (-R[i, 1]).tolist(), "fov_y_deg": float(fov[i])} for i in range(R.shape[0])]

    out = {"rig": cams(rig), "center": [float(v) for v in rig.center], "orbit": []}
    if rig.num_views >= 2:
        out["orbit"] = cams(interpolate_rig_cameras(rig, orbit_n))
    return out


def scene_frames(scene, times: list[float]) -> list[dict]:
    """SCENE4D (``.at(time)`` + SH) -> frame dicts with DC colour (0.5 + C0 * sh[:, 0])."""
    frames = []
    with torch.no_grad():
        for tm in times:
            m, q, s, o, sh = scene.at(float(tm))
            frames.append({"means": m, "quats": q, "scales": s, "opacities": o,
                           "colors": (0.5 + 0.28209479 * sh[:, 0]).clamp(0, 1)})
    return frames
