"""Synchronized multi-view training data (paper section 4.2; schema in ``docs/training.md``).

One folder per scene::

    scene/
      cameras.json          # schema below
      <camera>.mp4 ...      # one video per camera, synchronized, same frame count and size
      depth.safetensors     # optional ground-truth z-depth {camera name: (T, H, W)} (synthetic)
      cache/                # projection renders, written once per clip (safetensors)

``cameras.json``::

    {"version": 1, "fps": 16.0,
     "cameras": [{"name": "cam00", "video": "cam00.mp4", "width": 160, "height": 96,
                  "K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]],      # pixels, centres at +0.5
                  "R": [[...], [...], [...]], "t": [tx, ty, tz]},  # world-to-camera, OpenCV
                 ...]}

Clips (SPEC 1, paper 4.2): ``4k+1`` consecutive frames; one random view is the source
(view 0), the others are targets in random order. Cameras are re-expressed relative to the source
(``w2c_i @ inv(w2c_src)``, so the source is the identity) with translations in scene units
(``s`` = median source depth of the clip's first frame, SPEC 3). The condition of each target
view is the point-cloud projection of the source frames with the source depth (ground truth
when ``depth.safetensors`` exists, otherwise a ``depth_fn`` such as DA3), cached per clip.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from ..geometry.cameras import Camera
from ..geometry.source import scene_scale
from ..common.io import save_tensors, write_text
from ..media.video import save_video

__all__ = ["SceneInfo", "Clip", "load_scene", "find_scenes", "validate_scene", "read_video", "write_video",
           "write_synthetic_scene", "draw_clip", "sample_clip", "projection_renders", "ORTHO_TOL"]

ORTHO_TOL = 1e-3
DepthFn = Callable[[Tensor], Tensor]  # (T, H, W, 3) in [0, 1] -> (T, H, W) metric z-depth


@dataclass(frozen=True)
class SceneInfo:
    """A validated scene folder. cameras: batched Camera (V,) world-to-camera; num_frames per video."""

    root: Path
    names: tuple[str, ...]
    videos: tuple[Path, ...]
    cameras: Camera
    num_frames: int
    fps: float

    @property
    def num_views(self) -> int:
        return len(self.names)


@dataclass(frozen=True)
class Clip:
    """One training sample (view 0 = source, 1..V-1 targets in random order).

    frames: (V, L, H, W, 3) float32 in [0, 1]; renders: (V, L, H, W, 3) projection of the source
    into each camera (view 0: the source frames); masks: (V, L, H, W) bool.
    cameras: Camera (V,) relative to the source (identity at view 0), translations in scene units.
    views: original camera indices; start: first frame; scale: metres per scene unit.
    """

    frames: Tensor
    renders: Tensor
    masks: Tensor
    cameras: Camera
    views: tuple[int, ...]
    start: int
    scale: float


def _err(path: Path, field: str, msg: str) -> ValueError:
    return ValueError(f"{path}: {field}: {msg}")


def _matrix(path: Path, field: str, val, shape: tuple[int, ...]) -> Tensor:
    try:
        m = torch.tensor(val, dtype=torch.float64)
    except (TypeError, ValueError):
        raise _err(path, field, f"must be a numeric array of shape {shape}, got {val!r}") from None
    if tuple(m.shape) != shape or not bool(torch.isfinite(m).all()):
        raise _err(path, field, f"must be a finite array of shape {shape}, got shape {tuple(m.shape)}")
    return m


def _video_info(path: Path, where: Path, field: str) -> tuple[int, int, int]:
    """(frames, height, width) of a video, counting frames by demuxing packets when needed."""
    import av

    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise _err(where, field, f"{path.name} has no video stream")
            s = c.streams.video[0]
            n = int(s.frames or 0)
            if n <= 0:
                n = sum(1 for p in c.demux(s) if p.size > 0)
            return n, int(s.codec_context.height), int(s.codec_context.width)
    except av.FFmpegError as e:
        raise _err(where, field, f"{path.name} cannot be read as a video ({e})") from None


def load_scene(root: str | os.PathLike) -> SceneInfo:
    """Read and validate ``root/cameras.json`` and its videos (see ``validate_scene``)."""
    root = Path(root)
    path = root / "cameras.json"
    if not path.is_file():
        raise ValueError(f"{root}: no cameras.json; every scene folder needs one (see docs/training.md)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise _err(path, "(file)", f"is not valid JSON ({e})") from None
    cams = meta.get("cameras") if isinstance(meta, dict) else None
    if not isinstance(cams, list) or len(cams) < 2:
        raise _err(path, "cameras", "must be a list of at least 2 cameras (a source and a target)")
    fps = float(meta.get("fps", 16.0))
    names, videos, Ks, Rs, ts, counts, sizes = [], [], [], [], [], [], []
    for i, cam in enumerate(cams):
        f = f"cameras[{i}]"
        for key in ("name", "video", "width", "height", "K", "R", "t"):
            if not isinstance(cam, dict) or key not in cam:
                raise _err(path, f"{f}.{key}", "is missing")
        name = str(cam["name"])
        if name in names:
            raise _err(path, f"{f}.name", f"duplicate camera name {name!r}")
        video = root / str(cam["video"])
        if not video.is_file():
            raise _err(path, f"{f}.video", f"camera {name!r}: video file {video} is missing")
        K = _matrix(path, f"{f}.K", cam["K"], (3, 3))
        R = _matrix(path, f"{f}.R", cam["R"], (3, 3))
        t = _matrix(path, f"{f}.t", cam["t"], (3,))
        dev = float((R @ R.T - torch.eye(3, dtype=R.dtype)).abs().max())
        if dev > ORTHO_TOL or float(torch.linalg.det(R)) <= 0:
            raise _err(path, f"{f}.R", f"camera {name!r}: rotation is not orthonormal with det +1 "
                       f"(max |R R^T - I| = {dev:.2e}, det = {float(torch.linalg.det(R)):.3f}); "
                       f"give a world-to-camera rotation (OpenCV)")
        fx, fy = float(K[0, 0]), float(K[1, 1])
        if not (fx > 0 and fy > 0) or K[2].tolist() != [0.0, 0.0, 1.0] or float(K[1, 0]) != 0.0:
            raise _err(path, f"{f}.K", f"camera {name!r}: K must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]] with "
                       f"fx, fy > 0 (pixels), got {K.tolist()}")
        n, h, w = _video_info(video, path, f"{f}.video")
        if (h, w) != (int(cam["height"]), int(cam["width"])):
            raise _err(path, f"{f}.width/height", f"camera {name!r} says {cam['width']}x{cam['height']} "
                       f"but {video.name} is {w}x{h}")
        names.append(name), videos.append(video), Ks.append(K), Rs.append(R), ts.append(t)
        counts.append(n), sizes.append((h, w))
    if len(set(sizes)) > 1:
        detail = ", ".join(f"{nm}: {w}x{h}" for nm, (h, w) in zip(names, sizes))
        raise _err(path, "cameras[*].width/height", f"mixed resolutions ({detail}); resize all videos to one size")
    if len(set(counts)) > 1:
        detail = ", ".join(f"{v.name}: {n}" for v, n in zip(videos, counts))
        raise _err(path, "cameras[*].video", f"unequal frame counts ({detail}); videos must be synchronized "
                   f"and trimmed to the same length")
    listed = {v.name for v in videos}
    strays = sorted(p.name for p in root.iterdir() if p.suffix.lower() in (".mp4", ".mkv", ".mov", ".avi", ".webm")
                    and p.name not in listed)
    if strays:
        raise _err(path, "cameras", f"videos {strays} have no camera entry; add them (name, K, R, t) or remove them")
    h, w = sizes[0]
    camera = Camera(K=torch.stack(Ks).float(), R=torch.stack(Rs).float(), t=torch.stack(ts).float(), width=w, height=h)
    return SceneInfo(root=root, names=tuple(names), videos=tuple(videos), cameras=camera,
                     num_frames=counts[0], fps=fps)


def find_scenes(root: str | os.PathLike) -> list[SceneInfo]:
    """``root`` itself when it holds cameras.json, else every sub-folder that does (sorted), validated."""
    root = Path(root)
    if (root / "cameras.json").is_file():
        return [load_scene(root)]
    if not root.is_dir():
        raise ValueError(f"data folder {root} does not exist")
    scenes = [load_scene(p) for p in sorted(root.iterdir()) if (p / "cameras.json").is_file()]
    if not scenes:
        raise ValueError(f"{root}: no scene folders (sub-folders with a cameras.json) found")
    return scenes


def validate_scene(root: str | os.PathLike) -> SceneInfo:
    """Alias of ``load_scene``: raises ValueError naming the file and field of the first problem."""
    return load_scene(root)


def read_video(path: str | os.PathLike, start: int = 0, count: int | None = None) -> Tensor:
    """Frames ``start .. start+count-1`` of a video -> (count, H, W, 3) float32 in [0, 1].

    Seeks to the keyframe before ``start`` when the stream has timestamps and a frame rate (frame
    index = round(pts * time_base * fps)); otherwise, or if the seek lands past ``start``, it
    decodes from the beginning."""
    import av

    def decode(seek: bool) -> list[Tensor] | None:
        out = []
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            rate = s.average_rate or s.guessed_rate
            use_pts = seek and start > 0 and rate is not None and s.time_base is not None
            if use_pts:
                c.seek(int(start / float(rate) / float(s.time_base)) + (s.start_time or 0), stream=s, backward=True)
            for i, frame in enumerate(c.decode(s)):
                idx = i
                if use_pts:
                    if frame.pts is None:
                        return None
                    idx = round((frame.pts - (s.start_time or 0)) * float(s.time_base) * float(rate))
                    if not out and idx > start:
                        return None  # the seek overshot: decode from the start instead
                if idx >= start:
                    out.append(torch.from_numpy(frame.to_ndarray(format="rgb24")))
                if count is not None and len(out) >= count:
                    break
        return out

    frames = decode(seek=True)
    if frames is None:
        frames = decode(seek=False)
    if count is not None and len(frames) < count:
        raise ValueError(f"{path}: asked for frames {start}..{start + count - 1} but the video ends earlier")
    if not frames:
        raise ValueError(f"{path}: no frames from index {start}")
    return torch.stack(frames).float() / 255.0


def write_video(path: str | os.PathLike, frames: Tensor, fps: float = 16.0) -> None:
    """frames (T, H, W, 3) in [0, 1] -> lossless RGB H.264 (libx264rgb, crf 0, a keyframe every 16
    frames for cheap seeks), atomically: ``video.save_video`` with ``lossless=True``."""
    save_video(frames, path, fps, lossless=True, keyframe_every=16)


def write_synthetic_scene(root: str | os.PathLike, capture, depth: bool = True) -> SceneInfo:
    """Write a ``comfyui_full4d.media.synthetic.SyntheticCapture`` as a scene folder (metric cameras).

    capture.views (V, T, H, W, 3) -> one video per camera; ``rig.metric(scale)`` -> cameras.json;
    capture.depth -> depth.safetensors when ``depth``. Returns the validated SceneInfo.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    cams = capture.rig.metric(capture.scale)
    V, T, H, W, _ = capture.views.shape
    entries = []
    for v in range(V):
        name = f"cam{v:02d}"
        write_video(root / f"{name}.mp4", capture.views[v], capture.fps)
        entries.append({"name": name, "video": f"{name}.mp4", "width": W, "height": H,
                        "K": cams.K[v].tolist(), "R": cams.R[v].tolist(), "t": cams.t[v].tolist()})
    if depth:
        save_tensors(root / "depth.safetensors", {f"cam{v:02d}": capture.depth[v].float() for v in range(V)})
    write_text(root / "cameras.json", json.dumps({"version": 1, "fps": capture.fps, "cameras": entries}, indent=1))
    return load_scene(root)


