"""Node-level engine calls for the 4DGS stage (SPEC 6): grid -> fit, render along a rig / orbit (export: export.py).

Times: the grid's T frames sit at ``linspace(0, 1, T)``; render times in [0, 1] map onto the scene's range.
Units: the rig is in scene units; with source geometry, ``geometry.scale`` makes it metric (kept in
``Scene4D.extras["scale"]`` so renders use the same cameras).
"""

from __future__ import annotations


from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor

from ..cameras import Camera, Rig
from ..progress import StepFn, report
from .densify import DensifyConfig
from .fit import FitConfig, fit_4dgs, render_scene
from .init import backproject_views
from .model import Scene4D

__all__ = ["fit_from_grid", "render_rig", "init_points"]


def init_points(views: Tensor, rig: Rig, geometry, scale: float, n_random: int = 5000,
                seed: int = 0) -> tuple[Tensor, Tensor]:
    """Frame-0 source depth back-projected with the source camera (colours from view 0 frame 0), or without
    geometry ``n_random`` points uniform in a cube of half-size 1 scene unit about the rig centre (grey)."""
    if geometry is not None:
        depth = geometry.depth[0].float()
        h, w = depth.shape
        img = F.interpolate(views[0, 0].permute(2, 0, 1)[None].float(), size=(h, w), mode="bilinear",
                            align_corners=False)[0].permute(1, 2, 0)
        if geometry.conf is not None:
            depth = torch.where(geometry.conf[0] > 0, depth, torch.full_like(depth, float("nan")))
        w2c = geometry.w2c[0].float()
        cam = Camera(K=geometry.K.float()[None], R=w2c[None, :3, :3], t=w2c[None, :3, 3], width=w, height=h)
        return backproject_views(depth[None], img[None], cam, max_points=60_000, seed=seed)
    g = torch.Generator().manual_seed(seed)
    pts = (rig.center.float() + (torch.rand(n_random, 3, generator=g) * 2 - 1)) * scale
    return pts, torch.full((n_random, 3), 0.5)


def fit_from_grid(images: Tensor, rig: Rig, geometry=None, *, iterations: int, lr_means: float, lr_planes: float,
                  lambda_dssim: float, lambda_tv: float, max_gaussians: int, prune_opacity: float, sh_degree: int,
                  checkpoint_every: int, resume: bool, checkpoint_path: str | None, render_time: float,
                  orbit_frames: int, on_step: StepFn | None = None, fmd=None,
                  lambda_fmd: float = 0.0) -> tuple[Scene4D, Tensor]:
    """images (V*T, H, W, 3) view-major -> (Scene4D, orbit render (orbit_frames, H, W, 3) at render_time)."""
    V = rig.num_views
    if images.dim() != 4 or images.shape[0] % V:
        raise ValueError(f"images: {images.shape[0] if images.dim() == 4 else tuple(images.shape)} images are not a "
                         f"view-major grid of the rig's {V} views (need V*T images)")
    T = images.shape[0] // V
    views = images.reshape(V, T, *images.shape[1:]).float().cpu()
    scale = float(geometry.scale) if geometry is not None else 1.0
    cams = rig.metric(scale)
    pts, cols = init_points(views, rig, geometry, scale)
    cfg = FitConfig(iterations=int(iterations), sh_degree=int(sh_degree), lr_means=lr_means,
                    lambda_fmd=float(lambda_fmd) if fmd is not None else 0.0,
                    lr_means_final=lr_means / 100, lr_planes=lr_planes, lambda_dssim=lambda_dssim, lambda_tv=lambda_tv,
                    densify=DensifyConfig(max_gaussians=int(max_gaussians), prune_above=int(max_gaussians * 2 // 3),
                                          prune_opacity=prune_opacity, stop=max(1, int(iterations) * 2 // 3)))
    times = torch.linspace(0, 1, T) if T > 1 else torch.zeros(1)
    # ComfyUI runs nodes under torch.inference_mode(): the fit needs autograd, and inference tensors
    # (everything the upstream nodes made) cannot be saved for backward, so work on normal copies.
    with torch.inference_mode(False), torch.enable_grad():
        views, pts, cols, times = (x.clone() for x in (views, pts, cols, times))
        cams = replace(cams, K=cams.K.clone(), R=cams.R.clone(), t=cams.t.clone())
        scene, _ = fit_4dgs(views, cams, times, cfg, pts, cols, on_step=on_step, checkpoint_path=checkpoint_path,
                            checkpoint_every=int(checkpoint_every), resume=resume, fmd=fmd)
    scene.extras["scale"] = scale
    orbit = render_rig(scene, rig, True, orbit_frames, render_time, render_time)
    return scene, orbit


@torch.no_grad()
def render_rig(scene: Scene4D, rig: Rig, orbit: bool, num_frames: int, time_start: float, time_end: float,
               on_step: StepFn | None = None) -> Tensor:
    """orbit: ``num_frames`` cameras of ``interpolate_rig`` with time sweeping ``time_start -> time_end``
    -> (num_frames, H, W, 3); else every rig camera at ``num_frames`` times -> (V*num_frames, H, W, 3)."""
    from ..rig import interpolate_rig_cameras

    cams = rig.metric(float(scene.extras.get("scale", 1.0)))
    t0, t1 = scene.time_range
    s = torch.linspace(time_start, time_end, int(num_frames)) if num_frames > 1 else torch.tensor([time_start])
    times = (t0 + s * (t1 - t0)).tolist()
    if orbit:
        orb = interpolate_rig_cameras(rig, int(num_frames))
        cams = orb.metric(float(scene.extras.get("scale", 1.0)))
        jobs = [(cams[i], times[i]) for i in range(int(num_frames))]
    else:
        jobs = [(cams[v], t) for v in range(len(cams)) for t in times]
    out = []
    for i, (cam, t) in enumerate(jobs):
        out.append(render_scene(scene, cam, t)[0].clamp(0, 1))
        report(on_step, i + 1, len(jobs))
    return torch.stack(out).float()

