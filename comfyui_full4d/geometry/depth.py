"""Depth Anything 3 (DA3) depth and source camera for the input video (SPEC 3).

Weights layout (what the loader and the README expect)::

    <models>/depth_anything_3/<name>/config.json        {"model_name": "da3-small"}  (a DA3 registry name)
    <models>/depth_anything_3/<name>/model.safetensors  DepthAnything3Net state dict

This is the layout of the Hugging Face ``depth-anything/DA3-*`` repositories (their state dict
keys start with ``model.``, which is stripped). Without ``config.json`` the folder name itself
must be a registry name (``da3-small``, ``da3-base``, ``da3-large``, ``da3-giant``, ...).

What the DA3 package (depth-anything-3 0.1.1) expects and returns, read from its source
(``api.py``, ``utils/io/input_processor.py``, ``model/da3.py``, ``model/utils/transform.py``):

* input ``x`` (B, N, 3, h, w): RGB in [0, 1] normalised with the ImageNet mean/std; the
  longest side resized to ``process_res`` (504 by default, "upper_bound_resize"), then each
  side rounded to the nearest multiple of the 14-pixel patch. We resize in torch (antialiased
  bilinear down, bicubic up; DA3 uses OpenCV area/cubic).
* ``depth`` (B, N, h, w): z-depth (``exp`` activation, up to one scale per forward pass);
  ``depth_conf`` (B, N, h, w) > 1 (``1 + exp``).
* ``extrinsics`` (B, N, 3, 4): **world-to-camera**, OpenCV axes (x right, y down, z forward),
  the inverse of the camera-to-world pose decoded from the pose encoding; depth and translation
  share one scale.
* ``intrinsics`` (B, N, 3, 3) in pixels at (h, w), principal point ``(w/2, h/2)``: the same
  pixel-centre convention as ``comfyui_full4d.geometry.cameras``, so a per-axis resize scales K exactly.
* views >= 3 get a reference view chosen by ``ref_view_strategy``; we pass ``"first"``.

Long videos run in chunks of ``batch`` frames. Every chunk after the first re-runs frame 0 as
its anchor: the chunk's depth and translations are rescaled so the anchor's median depth matches
the first chunk's, and its poses are taken relative to the anchor, so all frames share one world
(= the source camera at frame 0) and one scale.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .source import Geometry, scene_scale
from ..common.progress import StepFn, report

__all__ = ["DA3Model", "build_da3", "load_da3", "da3_input_size", "estimate_depth", "source_geometry", "depth_preview",
           "WEIGHTS_FILE", "CONFIG_FILE"]

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
PATCH = 14
RESIZE_METHODS = ("upper_bound_resize", "lower_bound_resize")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DA3Model:
    """A DA3 network (``DepthAnything3Net``, eval mode) and its registry name."""

    net: torch.nn.Module
    name: str = "da3-small"
    process_res: int = 504


def _registry() -> dict:
    try:
        from depth_anything_3.registry import MODEL_REGISTRY
    except ImportError as e:
        raise ValueError("Depth Anything 3 is not installed: pip install --no-deps depth-anything-3==0.1.1 "
                         f"omegaconf addict ({e})") from None
    return MODEL_REGISTRY


def build_da3(name: str = "da3-small") -> torch.nn.Module:
    """An uninitialised-weights (PyTorch default init) DA3 network of registry config ``name``, eval mode."""
    reg = _registry()
    if name not in reg:
        raise ValueError(f"DA3 model name {name!r} is not in the DA3 registry; choose one of {sorted(reg)}")
    from depth_anything_3.cfg import create_object, load_config

    return create_object(load_config(reg[name])).eval()


def _model_name(folder: Path) -> str:
    cfg = folder / CONFIG_FILE
    if cfg.is_file():
        try:
            data = json.loads(cfg.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"DA3 config {cfg} is not valid JSON: {e}") from None
        name = data.get("model_name") or data.get("name") if isinstance(data, dict) else None
        if not isinstance(name, str):
            raise ValueError(f"DA3 config {cfg} must hold {{\"model_name\": \"da3-small\"}} (a DA3 registry name)")
        return name
    return folder.name


def load_da3(folder: Union[str, Path], device: Union[str, torch.device] = "cpu",
             dtype: torch.dtype = torch.float32, process_res: int = 504) -> DA3Model:
    """Load ``folder/model.safetensors`` into the DA3 network named by ``folder/config.json`` (see module doc)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise ValueError(f"DA3 weights not found: {weights} does not exist. Put a Depth Anything 3 model in "
                         f"{folder}/ as {WEIGHTS_FILE} plus {CONFIG_FILE} ({{\"model_name\": \"da3-small\"}}), "
                         "e.g. the files of the Hugging Face repository depth-anything/DA3-SMALL")
    name = _model_name(folder)
    net = build_da3(name)
    try:
        sd = load_file(str(weights))
    except Exception as e:  # safetensors raises its own error types for truncated / foreign files
        raise ValueError(f"DA3 weights {weights} cannot be read as safetensors: {e}") from None
    if sd and all(k.startswith("model.") for k in sd):
        sd = {k[len("model."):]: v for k, v in sd.items()}
    own = net.state_dict()
    # tied tensors (DA3's aux output convs share weights) are stored once (safetensors save_model)
    groups: dict[int, set] = {}
    for k, v in own.items():
        groups.setdefault(v.data_ptr(), set()).add(k)
    missing = sorted(k for k in set(own) - set(sd) if not (groups[own[k].data_ptr()] & set(sd)))
    unexpected = sorted(set(sd) - set(own))
    wrong = sorted(k for k in set(own) & set(sd) if own[k].shape != sd[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(f"DA3 weights {weights} do not match the {name!r} network ({len(missing)} missing, "
                         f"{len(unexpected)} unexpected, {len(wrong)} wrong-shape keys, e.g. "
                         f"{(missing + unexpected + wrong)[:3]}); check config.json's model_name")
    net.load_state_dict(sd, strict=False)
    return DA3Model(net=net.to(device=device, dtype=dtype).eval(), name=name, process_res=int(process_res))


def da3_input_size(H: int, W: int, process_res: int = 504, resize_method: str = "upper_bound_resize") -> tuple[int, int]:
    """(h, w) DA3 runs at for an (H, W) image: the longest ("upper_bound_resize", the package's default) or
    shortest ("lower_bound_resize") side -> process_res, then each side -> the nearest multiple of 14."""
    if resize_method not in RESIZE_METHODS:
        raise ValueError(f"resize_method must be one of {RESIZE_METHODS}, got {resize_method!r}")
    if process_res < PATCH:
        raise ValueError(f"process_res must be >= {PATCH}, got {process_res}")
    s = process_res / (max(H, W) if resize_method == "upper_bound_resize" else min(H, W))
    h, w = max(1, round(H * s)), max(1, round(W * s))

    def near(x: int) -> int:
        down = (x // PATCH) * PATCH
        return max(PATCH, down + PATCH if x - down >= PATCH / 2 else down)

    return near(h), near(w)


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """x (N, C, H, W) -> (N, C, h, w): antialiased bilinear down, bicubic up."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    down = size[0] * size[1] < x.shape[-2] * x.shape[-1]
    mode = "bilinear" if down else "bicubic"
    return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=down)


def _resize_masked(depth: Tensor, conf: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Bilinear resize of (N, h, w) depth/conf ignoring invalid (non-finite, <= 0) depth; invalid -> NaN / 0."""
    valid = torch.isfinite(depth) & (depth > 0) & torch.isfinite(conf)
    v = valid.float()[:, None]
    d = torch.where(valid, depth, torch.zeros_like(depth))[:, None]
    c = torch.where(valid, conf, torch.zeros_like(conf))[:, None]
    kw = dict(size=size, mode="bilinear", align_corners=False)
    vw = F.interpolate(v, **kw)
    ok = vw > 0.5
    dn = F.interpolate(d * v, **kw) / vw.clamp(min=1e-6)
    cn = F.interpolate(c * v, **kw) / vw.clamp(min=1e-6)
    nan = torch.full_like(dn, float("nan"))
    return torch.where(ok, dn, nan)[:, 0], torch.where(ok, cn, torch.zeros_like(cn))[:, 0]


def _homogeneous(P: Tensor) -> Tensor:
    """(N, 3, 4) -> (N, 4, 4)."""
    bottom = torch.zeros_like(P[:, :1, :])
    bottom[:, 0, 3] = 1
    return torch.cat([P, bottom], dim=1)


def _run_chunk(net: torch.nn.Module, frames: Tensor, size: tuple[int, int]) -> dict:
    """frames (n, H, W, 3) in [0, 1], any device -> DA3 outputs on CPU float32 at the DA3 input size (resized and
    normalised on the network's device)."""
    p = next(net.parameters())  # a wrapped host model may say where its input goes (``da3_core.CoreDA3Net``)
    device, dtype = getattr(net, "input_device", p.device), getattr(net, "input_dtype", p.dtype)
    x = _resize(frames.to(device).permute(0, 3, 1, 2).float(), size).clamp(0, 1)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    x = ((x - mean) / std)[None].to(dtype=dtype)  # (1, n, 3, h, w)
    with torch.inference_mode():
        out = net(x, ref_view_strategy="first")
    return {k: out[k][0].detach().float().cpu() for k in ("depth", "depth_conf", "extrinsics", "intrinsics")}


def estimate_depth(model: Union[DA3Model, torch.nn.Module], frames: Tensor, batch: int = 8,
                   static_camera: bool = True, *, process_res: Optional[int] = None,
                   on_step: StepFn | None = None) -> Geometry:
    """DA3 depth + source camera of a video (SPEC 3).

    frames: (T, H, W, 3) float in [0, 1]. batch: frames per DA3 forward pass (frame 0 rides along
    as the anchor of later chunks, see module doc). static_camera: identity pose for every frame
    (the paper's fixed viewpoint); else DA3's poses relative to frame 0. Returns a Geometry with
    depth/conf (T, H, W) at the frame size (invalid depth = NaN, conf 0), K (3, 3) = the per-frame
    median of DA3's K scaled to (H, W), w2c (T, 4, 4), scale = median depth of frame 0.
    ``on_step(done_frames, T)`` once per chunk.
    """
    net = model.net if isinstance(model, DA3Model) else model
    res = int(process_res or (model.process_res if isinstance(model, DA3Model) else 504))
    if not isinstance(frames, Tensor) or frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be a (T, H, W, 3) tensor, got {getattr(frames, 'shape', type(frames))}")
    T, H, W, _ = frames.shape
    if T < 1:
        raise ValueError("frames is empty (T = 0)")
    if batch < 1 or (batch < 2 and T > 1):
        raise ValueError(f"batch must be >= 2 (frame 0 anchors every chunk) for T={T} frames, got {batch}")
    h, w = da3_input_size(H, W, res)
    chunks = [list(range(0, min(batch, T)))]
    chunks += [[0] + list(range(s, min(s + batch - 1, T))) for s in range(chunks[0][-1] + 1, T, batch - 1)]
    depth, conf, w2c, Ks = [], [], [], []
    ref_median = None
    for idx in chunks:
        out = _run_chunk(net, frames[idx], (h, w))
        d, c = _resize_masked(out["depth"], out["depth_conf"], (H, W))
        E = _homogeneous(out["extrinsics"].double())
        rel = E @ torch.linalg.inv(E[0])  # world = camera of frame 0 (the anchor)
        med = d[0][torch.isfinite(d[0])].median() if bool(torch.isfinite(d[0]).any()) else torch.tensor(float("nan"))
        s = 1.0 if ref_median is None else float(ref_median / med)
        if ref_median is None:
            ref_median = med
        if not (s > 0 and s < float("inf")):
            raise ValueError("DA3 gave frame 0 no valid depth; cannot align chunks (try a larger batch)")
        rel[:, :3, 3] *= s
        first = 0 if len(depth) == 0 else 1
        depth.append(d[first:] * s), conf.append(c[first:]), w2c.append(rel[first:].float())
        K = out["intrinsics"].clone()
        K[:, 0] *= W / w
        K[:, 1] *= H / h
        Ks.append(K[first:])
        report(on_step, sum(x.shape[0] for x in depth), T)
    depth, conf = torch.cat(depth), torch.cat(conf)
    bad = int(torch.isnan(depth).sum())
    if bad:
        warnings.warn(f"DA3 depth: {bad} of {depth.numel()} pixels are NaN/inf/non-positive; masked (conf 0)",
                      stacklevel=2)
    return source_geometry(depth, conf, torch.cat(Ks), torch.cat(w2c), static_camera)


def source_geometry(depth: Tensor, conf: Tensor, K: Tensor, w2c: Tensor, static_camera: bool) -> Geometry:
    """The source Geometry from DA3's per-frame outputs at the frame size (SPEC 3).

    depth / conf (T, H, W) (invalid depth NaN, conf 0); K (T, 3, 3) in pixels at (H, W); w2c (T, 4, 4) relative
    to frame 0. Returns K = the per-frame median, w2c with frame 0 the identity (every frame when
    ``static_camera``), scale = median depth of frame 0."""
    K = K.float().median(dim=0).values
    if static_camera:
        return Geometry.static(depth, K, conf=conf)
    pose = w2c.float().clone()
    pose[0] = torch.eye(4)
    return Geometry(depth=depth, K=K, w2c=pose, scale=scene_scale(depth[0], conf[0] > 0), conf=conf)


# a perceptual (viridis-like) colormap: dark purple (far) -> blue -> green -> yellow (near)
_STOPS = torch.tensor([[0.267, 0.005, 0.329], [0.283, 0.141, 0.458], [0.254, 0.265, 0.530],
                       [0.207, 0.372, 0.553], [0.164, 0.471, 0.558], [0.128, 0.567, 0.551],
                       [0.135, 0.659, 0.518], [0.267, 0.749, 0.441], [0.478, 0.821, 0.318],
                       [0.741, 0.873, 0.150], [0.993, 0.906, 0.144]])


def colormap(x: Tensor) -> Tensor:
    """x (...) in [0, 1] -> (..., 3) RGB by piecewise-linear interpolation of ``_STOPS``."""
    n = _STOPS.shape[0] - 1
    u = x.clamp(0, 1) * n
    i = u.floor().long().clamp(max=n - 1)
    f = (u - i)[..., None]
    return _STOPS[i] * (1 - f) + _STOPS[i + 1] * f


def depth_preview(geometry: Geometry) -> Tensor:
    """Colour-mapped inverse depth, (T, H, W, 3) in [0, 1]: near = yellow, far = purple, invalid = black.

    Inverse depth is normalised between its 2nd and 98th percentiles over the whole video.
    """
    d = geometry.depth.float()
    ok = torch.isfinite(d) & (d > 0)
    if not bool(ok.any()):
        return torch.zeros(*d.shape, 3)
    inv = torch.where(ok, 1.0 / d.clamp(min=1e-12), torch.zeros_like(d))
    vals = inv[ok]
    if vals.numel() > 1_000_000:
        vals = vals[torch.linspace(0, vals.numel() - 1, 1_000_000).long()]
    lo, hi = torch.quantile(vals, torch.tensor([0.02, 0.98]))
    x = (inv - lo) / (hi - lo).clamp(min=1e-12)
    return torch.where(ok[..., None], colormap(x), torch.zeros(3))
