"""Node-level engine calls for the 4DGS stage (SPEC 6): grid -> fit, render along a rig / orbit (export: export.py).

Times: the grid's T frames sit at ``linspace(0, 1, T)``; render times in [0, 1] map onto the scene's range.
Units: the rig is in scene units; with source geometry, ``geometry.scale`` makes it metric (kept in
``Scene4D.extras["scale"]`` so renders use the same cameras).

Initialisation (SPEC 6: the fused point clouds of all views; ``INIT_MODES``):

* ``views: ground-truth depth``: ``geometry.views_depth`` (a synthetic scene's ground truth), frame 0 of
  every view back-projected with the rig's metric cameras;
* ``views: DA3 depth``: Depth Anything 3 on the V views of frame 0 as one multi-view batch, aligned to the
  rig by a Umeyama similarity of DA3's camera centres to the rig's (``view_depth.estimate_view_depth``);
  with ``recalibrate`` (SPEC 6: re-calibrate pose by aligning DA3's estimates to the rig) each target
  view whose DA3 pose agrees with the rig within ``view_depth.RECALIBRATE_MAX_RESIDUAL`` takes DA3's pose
  and focal (``view_depth.recalibrate``) for the init and the fit; the others keep the rig;
* ``source: depth of frame 0``: the source view alone (the other views' surfaces start empty: a poor fit,
  kept for graphs with neither of the above);
* ``random``: points uniform in a cube of half-size 1 scene unit about the rig centre.

``auto`` (the default) takes the first of these the inputs allow. The fused cloud is subsampled uniformly
to ``init_points_cap(max_gaussians)`` so that densification has room to add detail.

Background (``fit_background``), one colour for training and display: with a ``views:`` init every pixel of
every view starts covered, so the background only shows through real holes in novel views and is best the
views' own (``fit.estimate_background``); a sparse init (``source``, ``random``) has to grow into uncovered
pixels, which only a black background makes costly enough (random init, 3 views 32x32, 300 iterations:
25.5 dB against black, 20.8 with a random colour per step, 15.9 against the estimated grey).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, fields, replace
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..geometry.cameras import Camera, Rig
from ..common.progress import StepFn, report
from .densify import DensifyConfig
from .fit import FitConfig, FitStats, estimate_background, fit_4dgs, render_scene, training_psnr
from .init import backproject_views
from .model import Scene4D

__all__ = ["INIT_MODES", "FitOptions", "FitReport", "InitPoints", "fit_background", "node_fit_config", "fit_from_grid",
           "render_rig", "init_points", "init_points_cap", "resolve_init"]

INIT_AUTO, INIT_VIEWS_GT, INIT_VIEWS_DA3, INIT_SOURCE, INIT_RANDOM = (
    "auto", "views: ground-truth depth", "views: DA3 depth", "source: depth of frame 0", "random")
INIT_MODES = (INIT_AUTO, INIT_VIEWS_GT, INIT_VIEWS_DA3, INIT_SOURCE, INIT_RANDOM)
INIT_SPLAT = "core splat"  # not a mode: the report's name for an ``init_cloud`` (the node's init_splat input)
ALIGN_WARN = 0.1  # DA3-to-rig alignment residual (relative to the rig's size) above which the fit warns


def fit_background(mode: str, views: Tensor) -> tuple[float, float, float]:
    """The background (train and display) for a concrete init ``mode`` and views (V, T, H, W, 3); module
    docstring."""
    return estimate_background(views) if mode in (INIT_VIEWS_GT, INIT_VIEWS_DA3) else (0.0, 0.0, 0.0)


def init_points_cap(max_gaussians: int) -> int:
    """Initial points for a Gaussian budget: 60% of it (the rest is room for densification), at most 60,000."""
    return max(1, min(60_000, int(max_gaussians) * 3 // 5))


def resolve_init(mode: str, V: int, geometry=None, da3_model=None) -> str:
    """The concrete init mode for ``mode`` (``auto`` picks the best the inputs allow); ValueError when an
    explicit mode lacks its input."""
    if mode not in INIT_MODES:
        raise ValueError(f"init={mode!r} is not one of {list(INIT_MODES)}")
    has_gt = geometry is not None and geometry.views_depth is not None
    if mode == INIT_AUTO:
        if has_gt and geometry.views_depth.shape[0] == V:
            return INIT_VIEWS_GT
        return INIT_VIEWS_DA3 if da3_model is not None else INIT_SOURCE if geometry is not None else INIT_RANDOM
    if mode == INIT_VIEWS_GT and not has_gt:
        raise ValueError(f"init={mode!r} needs geometry with the depth of every view (only the synthetic scene has "
                         "it); use 'auto' or connect a DA3 model for 'views: DA3 depth'")
    if mode == INIT_VIEWS_GT and geometry.views_depth.shape[0] != V:
        raise ValueError(f"init={mode!r}: geometry has the depth of {geometry.views_depth.shape[0]} views but the "
                         f"rig has {V}")
    if mode == INIT_VIEWS_DA3 and da3_model is None:
        raise ValueError(f"init={mode!r} needs the da3_model input (Full4DDA3Loader)")
    if mode == INIT_SOURCE and geometry is None:
        raise ValueError(f"init={mode!r} needs the geometry input (Full4DDA3Depth)")
    return mode


def _fuse_views(views: Tensor, depth: Tensor, cams: Camera, max_points: int, seed: int) -> tuple[Tensor, Tensor]:
    """Frame-0 depth (V, H', W') of every view back-projected with the metric cameras (resized to the depth), on
    the views' device."""
    depth = depth.to(views.device)
    V, h, w = depth.shape
    img = views[:, 0].permute(0, 3, 1, 2).float()
    if img.shape[-2:] != (h, w):
        img = F.interpolate(img, size=(h, w), mode="bilinear", align_corners=False)
    if (cams.width, cams.height) != (w, h):
        cams = cams.resized(w, h)
    return backproject_views(depth.float(), img.permute(0, 2, 3, 1), cams, max_points=max_points, seed=seed)


