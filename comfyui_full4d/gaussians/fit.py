"""4D Gaussian fit (SPEC 6, 8): ``L = (1-0.2) L1 + 0.2 (1 - SSIM) + lambda_tv TV + lambda_fmd FMD``.

Each iteration samples one (view, frame), deforms the canonical Gaussians to that frame's time
(``Scene4D.at``), rasterises with ``rasterize`` and takes one Adam step (one optimiser per Gaussian
tensor; means LR ``lr_means * extent`` decayed exponentially to ``lr_means_final * extent`` as 3DGS;
HexPlane planes / MLP decayed to 0.1x). The deformation learning rates (planes 0.05, MLP 3e-3) are ~30x
4D-GS's, which are tuned for 14k+ iterations: at those, a fit of a few hundred to a few thousand iterations
learns no motion; 4x higher diverges. The deformation grid covers the inner box ``scene_aabb(points,
cameras)`` and contracts what lies beyond (``model.contract``), so a far backdrop does not stretch the grid
cells over the subject. Densification uses an approximation of gsplat's view-space
gradient: ``||dL/dmu2d||`` with ``dL/dmu2d = (R dL/dmu)_xy z / f`` scaled to NDC by ``(W/2, H/2)``.

Progress: ``on_step(done, total)`` once per iteration (may raise to cancel); live metrics through
``on_metrics(dict)`` (keys iteration, loss, psnr, count) every iteration.
Checkpoints (every ``checkpoint_every`` iterations and at the end) are one safetensors file with the
JSON state in its metadata, written to a temp file and ``os.replace``d; ``resume=True`` continues
from the checkpoint's iteration. A checkpoint that finds no room (full disk, file size limit) stops the fit
with ``common.io.OutOfSpace`` saying so; the previous checkpoint stays whole.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import torch
from torch import Tensor

from ..common.io import OutOfSpace, save_tensors
from ..geometry.cameras import Camera
from ..common.progress import StepFn, report
from .densify import DensifyConfig, DensifyState, densify_step
from .fmd import FMDConfig, fmd_loss
from .guard import Snapshot, clamp_, finite_grads, finite_params, scale_bounds
from .init import init_gaussians
from .losses import photometric_loss, psnr
from .memory import oom_as_error
from .model import GAUSSIAN_KEYS, Gaussians, HexPlane, HexPlaneConfig, Scene4D

__all__ = ["FitConfig", "FitStats", "fit_4dgs", "render_scene", "scene_aabb", "camera_extent", "estimate_background",
           "training_psnr"]

CKPT_FORMAT = "full4d.4dgs_checkpoint"


@dataclass(frozen=True)
class FitConfig:
    iterations: int = 3000
    sh_degree: int = 3
    sh_increase_every: int = 500
    lr_means: float = 1.6e-4
    lr_means_final: float = 1.6e-6
    lr_scales: float = 5e-3
    lr_quats: float = 1e-3
    lr_opacity: float = 5e-2
    lr_sh: float = 2.5e-3
    lr_planes: float = 0.05
    lr_mlp: float = 3e-3
    lambda_dssim: float = 0.2
    lambda_tv: float = 2e-4
    lambda_fmd: float = 0.0
    init_opacity: float = 0.1
    background: tuple[float, float, float] | None = None  # None: estimate_background(views)
    seed: int = 0
    max_bad_steps: int = 20  # consecutive skipped / rolled-back steps before the fit gives up
    snapshot_every: int = 25
    densify: DensifyConfig = field(default_factory=DensifyConfig)
    hexplane: HexPlaneConfig = field(default_factory=HexPlaneConfig)

    def __post_init__(self) -> None:
        if int(self.iterations) < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        if self.sh_degree not in (0, 1, 2, 3):
            raise ValueError(f"sh_degree must be 0..3, got {self.sh_degree}")
        for k in ("lr_means", "lr_scales", "lr_quats", "lr_opacity", "lr_sh", "lr_planes", "lr_mlp"):
            v = getattr(self, k)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{k} must be finite and >= 0, got {v}")

    def to_json(self) -> str:
        d = asdict(self)
        d["hexplane"]["multires"] = list(self.hexplane.multires)
        return json.dumps(d, sort_keys=True)


@dataclass
class FitStats:
    iteration: int = 0
    loss: float = float("nan")
    psnr: float = float("nan")
    count: int = 0
    resumed_from: int = 0
    skipped: int = 0  # steps skipped for a non-finite loss or gradient
    restored: int = 0  # times the fit returned to its last finite snapshot
    history: list = field(default_factory=list)  # (iteration, loss, psnr, count) every 10 iterations


def scene_aabb(points: Tensor, cameras: Camera | None = None, margin: float = 0.1) -> Tensor:
    """Inner box (2, 3) [min; max] of the deformation grid (``model.contract``).

    Without cameras: the bounds of ``points`` (N, 3) padded by ``margin``. With cameras (the mip-NeRF 360
    recipe: the cameras bound the subject, far background is contracted): the bounds of the points inside
    the box of the camera centres and the point cloud's median point, grown on every side by half the
    cameras' median distance to that point, padded by ``margin``."""
    pts = points.float()
    if cameras is not None:
        c = cameras.center.reshape(-1, 3).float()
        mid = pts.median(0).values
        reach = 0.5 * float((c - mid).norm(dim=-1).median())
        c = torch.cat([c, mid[None]])
        lo, hi = c.min(0).values - reach, c.max(0).values + reach
        inside = ((pts >= lo) & (pts <= hi)).all(-1)
        if int(inside.sum()) >= 4:
            pts = pts[inside]
    lo, hi = pts.min(0).values, pts.max(0).values
    pad = (hi - lo).clamp_min(1e-3) * margin
    return torch.stack([lo - pad, hi + pad]).float()


