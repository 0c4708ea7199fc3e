"""Export (SPEC 6): per-frame standard 3DGS PLY files and the whole 4D scene as one safetensors file.

PLY (binary little endian, float32): ``x y z nx ny nz f_dc_0..2 f_rest_0..(3K-4) opacity scale_0..2 rot_0..3``
with opacity a logit, scales logs, rot wxyz and ``f_rest`` channel-major (all R coefficients, then G, then B),
as the 3DGS reference writer; the header records the scene's metric scale as ``comment full4d_scale <s>``
(positions are metric; the rig is in scene units). The 4D file holds ``gaussians.*`` (canonical), ``hexplane.*`` (state dict),
``aabb`` and ``time_range`` tensors; its metadata holds the format tag, SH degree, HexPlaneConfig JSON and
``Scene4D.extras`` (JSON; e.g. ``scale``, metres per scene unit).

Other per-frame formats (``.spz``, ``.ksplat``) are written by a ``FrameBytes`` callable the caller supplies (the
host's splat writers, ``host.splat.core_frame_bytes``): it takes the render-ready tensors of ``Scene4D.at`` (positions
(N, 3), scales (N, 3) linear, rotations (N, 4) wxyz, opacities (N, 1) in (0, 1), sh (N, K, 3)) and returns the file.

``export_scene`` writes both into a numbered folder that appears only when the whole export is done:
files go to a hidden staging folder next to it (``.<name>_<NNNNN>.partial<hex>``), renamed into place at
the end. Every file is written atomically (temp file + ``os.replace``); an ``on_step`` that raises (the
host's interrupt) or any error removes the staging folder, so a cancelled export leaves nothing behind. A full
disk (or a file size limit) ends the export with ``common.io.OutOfSpace`` saying so, after the same clean-up.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil

import numpy as np
import torch
from torch import Tensor

from typing import Callable

from ..common.io import OutOfSpace, save_tensors, write_bytes
from ..common.progress import StepFn, report
from .model import GAUSSIAN_KEYS, Gaussians, HexPlane, HexPlaneConfig, Scene4D
from .preview import SCALE_COMMENT

__all__ = ["write_ply", "export_frames", "save_scene4d", "load_scene4d", "export_scene", "SCENE4D_FORMAT", "FrameBytes"]

SCENE4D_FORMAT = "full4d.scene4d"
# (positions, scales, rotations, opacities, sh) -> the bytes of one file (module docstring)
FrameBytes = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], bytes]


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass




def write_ply(path: str, means: Tensor, quats: Tensor, log_scales: Tensor, opacity_logits: Tensor, sh: Tensor,
              comments: tuple[str, ...] = ()) -> str:
    """Write one 3DGS PLY. means (N, 3), quats (N, 4) wxyz, log_scales (N, 3), opacity_logits (N,),
    sh (N, K, 3) with K = (d+1)^2; ``comments``: header ``comment`` lines (one line each, ASCII). Returns the
    path."""
    if any("\n" in c or "\r" in c or not c.isascii() for c in comments):
        raise ValueError(f"comments={comments!r}: each PLY comment must be one line of ASCII")
    n, K = means.shape[0], sh.shape[1]
    rest = sh[:, 1:].transpose(1, 2).reshape(n, -1)  # (N, 3 (K-1)) channel-major
    names = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
             + [f"f_rest_{i}" for i in range(3 * (K - 1))]
             + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
    cols = torch.cat([means, torch.zeros_like(means), sh[:, 0], rest, opacity_logits[:, None], log_scales, quats], 1)
    arr = cols.detach().cpu().float().numpy().astype("<f4")
    header = "ply\nformat binary_little_endian 1.0\n" + "".join(f"comment {c}\n" for c in comments)
    header += "element vertex %d\n" % n
    header += "".join(f"property float {nm}\n" for nm in names) + "end_header\n"
    write_bytes(path, header.encode("ascii") + np.ascontiguousarray(arr).tobytes())
    return path


@torch.no_grad()
def export_frames(scene: Scene4D, times, folder: str, prefix: str = "frame", *, ext: str = "ply",
                  frame_bytes: FrameBytes | None = None, on_step: StepFn | None = None) -> list[str]:
    """One file per time (deformed Gaussians, ``Scene4D.at``) as ``{prefix}_{i:04d}.{ext}`` in folder: our PLY
    writer, or ``frame_bytes`` (module docstring) when given. Our PLYs record the scene's metric scale (metres
    per rig scene unit, ``extras["scale"]``) as the header line ``comment full4d_scale <s>``, so a preview of
    the files places the rig's cameras as the scene's renders do.

    ``on_step(i + 1, len(times))`` after each file; if it (or a write) raises, the files written so far
    are removed before the exception propagates (all or nothing).
    """
    os.makedirs(folder, exist_ok=True)
    times = torch.as_tensor(times).reshape(-1).tolist()
    comments = (f"{SCALE_COMMENT} {float(scene.extras['scale'])!r}",) if "scale" in scene.extras else ()
    paths: list[str] = []
    try:
        for i, t in enumerate(times):
            means, quats, scales, opacities, sh = scene.at(float(t))
            path = os.path.join(folder, f"{prefix}_{i:04d}.{ext}")
            if frame_bytes is None:
                write_ply(path, means, quats, torch.log(scales), scene.gaussians.opacity_logits, sh, comments)
            else:
                write_bytes(path, frame_bytes(means, scales, quats, opacities[:, None], sh))
            paths.append(path)
            report(on_step, i + 1, len(times))
    except BaseException:
        for p in paths:
            _remove(p)
        raise
    return paths


def save_scene4d(scene: Scene4D, path: str) -> str:
    """The 4D scene as one safetensors file (module docstring), written atomically."""
    t = {f"gaussians.{k}": v.detach().contiguous().clone() for k, v in scene.gaussians.as_dict().items()}
    t.update({f"hexplane.{k}": v.detach().contiguous().clone() for k, v in scene.hexplane.state_dict().items()})
    t["aabb"] = scene.aabb.detach().contiguous().clone()
    t["time_range"] = torch.tensor(scene.time_range, dtype=torch.float64)
    meta = {"format": SCENE4D_FORMAT, "version": "1", "sh_degree": str(scene.sh_degree),
            "hexplane_config": json.dumps(scene.hexplane.config.to_json_dict()),
            "extras": json.dumps(scene.extras)}
    save_tensors(path, t, metadata=meta)
    return path


def _export_folder(output_dir: str, filename_prefix: str) -> tuple[str, str]:
    """(parent folder, name stem) for ``output_dir/<prefix>_<NNNNN>``; the prefix must stay inside output_dir."""
    prefix = filename_prefix.strip().replace("\\", "/")
    if not prefix or prefix.startswith("/") or ".." in prefix.split("/") or re.search(r"[:*?\"<>|]", prefix):
        raise ValueError(f"filename_prefix {filename_prefix!r} must be a relative path inside the output folder")
    base = os.path.join(output_dir, prefix)
    parent, stem = os.path.split(base)
    return parent, stem


def export_scene(scene: Scene4D, output_dir: str, filename_prefix: str, num_frames: int, *, ext: str = "ply",
                 frame_bytes: FrameBytes | None = None, on_step: StepFn | None = None) -> list[str]:
    """A file per frame (PLY, or ``ext`` by ``frame_bytes``, as ``export_frames``) (``num_frames`` times evenly over ``scene.time_range``) + ``scene4d.safetensors`` into
    ``output_dir/<prefix>_<NNNNN>/``, the first free number; returns the paths relative to output_dir.

    ``on_step(done, num_frames + 1)`` after each file. The folder appears only when every file is written
    (module docstring); if ``on_step`` or a write raises, nothing of this export is left in output_dir.
    """
    if int(num_frames) < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    parent, stem = _export_folder(output_dir, filename_prefix)
    os.makedirs(parent, exist_ok=True)
    n = 0
    while os.path.exists(os.path.join(parent, f"{stem}_{n:05d}")):
        n += 1
    staging = os.path.join(parent, f".{stem}_{n:05d}.partial{secrets.token_hex(4)}")  # hidden, ours only
    os.mkdir(staging)  # (not mkdtemp: its 0700 mode would stay on the renamed folder)
    total = int(num_frames) + 1
    t0, t1 = scene.time_range
    times = torch.linspace(t0, t1, int(num_frames)) if num_frames > 1 else torch.tensor([t0])
    try:
        names = [os.path.basename(p) for p in
                 export_frames(scene, times, staging, ext=ext, frame_bytes=frame_bytes,
                               on_step=lambda done, _: report(on_step, done, total))]
        names.append(os.path.basename(save_scene4d(scene, os.path.join(staging, "scene4d.safetensors"))))
        report(on_step, total, total)  # the last chance to cancel: nothing may raise after the rename
        while True:  # another export may have taken the number meanwhile: take the next free one
            folder = os.path.join(parent, f"{stem}_{n:05d}")
            if not os.path.exists(folder):
                try:
                    os.rename(staging, folder)
                    break
                except OSError:
                    if not os.path.exists(folder):
                        raise
            n += 1
    except OutOfSpace as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise OutOfSpace(e.errno, f"export {filename_prefix!r}: {e}. Nothing of this export is left in the output "
                                  "folder; free space on its disk (or export fewer frames) and run again") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [os.path.relpath(os.path.join(folder, nm), output_dir) for nm in names]


def load_scene4d(path: str) -> Scene4D:
    """Load a file written by ``save_scene4d`` (bit-exact). Raises ValueError for missing/foreign files."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not os.path.isfile(path):
        raise ValueError(f"load_scene4d: no file at {path!r}")
    try:
        with safe_open(path, "pt") as f:
            meta = f.metadata() or {}
        t = load_file(path)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"load_scene4d: {path!r} is not a safetensors file ({e})") from None
    if meta.get("format") != SCENE4D_FORMAT:
        raise ValueError(f"load_scene4d: {path!r} is not a Full4D 4D scene (format={meta.get('format')!r}); "
                         "use a file saved by Full4DSave4DGS / save_scene4d")
    try:
        cfg = json.loads(meta["hexplane_config"])
        cfg["multires"] = tuple(cfg["multires"])
        hp = HexPlane(HexPlaneConfig(**cfg))
        hp.load_state_dict({k[9:]: v for k, v in t.items() if k.startswith("hexplane.")})
        g = Gaussians.from_dict({k: t[f"gaussians.{k}"] for k in GAUSSIAN_KEYS})
        tr = t["time_range"].tolist()
        scene = Scene4D(g, hp, (tr[0], tr[1]), t["aabb"], int(meta["sh_degree"]), json.loads(meta.get("extras", "{}")))
    except (KeyError, RuntimeError, TypeError, ValueError) as e:
        raise ValueError(f"load_scene4d: {path!r} is damaged or from another version ({e})") from None
    hp.requires_grad_(False)
    return scene