def _gt_depth(scene: SceneInfo, view: int, start: int, length: int) -> Tensor | None:
    path = scene.root / "depth.safetensors"
    if not path.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        if scene.names[view] not in f.keys():
            raise _err(path, scene.names[view], "no depth for this camera")
        return f.get_slice(scene.names[view])[start:start + length].float()


def _relative(cams: Camera, order: list[int], scale: float) -> Camera:
    """Cameras ``order`` re-expressed with order[0] as the identity, translations / scale."""
    w2c = cams.viewmat.double()[order]
    rel = w2c @ torch.linalg.inv(w2c[0])
    return Camera(K=cams.K[order], R=rel[:, :3, :3].float(), t=(rel[:, :3, 3] / scale).float(),
                  width=cams.width, height=cams.height)


def projection_renders(frames: Tensor, depth: Tensor, cameras: Camera, scale: float,
                       point_radius: int = 0) -> tuple[Tensor, Tensor]:
    """Point-cloud projection (SPEC 3) of source frames (L, H, W, 3) with metric depth (L, H, W)
    into relative cameras (V,) in scene units (view 0 the source), through the inference graph's
    own ``projection.project_rig`` (splat radius ``point_radius``) -> renders (V, L, H, W, 3), masks
    (V, L, H, W) bool; view 0 is the source itself."""
    from ..geometry.cameras import Rig
    from ..geometry.source import Geometry
    from ..geometry.projection import project_rig

    L = frames.shape[0]
    geo = Geometry(depth=depth.float(), K=cameras.K[0].float(), w2c=torch.eye(4).expand(L, 4, 4).clone(),
                   scale=float(scale))
    renders, masks = project_rig(frames.float(), geo, Rig(cameras=cameras), point_radius=int(point_radius))
    renders[0], masks[0] = frames.to(renders.dtype), True  # SPEC 3: the source view's render is the source
    return renders, masks