class InitPoints(NamedTuple):
    """``init_points``' result: points (N, 3) metric, colours (N, 3), the concrete mode, the metric cameras
    (V,) the views are fitted with (the rig's, or re-calibrated) and a line on the re-calibration ("" if none)."""

    points: Tensor
    colours: Tensor
    mode: str
    cameras: Camera
    note: str = ""


def init_points(views: Tensor, rig: Rig, geometry, scale: float, mode: str = INIT_AUTO, da3_model=None,
                max_points: int = 60_000, n_random: int = 5000, seed: int = 0,
                on_step: StepFn | None = None, recalibrate: bool = False) -> InitPoints:
    """Initial points (N, 3) metric and colours (N, 3) for views (V, T, H, W, 3), by ``mode`` (module
    docstring); ``recalibrate`` refines the cameras from DA3 where DA3 runs on the views."""
    V = views.shape[0]
    mode = resolve_init(mode, V, geometry, da3_model)
    cams, note = rig.metric(scale), ""
    if mode == INIT_VIEWS_GT:
        pts, cols = _fuse_views(views, geometry.views_depth[:, 0], cams, max_points, seed)
    elif mode == INIT_VIEWS_DA3:
        from ..geometry.view_depth import estimate_view_depth

        ref = geometry.depth[0].float() if geometry is not None else None
        depth, _, info = estimate_view_depth(da3_model, views, cams, (0,), reference_depth=ref, on_step=on_step,
                                             scale_from_reference=recalibrate and ref is not None)
        if info.worst_residual > ALIGN_WARN:
            warnings.warn(f"DA3 on the views agrees poorly with the rig (camera-centre residual "
                          f"{info.worst_residual:.2f} of the rig's size): the views may not match the rig", stacklevel=2)
        if recalibrate:
            from ..geometry.view_depth import recalibrate as refine

            cams, rec = refine(cams, info)
            note = rec.text()
        pts, cols = _fuse_views(views, depth[:, 0], cams, max_points, seed)
    elif mode == INIT_SOURCE:
        depth = geometry.depth[0].float()
        if geometry.conf is not None:
            depth = torch.where(geometry.conf[0] > 0, depth, torch.full_like(depth, float("nan")))
        h, w = depth.shape
        w2c = geometry.w2c[0].float()
        src = Camera(K=geometry.K.float()[None], R=w2c[None, :3, :3], t=w2c[None, :3, 3], width=w, height=h)
        pts, cols = _fuse_views(views[:1], depth[None], src, max_points, seed)
    else:
        g = torch.Generator().manual_seed(seed)  # CPU stream: the same points on every device
        u = torch.rand(n_random, 3, generator=g).to(views.device)
        pts = (rig.center.to(views.device).float() + (u * 2 - 1)) * scale
        cols = torch.full((n_random, 3), 0.5, device=views.device)
    if len(pts) == 0:
        raise ValueError(f"init={mode!r} gave no valid depth pixel; check the geometry / DA3 input")
    return InitPoints(pts, cols, mode, cams, note)