def camera_extent(cameras: Camera) -> float:
    """3DGS scene extent: 1.1 x the largest distance of a camera centre from their mean (>= 1e-3)."""
    c = cameras.center.reshape(-1, 3)
    return max(1.1 * float((c - c.mean(0)).norm(dim=-1).max()), 1e-3)


def estimate_background(views: Tensor) -> tuple[float, float, float]:
    """The colour the fit shows where no Gaussian covers a pixel: the per-channel median of the outermost
    pixel ring of every training image, views (V, T, H, W, 3). Novel views see parts of the far field that
    no training view saw (behind the subject); this colour is a better guess there than black."""
    x = views.detach().float()
    ring = torch.cat([x[:, :, 0].reshape(-1, 3), x[:, :, -1].reshape(-1, 3), x[:, :, :, 0].reshape(-1, 3),
                      x[:, :, :, -1].reshape(-1, 3)])
    return tuple(float(c) for c in ring.median(0).values.clamp(0, 1))


def render_scene(scene: Scene4D, camera: Camera, time: float, background: Tensor | None = None,
                 sh_degree: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Render one frame: rgb (H, W, 3), alpha (H, W), and the deformed means (N, 3) (for gradients).
    ``background`` (3,) defaults to the scene's own (``extras["background"]``, set by the fit) or black."""
    from .rasterize import rasterize

    if background is None and "background" in scene.extras:
        background = torch.tensor(scene.extras["background"], dtype=torch.float32, device=scene.device)
    means, quats, scales, opac, sh = scene.at(time)
    colors = scene.colors(means, sh, camera.center, sh_degree)
    rgb, alpha = rasterize(means, quats, scales, opac, colors, camera.viewmat.to(means), camera.K.to(means),
                           camera.width, camera.height, background)
    return rgb, alpha, means


@torch.no_grad()
def training_psnr(scene: Scene4D, views: Tensor, cameras: Camera, times: Tensor,
                  on_step: StepFn | None = None) -> Tensor:
    """PSNR (V, T) in dB of the scene's render (its own background) against every training image, views
    (V, T, H, W, 3) seen by metric ``cameras`` (V,) at ``times`` (T,). ``on_step(done, V * T)`` per image."""
    V, T = views.shape[:2]
    out = torch.empty(V, T, device=views.device)
    for v in range(V):
        for f in range(T):
            out[v, f] = psnr(render_scene(scene, cameras[v], float(times[f]))[0].clamp(0, 1), views[v, f])
            report(on_step, v * T + f + 1, V * T)
    return out


def _view_grad(means: Tensor, cam: Camera) -> tuple[Tensor, Tensor]:
    """Approximate NDC gradient norm (N,) and visibility (N,) bool (module docstring)."""
    g = means.grad
    R, t, K = cam.R.to(means), cam.t.to(means), cam.K.to(means)
    mc = means.detach() @ R.T + t
    z = mc[:, 2]
    if g is None:
        return torch.zeros_like(z), torch.zeros_like(z, dtype=torch.bool)
    gc = g @ R.T
    gx = gc[:, 0] * z / K[0, 0] * cam.width / 2
    gy = gc[:, 1] * z / K[1, 1] * cam.height / 2
    uv = (mc @ K.T)[:, :2] / z.clamp_min(1e-6)[:, None]
    vis = (z > 0.01) & (uv[:, 0] >= 0) & (uv[:, 0] < cam.width) & (uv[:, 1] >= 0) & (uv[:, 1] < cam.height)
    return torch.sqrt(gx * gx + gy * gy), vis


def _make_optimizers(scene: Scene4D, cfg: FitConfig, extent: float) -> tuple[dict, torch.optim.Adam]:
    g = scene.gaussians
    lrs = {"means": cfg.lr_means * extent, "quats": cfg.lr_quats, "log_scales": cfg.lr_scales,
           "opacity_logits": cfg.lr_opacity, "sh_dc": cfg.lr_sh, "sh_rest": cfg.lr_sh / 20}
    opts = {k: torch.optim.Adam([getattr(g, k)], lr=lrs[k], eps=1e-15) for k in GAUSSIAN_KEYS}
    hp = scene.hexplane
    mlp = [p for n, p in hp.named_parameters() if not n.startswith("planes")]
    hopt = torch.optim.Adam([{"params": list(hp.planes), "lr": cfg.lr_planes}, {"params": mlp, "lr": cfg.lr_mlp}])
    return opts, hopt


def _set_lrs(opts: dict, hopt, cfg: FitConfig, extent: float, it: int) -> None:
    f = min(1.0, it / max(1, cfg.iterations))
    opts["means"].param_groups[0]["lr"] = extent * cfg.lr_means * (cfg.lr_means_final / cfg.lr_means) ** f \
        if cfg.lr_means > 0 else 0.0
    hopt.param_groups[0]["lr"] = cfg.lr_planes * 0.1**f
    hopt.param_groups[1]["lr"] = cfg.lr_mlp * 0.1**f


# ---- checkpoints --------------------------------------------------------------------------------------
def _save_checkpoint(path: str, scene: Scene4D, opts: dict, hopt, dstate: DensifyState, gen: torch.Generator,
                     it: int, fingerprint: str, stats: FitStats) -> None:
    t: dict[str, Tensor] = {}
    for k in GAUSSIAN_KEYS:
        p = getattr(scene.gaussians, k)
        t[f"g.{k}"] = p.detach()
        st = opts[k].state.get(p, {})
        for sk in ("exp_avg", "exp_avg_sq", "step"):
            if sk in st:
                t[f"adam.{k}.{sk}"] = torch.as_tensor(st[sk]).reshape(-1) if sk == "step" else st[sk]
    for n, v in scene.hexplane.state_dict().items():
        t[f"hex.{n}"] = v.detach()
    hsd = hopt.state_dict()
    for pid, st in hsd["state"].items():
        for sk, v in st.items():
            t[f"hadam.{pid}.{sk}"] = torch.as_tensor(v).reshape(-1) if sk == "step" else v
    t["aabb"] = scene.aabb
    t["densify.grad2d"], t["densify.count"] = dstate.grad2d, dstate.count
    t["rng"] = gen.get_state()
    meta = {"format": CKPT_FORMAT, "iteration": str(it), "fingerprint": fingerprint,
            "time_range": json.dumps(list(scene.time_range)), "history": json.dumps(stats.history)}
    t = {k: v.contiguous().clone() for k, v in t.items()}
    save_tensors(path, t, metadata=meta)  # CPU copies: a device-independent file


def _load_checkpoint(path: str, fingerprint: str, cfg: FitConfig, extent: float, device: torch.device):
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(path, "pt") as f:
            meta = f.metadata() or {}
        t = load_file(path)
    except Exception as e:  # noqa: BLE001 - a foreign/corrupt file is a user-facing error
        raise ValueError(f"checkpoint_path {path!r} is not a readable safetensors checkpoint ({e}); delete it or "
                         "pass resume=False") from None
    if meta.get("format") != CKPT_FORMAT:
        raise ValueError(f"checkpoint_path {path!r} is not a 4DGS fit checkpoint (format={meta.get('format')!r})")
    if meta.get("fingerprint") != fingerprint:
        raise ValueError(f"checkpoint {path!r} belongs to another fit (different inputs or config); delete it or "
                         "pass resume=False")
    # onto the fit's device, whichever device wrote the file; the RNG state and Adam step counters stay on the CPU
    t = {k: v if k == "rng" or k.endswith(".step") else v.to(device) for k, v in t.items()}
    g = Gaussians.from_dict({k: torch.nn.Parameter(t[f"g.{k}"]) for k in GAUSSIAN_KEYS})
    hp = HexPlane(cfg.hexplane, device=device)
    hp.load_state_dict({n[4:]: v for n, v in t.items() if n.startswith("hex.")})
    scene = Scene4D(g, hp, tuple(json.loads(meta["time_range"])), t["aabb"], cfg.sh_degree)
    opts, hopt = _make_optimizers(scene, cfg, extent)
    for k in GAUSSIAN_KEYS:
        if f"adam.{k}.step" in t:
            p = getattr(g, k)
            opts[k].state[p] = {"step": t[f"adam.{k}.step"].reshape(()), "exp_avg": t[f"adam.{k}.exp_avg"],
                                "exp_avg_sq": t[f"adam.{k}.exp_avg_sq"]}
    hsd = hopt.state_dict()
    state: dict = {}
    for n, v in t.items():
        if n.startswith("hadam."):
            _, pid, sk = n.split(".")
            state.setdefault(int(pid), {})[sk] = v.reshape(()) if sk == "step" else v
    hsd["state"] = state
    hopt.load_state_dict(hsd)
    dstate = DensifyState(len(g), device)
    dstate.load_state_dict({"grad2d": t["densify.grad2d"], "count": t["densify.count"]})
    gen = torch.Generator()
    gen.set_state(t["rng"])
    return scene, opts, hopt, dstate, gen, int(meta["iteration"]), json.loads(meta.get("history", "[]"))


# ---- the fit ------------------------------------------------------------------------------------------
def _check_inputs(views: Tensor, cameras: Camera, times: Tensor, points: Tensor, colours: Tensor) -> None:
    if not isinstance(views, Tensor) or views.dim() != 5 or views.shape[-1] != 3:
        raise ValueError(f"views must be (V, T, H, W, 3), got {getattr(views, 'shape', type(views).__name__)}")
    V, T, H, W, _ = views.shape
    if len(cameras.batch_shape) != 1 or len(cameras) != V:
        raise ValueError(f"the rig has {cameras.batch_shape.numel() if cameras.batch_shape else 1} cameras but the "
                         f"image grid has V={V} views; the grid must be view-major with one view per rig camera")
    if (cameras.width, cameras.height) != (W, H):
        raise ValueError(f"rig cameras are {cameras.width}x{cameras.height} but the views are {W}x{H}; resize the "
                         "rig (Camera.resized) or the images")
    if tuple(times.shape) != (T,):
        raise ValueError(f"times must be (T={T},), got {tuple(times.shape)}")
    if points is None or len(points) == 0:
        raise ValueError("the initial point cloud is empty; connect geometry with valid depth")
    if colours is None or tuple(colours.shape) != tuple(points.shape):
        raise ValueError(f"init colours must match points {tuple(points.shape)}, got "
                         f"{None if colours is None else tuple(colours.shape)}")


def _fingerprint(views: Tensor, cameras: Camera, times: Tensor, points: Tensor, cfg: FitConfig,
                 fmd: FMDConfig | None) -> str:
    import hashlib

    h = hashlib.sha256()
    for x in (views, cameras.K, cameras.R, cameras.t, times, points):
        h.update(x.detach().cpu().contiguous().float().numpy().tobytes())
    h.update(replace(cfg, iterations=1).to_json().encode())
    h.update(b"fmd" if fmd is not None else b"")
    return h.hexdigest()[:32]


def _bad_step(bad: int, cfg: FitConfig, it: int, loss: float, checkpoint_path: str | None) -> int:
    """Count one more bad step in a row; raise once there are ``cfg.max_bad_steps`` of them."""
    bad += 1
    if bad >= cfg.max_bad_steps:
        kept = f"; the last good checkpoint {checkpoint_path!r} is kept" if checkpoint_path else ""
        raise RuntimeError(f"4DGS fit: {bad} steps in a row gave a non-finite loss, gradient or parameter (the "
                           f"loss was {loss} at iteration {it}){kept}. Lower the learning rates (lr_means, "
                           "lr_planes) or check the input images for NaN.")
    return bad


@oom_as_error
def fit_4dgs(views: Tensor, cameras: Camera, times: Tensor, config: FitConfig, points: Tensor, colours: Tensor,
             on_step: StepFn | None = None, checkpoint_path: str | None = None, checkpoint_every: int = 500,
             resume: bool = True, fmd: FMDConfig | None = None, on_metrics: Callable[[dict], None] | None = None,
             device: torch.device | str | None = None) -> tuple[Scene4D, FitStats]:
    """Fit a ``Scene4D`` to views (V, T, H, W, 3) in [0, 1] seen by metric ``cameras`` (V,) at ``times`` (T,),
    initialised from ``points`` (N, 3) / ``colours`` (N, 3) (module docstring). The parameters stay finite at
    every iteration (``guard``): a step with a non-finite loss or gradient is skipped, a step that still makes
    a parameter non-finite is rolled back to the last finite snapshot. Raises ValueError on bad inputs and
    RuntimeError after ``config.max_bad_steps`` bad steps in a row (the last checkpoint is kept untouched).
    Everything (views, Gaussians, HexPlane, optimisers, densification state, renders) lives on ``device``
    (default: the views'); a device that runs out of memory gives a RuntimeError naming max_gaussians and the
    image size (``memory.oom_as_error``)."""
    dev = torch.device(device) if device is not None else getattr(views, "device", torch.device("cpu"))
    times = torch.as_tensor(times, dtype=torch.float32, device=dev).reshape(-1)
    _check_inputs(views, cameras, times, points, colours)
    views, cameras, points, colours = views.to(dev), cameras.to(dev), points.to(dev), colours.to(dev)
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    cfg = config
    V, T, H, W, _ = views.shape
    views = views.float()
    extent = camera_extent(cameras)
    fp = _fingerprint(views, cameras, times, points, cfg, fmd)
    stats = FitStats()
    start = saved = 0  # saved: the iteration of the checkpoint on disk (0: none)
    if checkpoint_path and resume and os.path.exists(checkpoint_path):
        scene, opts, hopt, dstate, gen, start, stats.history = _load_checkpoint(checkpoint_path, fp, cfg, extent, dev)
        stats.resumed_from = saved = start
    else:
        g0 = init_gaussians(points, colours, cfg.sh_degree, cfg.init_opacity)
        g = Gaussians.from_dict({k: torch.nn.Parameter(v) for k, v in g0.as_dict().items()})
        torch.manual_seed(cfg.seed)
        hp = HexPlane(cfg.hexplane, device=dev)
        t0, t1 = float(times.min()), float(times.max())
        scene = Scene4D(g, hp, (t0, t1), scene_aabb(points, cameras), cfg.sh_degree)
        opts, hopt = _make_optimizers(scene, cfg, extent)
        dstate = DensifyState(len(g), dev)
        gen = torch.Generator().manual_seed(cfg.seed)  # on the CPU on every device: one device-independent stream
    bg = torch.tensor(cfg.background if cfg.background is not None else estimate_background(views),
                      dtype=torch.float32, device=dev)
    scene.extras["background"] = [float(c) for c in bg]
    lo, hi = scale_bounds(points, extent)
    snapshot, bad = Snapshot.take(scene, start), 0
    fmd_cams = None if fmd is None or fmd.cameras is None else fmd.cameras.to(dev)
    if fmd is not None and not cfg.lambda_fmd > 0:
        raise ValueError(f"an FMD config was given but FitConfig.lambda_fmd = {cfg.lambda_fmd}; set lambda_fmd > 0 "
                         "or pass fmd=None")
    if fmd is not None:
        if fmd_cams is None:
            from ..geometry.rig import interpolate_rig

            R, t = interpolate_rig(cameras.R, cameras.t, fmd.num_poses)
            K = cameras.K if cameras.K.dim() == 2 else cameras.K[0]
            fmd_cams = Camera(K=K.expand(len(R), 3, 3), R=R.to(dev), t=t.to(dev), width=W, height=H)
    total = int(cfg.iterations)
    for it in range(start + 1, total + 1):
        _set_lrs(opts, hopt, cfg, extent, it)
        v = int(torch.randint(V, (1,), generator=gen))
        f = int(torch.randint(T, (1,), generator=gen))
        cam = cameras[v]
        deg = min(cfg.sh_degree, (it - 1) // max(1, cfg.sh_increase_every))
        rgb, _, means = render_scene(scene, cam, float(times[f]), bg, deg)
        means.retain_grad()
        loss = photometric_loss(rgb, views[v, f], cfg.lambda_dssim)
        if cfg.lambda_tv > 0:
            loss = loss + cfg.lambda_tv * scene.hexplane.tv_loss()
        if fmd_cams is not None and it > fmd.start and it % fmd.every == 0:
            c = fmd_cams[int(torch.randint(len(fmd_cams), (1,), generator=gen))]

            def render_all(camera: Camera) -> Tensor:
                return torch.stack([render_scene(scene, camera, float(tt), bg, deg)[0] for tt in times])

            lf, _ = fmd_loss(render_all, fmd.encode_fn, fmd.velocity_fn, c, gen, fmd.weight,
                             (fmd.tau_min, fmd.tau_max))
            loss = loss + cfg.lambda_fmd * lf
        if bool(torch.isfinite(loss)):
            loss.backward()
        if not (bool(torch.isfinite(loss)) and finite_grads(scene)):
            stats.skipped += 1
            bad = _bad_step(bad, cfg, it, float(loss.detach()), checkpoint_path)
            for o in [*opts.values(), hopt]:
                o.zero_grad(set_to_none=True)
            report(on_step, it, total)
            continue
        gn, vis = _view_grad(means, cam)
        dstate.accumulate(gn, vis)
        for o in opts.values():
            o.step()
            o.zero_grad(set_to_none=True)
        hopt.step()
        hopt.zero_grad(set_to_none=True)
        clamp_(scene.gaussians, lo, hi)
        if not finite_params(scene):  # roll back to the last finite state with fresh Adam moments
            stats.restored += 1
            bad = _bad_step(bad, cfg, it, float("nan"), checkpoint_path)
            snapshot.restore(scene)
            opts, hopt = _make_optimizers(scene, cfg, extent)
            dstate = DensifyState(len(scene.gaussians), dev)
            report(on_step, it, total)
            continue
        bad = 0
        if cfg.densify.due(it) and it < total:
            scene.gaussians, _ = densify_step(scene.gaussians, opts, dstate, cfg.densify, extent, gen)
        stats.iteration, stats.loss, stats.count = it, float(loss.detach()), len(scene.gaussians)
        stats.psnr = psnr(rgb, views[v, f])
        if it % 10 == 0 or it == total:
            stats.history.append((it, stats.loss, stats.psnr, stats.count))
        if on_metrics is not None:
            on_metrics({"iteration": it, "loss": stats.loss, "psnr": stats.psnr, "count": stats.count})
        if checkpoint_path and (it % checkpoint_every == 0 or it == total):
            try:
                _save_checkpoint(checkpoint_path, scene, opts, hopt, dstate, gen, it, fp, stats)
            except OutOfSpace as e:
                kept = (f"the checkpoint of iteration {saved} is kept as it was (a rerun resumes from it)" if saved
                        else "this fit had written no checkpoint yet")
                raise OutOfSpace(e.errno, f"4DGS fit: no room for its checkpoint at iteration {it} ({e}); {kept}. "
                                          f"Free space on the disk of {checkpoint_path!r} (the host's temp folder "
                                          "for the node) and run again") from None
            saved = it
        if it % cfg.snapshot_every == 0:
            snapshot = Snapshot.take(scene, it)
        report(on_step, it, total)
    stats.iteration, stats.count = max(stats.iteration, start), len(scene.gaussians)
    for k in GAUSSIAN_KEYS:  # hand back plain tensors
        setattr(scene.gaussians, k, getattr(scene.gaussians, k).detach())
    scene.hexplane.requires_grad_(False)
    return scene, stats