def draw_clip(num_frames: int, num_views: int, length: int, rng: random.Random,
              max_views: int | None = None) -> tuple[int, list[int]]:
    """(start, order): a uniform start frame and a random ordered subset of views, order[0] the
    source and the rest the targets in random order."""
    if length < 1 or (length - 1) % 4 != 0:
        raise ValueError(f"length must be 4k+1 frames (the VAE compresses time 4x), got {length}")
    if length > num_frames:
        raise ValueError(f"length={length} exceeds the {num_frames} frames of the scene")
    V = num_views if max_views is None else min(int(max_views), num_views)
    if V < 2:
        raise ValueError(f"max_views must be >= 2, got {max_views}")
    return rng.randrange(num_frames - length + 1), rng.sample(range(num_views), V)


def sample_clip(scene: SceneInfo, length: int, rng: random.Random, max_views: int | None = None,
                depth_fn: DepthFn | None = None, cache: bool = True, point_radius: int = 0) -> Clip:
    """Sample a clip of ``length = 4k+1`` frames: random start, random source, shuffled targets.

    max_views: use at most this many views (source + random targets). depth_fn: depth for scenes
    without ``depth.safetensors`` (e.g. DA3). point_radius: the projection's splat radius
    (``Full4DProjectToCameras``' input of that name; train with the value the graphs will use). The source's
    projection into every view is cached under ``scene/cache/`` keyed by (start, length, source, radius) and
    reused by every clip with that source.
    """
    start, order = draw_clip(scene.num_frames, scene.num_views, length, rng, max_views)
    frames = torch.stack([read_video(scene.videos[v], start, length) for v in order])
    # the source's projection into every view of the scene, cached once per (start, length, source): a clip takes
    # its targets' renders from it (a render depends on the source and its target only), so clips that share a
    # source, in any order and subset of targets, share the cached file
    every = [order[0]] + [v for v in range(scene.num_views) if v != order[0]]
    radius = f":r{int(point_radius)}" if point_radius else ""  # radius 0 keeps the older caches' names
    key = hashlib.sha1(f"{start}:{length}:{every}{radius}".encode()).hexdigest()[:16]
    path = scene.root / "cache" / f"clip_{key}.safetensors"
    if cache and path.is_file():
        from safetensors.torch import load_file

        d = load_file(str(path))
        renders, masks, scale = d["renders"].float(), d["masks"].bool(), float(d["scale"])
    else:
        depth = _gt_depth(scene, order[0], start, length)
        if depth is None:
            if depth_fn is None:
                raise ValueError(f"{scene.root}: no depth.safetensors and no depth_fn; pass a depth estimator "
                                 f"(DA3, see docs/training.md) to compute source depth")
            depth = depth_fn(frames[0]).float()
        scale = scene_scale(depth[0])
        rel = _relative(scene.cameras, every, scale)
        renders, masks = projection_renders(frames[0], depth, rel, scale, point_radius)
        renders = renders.half().float()  # what the cache holds, so hits and misses agree
        if cache:
            path.parent.mkdir(exist_ok=True)
            save_tensors(path, {"renders": renders.half(), "masks": masks.to(torch.uint8),
                                 "scale": torch.tensor(scale, dtype=torch.float64)})
    pick = torch.tensor([every.index(v) for v in order])
    renders, masks = renders[pick], masks[pick]
    cams = _relative(scene.cameras, order, scale)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"{scene.root}: clip at frame {start} has an invalid scene scale {scale}")
    return Clip(frames=frames, renders=renders, masks=masks, cameras=cams, views=tuple(order),
                start=start, scale=scale)