@dataclass(frozen=True)
class FitReport:
    """What the fit reached: mean training-view PSNR (dB) over all V*T images, per-view means (V,), the init
    mode used, Gaussian count, the fit's own counters and the re-calibration line ("" if none)."""

    psnr: float
    psnr_per_view: tuple[float, ...]
    init: str
    count: int
    stats: FitStats
    recalibration: str = ""

    def text(self) -> str:
        """One fact a line, the most useful first (the node shows the text under its widgets in a box two lines
        tall, the rest a scroll away; long lines would wrap mid-word)."""
        lines = [f"training-view PSNR {self.psnr:.2f} dB", f"{self.count:,} Gaussians", f"init: {self.init}",
                 "per view: " + ", ".join(f"{p:.1f}" for p in self.psnr_per_view)]
        if self.stats.skipped:
            lines.append(f"{self.stats.skipped} non-finite steps skipped")
        if self.stats.restored:
            lines.append(f"rolled back {self.stats.restored}x")
        if self.recalibration:
            lines.append(self.recalibration)
        return "\n".join(lines)


@dataclass(frozen=True)
class FitOptions:
    """The fit's finer settings (the Full4DFitOptions node), defaults as the Fit node runs without it. The field
    names are the Fit node's own input names before the options moved to their node, so a saved prompt's values
    map one to one (``from_inputs``). Learning rates and weights as ``FitConfig``; ``prune_opacity``: above 2/3 of
    the Gaussian budget, Gaussians below this opacity are pruned; ``checkpoint_every``: iterations between
    resumable checkpoints; ``recalibrate``: refine the cameras from DA3 when it runs on the views."""

    lr_means: float = 1.6e-4
    lr_planes: float = 0.05
    lambda_dssim: float = 0.2
    lambda_tv: float = 2e-4
    prune_opacity: float = 0.015
    sh_degree: int = 3
    checkpoint_every: int = 500
    recalibrate: bool = True

    def __post_init__(self) -> None:
        for k in ("lr_means", "lr_planes", "lambda_tv", "prune_opacity"):
            v = getattr(self, k)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{k} must be a finite number >= 0, got {v!r}")
        if not (isinstance(self.lambda_dssim, (int, float)) and 0.0 <= self.lambda_dssim <= 1.0):
            raise ValueError(f"lambda_dssim must be in [0, 1], got {self.lambda_dssim!r}")
        if self.sh_degree not in (0, 1, 2, 3):
            raise ValueError(f"sh_degree must be 0, 1, 2 or 3, got {self.sh_degree!r}")
        if not (isinstance(self.checkpoint_every, int) and self.checkpoint_every >= 1):
            raise ValueError(f"checkpoint_every must be a whole number >= 1, got {self.checkpoint_every!r}")
        if not isinstance(self.recalibrate, bool):
            raise ValueError(f"recalibrate must be true or false, got {self.recalibrate!r}")

    @classmethod
    def from_inputs(cls, inputs: dict) -> "FitOptions":
        """The options a saved prompt's Fit node inputs give: each field's value where ``inputs`` has it (links,
        ``[node, slot]`` lists, are not values and are left out), the default elsewhere."""
        kw = {f.name: inputs[f.name] for f in fields(cls) if f.name in inputs and not isinstance(inputs[f.name], list)}
        for k in ("sh_degree", "checkpoint_every"):
            if isinstance(kw.get(k), float) and kw[k].is_integer():
                kw[k] = int(kw[k])
        return cls(**kw)

    def config_kwargs(self) -> dict:
        """The ``node_fit_config`` arguments among the options."""
        return {k: getattr(self, k) for k in ("lr_means", "lr_planes", "lambda_dssim", "lambda_tv", "prune_opacity",
                                              "sh_degree")}


