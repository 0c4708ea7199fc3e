"""Full4DFit4DGS inside the host: device and memory, the resumable checkpoint, progress, and the Fit node's
inputs as prompts saved before the options and the FMD teacher moved to their own nodes give them.

* ``fit_rig``: the 4D fit of a multi-view grid (``gaussians.pipeline.fit_from_grid``) on the host's device,
  after making room for it (or loading the FMD teacher beside it), with a checkpoint in the temp folder keyed
  by everything that changes the fit (an interrupted fit of the same inputs resumes), the host's progress
  bar / cancel and the running PSNR as the node's text;
* ``saved_inputs`` / ``legacy_inputs``: a saved prompt's old Fit inputs. The host validates and passes only
  the inputs a node declares, except links, which reach ``execute`` as extra keyword arguments; the literal
  values (``lr_means``, ``lambda_fmd``, ...) are read from the node's own entry in the prompt
  (``io.Hidden.dynprompt``). A connected options / teacher node wins over old values.
"""

from __future__ import annotations

import hashlib
import os

from torch import Tensor

from ..gaussians.memory import fit_bytes
from ..gaussians.model import Scene4D
from ..gaussians.pipeline import INIT_AUTO, FitOptions, FitReport, fit_from_grid, init_points_cap, node_fit_config
from ..geometry.cameras import Rig
from .device import compute_device, load_teacher, make_room, output_device
from .fmd import LEGACY_FMD_INPUTS, FMDTeacher, fmd_config, legacy_teacher
from .paths import client_paths, temp_dir
from .progress import progress, progress_text

__all__ = ["fit_rig", "saved_inputs", "legacy_inputs", "LEGACY_INPUTS"]

# Every input name Full4DFit4DGS had that it no longer declares: the options' fields and the FMD inputs.
LEGACY_INPUTS = tuple(FitOptions.__dataclass_fields__) + LEGACY_FMD_INPUTS


def saved_inputs(hidden) -> dict:
    """The node's inputs as its prompt gives them (literal values and ``[node, slot]`` links), from the node's
    ``io.Hidden`` holder (``dynprompt``, ``unique_id``); {} where the host gives neither."""
    prompt, node_id = getattr(hidden, "dynprompt", None), getattr(hidden, "unique_id", None)
    if prompt is None or node_id is None or not prompt.has_node(node_id):
        return {}
    return dict(prompt.get_node(node_id).get("inputs", {}))


def legacy_inputs(options: FitOptions | None, teacher: FMDTeacher | None, saved: dict,
                  old: dict) -> tuple[FitOptions, FMDTeacher | None]:
    """The options and teacher the fit runs with: the connected nodes', else what a saved prompt's old inputs
    say. ``saved``: the node's inputs in the prompt (values, and ``[node, slot]`` for links); ``old``: the old
    inputs ``execute`` got as extra keyword arguments (the host passes the linked ones, resolved; a direct call
    may pass values). ValueError naming an input the node never had, or an old value out of range."""
    unknown = sorted(set(old) - set(LEGACY_INPUTS))
    if unknown:
        raise ValueError(f"Full4DFit4DGS has no input {', '.join(map(repr, unknown))}")
    given = {**saved, **old}
    if options is None:
        options = FitOptions.from_inputs(given)
    if teacher is None:
        teacher = legacy_teacher(float(given.get("lambda_fmd", 0.0)), **{k: old.get(k) for k in LEGACY_FMD_INPUTS[1:]})
    return options, teacher


def _checkpoint_name(images: Tensor, rig: Rig, iterations: int, max_gaussians: int, init: str, options: FitOptions,
                     geometry, da3_model, lambda_fmd: float, cloud) -> str:
    """A name for the fit's checkpoint from everything that changes the fit (the same name as before the options
    had their own node, so an interrupted fit started by an older version resumes)."""
    o = options
    key = hashlib.sha256()
    key.update(images[:, ::4, ::4].contiguous().float().cpu().numpy().tobytes())
    key.update(rig.cameras.R.numpy().tobytes() + rig.cameras.t.numpy().tobytes())
    key.update(repr((int(iterations), float(o.lr_means), float(o.lr_planes), float(o.lambda_dssim),
                     float(o.lambda_tv), int(max_gaussians), float(o.prune_opacity), int(o.sh_degree),
                     geometry is not None, init, da3_model is not None, float(lambda_fmd),
                     bool(o.recalibrate))).encode())
    if cloud is not None:
        key.update(cloud[0].numpy().tobytes() + cloud[1].numpy().tobytes())
    return key.hexdigest()[:24] + ".safetensors"


def fit_rig(images: Tensor, rig: Rig, *, iterations: int, max_gaussians: int, resume: bool, render_time: float,
            orbit_frames: int, init: str = INIT_AUTO, geometry=None, da3_model=None, teacher: FMDTeacher | None = None,
            options: FitOptions | None = None, init_splat=None) -> tuple[Scene4D, Tensor, FitReport]:
    """images (V*T, H, W, 3) view-major -> (scene, orbit (orbit_frames, H, W, 3) at render_time, report) on the
    host's output device. ``init_splat``: a core SPLAT whose first item's centres and colours replace ``init``;
    ``teacher``: FMD with its weight; ``options`` None: ``FitOptions()``."""
    options = options or FitOptions()
    device = compute_device()
    cloud = None
    if init_splat is not None:
        from ..gaussians.splat import splat_cloud
        from .splat import item

        first = item(init_splat, 0)
        cloud = splat_cloud(first["positions"], first["sh"], init_points_cap(max_gaussians))
    fmd = fmd_config(teacher, geometry, rig, images, device)
    V = rig.num_views
    need = fit_bytes(V, max(1, images.shape[0] // V), images.shape[1], images.shape[2], max_gaussians,
                     options.sh_degree, fmd is not None)
    if fmd is None:  # the diffusion model of an earlier node need not stay in VRAM during the fit
        make_room(need, device)
    else:  # the teacher stays loaded, with room for the fit next to it
        load_teacher(teacher.model, need)
    lambda_fmd = teacher.weight if fmd is not None else 0.0
    folder = os.path.join(temp_dir(), "full4d_4dgs")
    os.makedirs(folder, exist_ok=True)
    checkpoint = os.path.join(folder, _checkpoint_name(images, rig, iterations, max_gaussians, init, options,
                                                       geometry, da3_model, lambda_fmd, cloud))
    with client_paths():
        cfg = node_fit_config(iterations=iterations, max_gaussians=max_gaussians, lambda_fmd=lambda_fmd,
                              **options.config_kwargs())
        scene, orbit, report = fit_from_grid(
            images, rig, cfg, geometry, init=init, da3_model=da3_model, init_cloud=cloud, fmd=fmd,
            checkpoint_path=checkpoint, checkpoint_every=options.checkpoint_every, resume=resume,
            render_time=render_time, orbit_frames=orbit_frames, on_step=progress(iterations),
            on_text=progress_text, device=device, recalibrate=options.recalibrate)
    out = output_device()
    return scene.to(out), orbit.to(out), report