def node_fit_config(*, iterations: int, lr_means: float, lr_planes: float, lambda_dssim: float, lambda_tv: float,
                    max_gaussians: int, prune_opacity: float, sh_degree: int, lambda_fmd: float = 0.0,
                    background: tuple[float, float, float] | None = None) -> FitConfig:
    """The ``FitConfig`` Full4DFit4DGS runs: its widget values plus the node's fixed rules: the means' learning
    rate decays 100x over the fit, densification stops at 2/3 of the iterations and prunes above 2/3 of the
    Gaussian budget. ``background`` None: by the init (``fit_background``)."""
    iterations = int(iterations)
    return FitConfig(iterations=iterations, sh_degree=int(sh_degree), lr_means=lr_means, lr_means_final=lr_means / 100,
                     lr_planes=lr_planes, lambda_dssim=lambda_dssim, lambda_tv=lambda_tv, lambda_fmd=float(lambda_fmd),
                     background=background,
                     densify=DensifyConfig(max_gaussians=int(max_gaussians), prune_above=int(max_gaussians * 2 // 3),
                                           prune_opacity=prune_opacity, stop=max(1, iterations * 2 // 3)))


def fit_from_grid(images: Tensor, rig: Rig, cfg: FitConfig, geometry=None, *, init: str = INIT_AUTO, da3_model=None,
                  init_cloud: tuple[Tensor, Tensor] | None = None, fmd=None, checkpoint_path: str | None = None,
                  checkpoint_every: int = 500, resume: bool = False,
                  render_time: float = 0.0, orbit_frames: int = 1, on_step: StepFn | None = None,
                  on_text: Callable[[str], None] | None = None,
                  device: torch.device | str | None = None,
                  recalibrate: bool = False) -> tuple[Scene4D, Tensor, FitReport]:
    """images (V*T, H, W, 3) view-major -> (Scene4D, orbit render (orbit_frames, H, W, 3) at render_time, report).

    cfg: the fit (``node_fit_config`` for the node's); ``init_cloud`` (points (N, 3) metric, colours (N, 3)), e.g.
    from a core splat (``splat.splat_cloud``), replaces ``init``; ``cfg.background`` None: by the init (``fit_background``);
    ``cfg.lambda_fmd`` counts only with an ``fmd`` teacher. ``on_step(done, total)`` counts init, iterations and
    the final PSNR renders; ``on_text(str)`` gets a few short lines every 25 iterations (the iteration, the mean
    training PSNR of the last 50 images) and the final report. Every stage (init, fit, PSNR renders, orbit) runs
    on ``device`` (default: the images'); the scene and the orbit come back on it. ``recalibrate``: refine the
    cameras from DA3 when it runs on the views (module doc)."""
    V = rig.num_views
    if images.dim() != 4 or images.shape[0] % V:
        raise ValueError(f"images: {images.shape[0] if images.dim() == 4 else tuple(images.shape)} images are not a "
                         f"view-major grid of the rig's {V} views (need V*T images)")
    T = images.shape[0] // V
    dev = torch.device(device) if device is not None else images.device
    views = images.reshape(V, T, *images.shape[1:]).to(dev).float()
    scale = float(geometry.scale) if geometry is not None else 1.0
    iterations = cfg.iterations
    total = iterations + V * T + 1

    def step(done: int, _total: int) -> None:
        report(on_step, done, total)

    if init_cloud is not None:
        pts, cols, used = init_cloud[0].float().to(dev), init_cloud[1].float().to(dev), INIT_SPLAT
        cams, note = rig.metric(scale), ""
    else:
        pts, cols, used, cams, note = init_points(views, rig, geometry, scale, init, da3_model,
                                                  init_points_cap(cfg.densify.max_gaussians), recalibrate=recalibrate)
    cams = cams.to(dev)
    step(1, total)
    cfg = replace(cfg, background=fit_background(used, views) if cfg.background is None else cfg.background,
                  lambda_fmd=cfg.lambda_fmd if fmd is not None else 0.0)
    times = torch.linspace(0, 1, T, device=dev) if T > 1 else torch.zeros(1, device=dev)
    recent: list[float] = []

    def metrics(m: dict) -> None:
        recent.append(m["psnr"])
        if on_text is not None and m["iteration"] % 25 == 0:
            run = sum(recent[-50:]) / len(recent[-50:])
            on_text(f"iteration {m['iteration']}/{iterations}\nrecent training PSNR ~{run:.1f} dB\n"
                    f"{m['count']:,} Gaussians\ninit: {used}")

    # ComfyUI runs nodes under torch.inference_mode(): the fit needs autograd, and inference tensors
    # (everything the upstream nodes made) cannot be saved for backward, so work on normal copies.
    with torch.inference_mode(False), torch.enable_grad():
        views, pts, cols, times = (x.clone() for x in (views, pts, cols, times))
        cams = replace(cams, K=cams.K.clone(), R=cams.R.clone(), t=cams.t.clone())
        scene, stats = fit_4dgs(views, cams, times, cfg, pts, cols, on_step=lambda d, _t: step(1 + d, total),
                                checkpoint_path=checkpoint_path, checkpoint_every=int(checkpoint_every), resume=resume,
                                fmd=fmd, on_metrics=metrics, device=dev)
    scene.extras["scale"] = scale
    per = training_psnr(scene, views, cams, times, on_step=lambda d, _t: step(1 + iterations + d, total))
    rep = FitReport(psnr=float(per.mean()), psnr_per_view=tuple(float(x) for x in per.mean(1)), init=used,
                    count=len(scene), stats=stats, recalibration=note)
    if not math.isfinite(rep.psnr):
        raise RuntimeError(f"4DGS fit: the final renders are not finite ({rep.text()})")
    if on_text is not None:
        on_text(rep.text())
    orbit = render_rig(scene, rig, True, orbit_frames, render_time, render_time)
    return scene, orbit, rep


@torch.no_grad()
def render_rig(scene: Scene4D, rig: Rig, orbit: bool, num_frames: int, time_start: float, time_end: float,
               on_step: StepFn | None = None) -> Tensor:
    """orbit: ``num_frames`` cameras of ``interpolate_rig`` with time sweeping ``time_start -> time_end``
    -> (num_frames, H, W, 3); else every rig camera at ``num_frames`` times -> (V*num_frames, H, W, 3). Renders
    on the scene's device and returns the frames there."""
    from ..geometry.rig import render_jobs

    dev = scene.device
    jobs = [(cam.to(dev), t) for cam, t in render_jobs(rig, float(scene.extras.get("scale", 1.0)), orbit, num_frames,
                                                        time_start, time_end, scene.time_range)]
    out = []
    for i, (cam, t) in enumerate(jobs):
        out.append(render_scene(scene, cam, t)[0].clamp(0, 1))
        report(on_step, i + 1, len(jobs))
    return torch.stack(out).float()

