"""Tab. 4 and Tab. 5 style tables for the tiny Wan2.2 on synthetic scenes; writes ``docs/results.md``.

    .venv/bin/python bench/eval.py                  # CPU default (~3 + ~5 min on 2 free cores): both tables
    .venv/bin/python bench/eval.py --tables 5       # only Tab. 5 (the Tab. 4 section of results.md is kept)
    .venv/bin/python bench/eval.py --steps 300 --size 128 --frames 9 --views 4 --scenes 4   # longer Tab. 4

Each row trains the adapter from zero-init for ``--steps`` steps with one Tab. 4 switch off (same
seed, data and draws), then evaluates on a held-out synthetic scene: the flow-matching loss on
fixed clips (``val_loss``), and the host sampler's output (``sample_full4d`` after the inference
loader ``load_full4d`` read the trained file), decoded by the VAE and scored with
``comfyui_full4d.media.metrics`` against the true target views (PSNR, SSIM), the input video (SIFT
matches), the projection renders (``reproj_l1``) and for flicker; ``lat_mse`` compares sampled
latents with the true views' latents. The row "zero-init" is the untrained adapter (= base Wan2.2).
The tiny model and tiny VAE are random-initialised: the numbers check the pipeline and the
direction of training, not the paper's quality.

Tab. 5 fits 4DGS (``gaussians.fit_4dgs``) to a synthetic capture twice with the same seed and
config: without FMD, and with FMD (``lambda_fmd`` > 0) whose teacher is the host wiring the
Fit4DGS node uses (``host.fmd.host_fmd``: the tiny Wan2.2 VAE encodes the renders, the patched tiny
Wan2.2 with a zero-init adapter predicts ``z0_hat`` from the source video and the projection into
the interpolated camera). It scores PSNR / SSIM on the training views and on held-out cameras of
the App. B interpolated orbit halfway between rig cameras (ground truth ray-cast by
``synthetic.render``), with time and the Gaussian count. Writes ``docs/results.md`` unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the in-process host harness and the tiny Wan2.2 fixtures


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=30, help="training steps per row")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--size", type=int, default=64, help="square frame size (multiple of 16)")
    p.add_argument("--frames", type=int, default=5, help="clip length 4k+1")
    p.add_argument("--views", type=int, default=3)
    p.add_argument("--scenes", type=int, default=1, help="training scenes")
    p.add_argument("--scene-frames", type=int, default=9, help="frames per synthetic video")
    p.add_argument("--sample-steps", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rows", default=",".join(("zero-init",) + ("full", "no_fused_attention", "no_projection",
                                                                "no_intra_time", "no_cross_half")))
    p.add_argument("--tables", default="4,5", help="which tables to run: 4, 5 or 4,5")
    p.add_argument("--fit-views", type=int, default=4, help="Tab. 5: rig views of the capture")
    p.add_argument("--fit-frames", type=int, default=5, help="Tab. 5: frames (4k+1, the VAE's time stride)")
    p.add_argument("--fit-size", type=int, default=32, help="Tab. 5: square image size (multiple of 16)")
    p.add_argument("--fit-points", type=int, default=3000, help="Tab. 5: initial Gaussians (frame-0 depth, all views)")
    p.add_argument("--fit-iterations", type=int, default=200)
    p.add_argument("--lambda-fmd", type=float, default=0.1)
    p.add_argument("--fmd-every", type=int, default=5, help="Tab. 5: one FMD term every N fit iterations")
    p.add_argument("--out", default=str(ROOT / "docs" / "results.md"))
    p.add_argument("--no-write", action="store_true")
    return p.parse_args(argv)


def _fixed_loss(model, scene, cfg, cache, ablation, seeds=(101, 202, 303)):
    from comfyui_full4d.training import dataset as ds
    from comfyui_full4d.training import train as tr
    from comfyui_full4d.diffusion.adapter import camera_features

    total = 0.0
    with torch.no_grad():
        for s in seeds:
            clip = ds.sample_clip(scene, cfg.frames, random.Random(s), max_views=cfg.views)
            z0, cond = tr.encode_clip(model, clip, cfg, cache, "eval")
            if not ablation.projection:
                cond = torch.cat([cond[:1], torch.zeros_like(cond[1:])])
            eps = torch.randn(z0.shape, generator=torch.Generator().manual_seed(s))
            x, taus = tr.noisy_latents(z0, eps, 0.6)
            v = model.velocity(x, cond, taus, camera_features(clip.cameras.R, clip.cameras.t))
            total += float(tr.flow_matching_loss(v, z0, eps))
    return total / len(seeds)


def main(argv=None) -> int:
    a = _args(argv)
    tables = {t.strip() for t in a.tables.split(",") if t.strip()}
    if not tables or tables - {"4", "5"}:
        raise SystemExit(f"--tables must name 4 and/or 5, got {a.tables!r}")
    from host import InProcessHost

    work = Path(tempfile.mkdtemp(prefix="full4d_eval_"))
    host = InProcessHost.start(work / "host")
    cmd = " ".join(["python bench/eval.py", *(sys.argv[1:] if argv is None else argv)])
    sections = {}
    for key, run, section in (("4", lambda: tab4(a, host, work), _tab4_section), ("5", lambda: tab5(a), _tab5_section)):
        if key in tables:
            torch.manual_seed(a.seed)
            header, table = run()
            print(f"\nTab. {key}: {header}\n\n{table}\n", flush=True)
            sections[key] = section(header, table, cmd)
    if not a.no_write:
        _write(Path(a.out), sections)
    shutil.rmtree(work, ignore_errors=True)
    return 0


def tab4(a, host, work: Path) -> tuple[str, str]:
    """Train one adapter per Tab. 4 variant and score it; returns (header, markdown table)."""
    from fixtures.wan import load_tiny_wan, tiny_wan_vae

    from comfyui_full4d.training import dataset as ds
    from comfyui_full4d.media import metrics
    from comfyui_full4d.training import train as tr
    from comfyui_full4d.diffusion.adapter import camera_features
    from comfyui_full4d.host.patch import NONE_ADAPTER, load_full4d, with_ablation
    from comfyui_full4d.host.sampling import sample_full4d
    from comfyui_full4d.host.training import HostTrainModel
    from comfyui_full4d.media.synthetic import make_capture

    t_all = time.perf_counter()
    kw = dict(num_views=a.views, num_frames=a.scene_frames, height=a.size, width=a.size)
    train_scenes = [ds.write_synthetic_scene(work / f"train{i}", make_capture(seed=a.seed + i, **kw))
                    for i in range(a.scenes)]
    held = ds.write_synthetic_scene(work / "heldout", make_capture(seed=a.seed + 1000, **kw))
    vae = tiny_wan_vae()
    ctx = torch.randn(1, 4, 4096, generator=torch.Generator().manual_seed(a.seed))
    cond_text = [[ctx, {}]]
    cache = tr._LatentCache(4096)
    full4d_dir = host.models_dir / "full4d"
    full4d_dir.mkdir(parents=True, exist_ok=True)

    clip = ds.sample_clip(held, a.frames, random.Random(a.seed + 7), max_views=a.views)
    src_lat = vae.encode(clip.frames[0])
    proj_lat = torch.cat([vae.encode(r) for r in clip.renders[1:]])
    gt_lat = torch.cat([vae.encode(f) for f in clip.frames[1:]])
    cams = camera_features(clip.cameras.R, clip.cameras.t)

    rows = []
    for name in [r for r in a.rows.split(",") if r]:
        t0 = time.perf_counter()
        ab = tr.Ablation() if name == "zero-init" else tr.Ablation.named(name)
        model = HostTrainModel(load_tiny_wan(), vae, ctx, ablation=ab)
        cfg = tr.TrainConfig(data=str(work), out=str(work / f"run_{name}"), steps=max(1, a.steps), lr=a.lr,
                             frames=a.frames, views=a.views, height=a.size, width=a.size, bf16=False,
                             save_every=10 ** 9, seed=a.seed, ablation="full" if name == "zero-init" else name)
        if name != "zero-init":
            tr.train(cfg, model, train_scenes, cache=cache)
            shutil.copy(Path(cfg.out) / "adapter.safetensors", full4d_dir / f"{name}.safetensors")
        val = _fixed_loss(model, held, cfg, cache, ab)
        base = load_tiny_wan()
        patched = with_ablation(load_full4d(base, NONE_ADAPTER if name == "zero-init" else f"{name}.safetensors"), ab)
        proj = proj_lat if ab.projection else base.model.process_latent_out(torch.zeros_like(proj_lat))
        lat = sample_full4d(patched, cond_text, cond_text, src_lat, proj, cams, seed=a.seed, steps=a.sample_steps,
                            cfg=1.0, shift=5.0, sampler_name="euler", scheduler="simple")
        views = torch.stack([vae.decode(lat[i:i + 1])[0] for i in range(lat.shape[0])]).float()
        res = metrics.evaluate_views(clip.frames[0], views, clip.frames[1:], clip.renders[1:], clip.masks[1:])
        lat_mse = float(((base.model.process_latent_in(lat) - base.model.process_latent_in(gt_lat)) ** 2).mean())
        rows.append({"variant": name, "val_loss": val, "lat_mse": lat_mse, **res,
                     "seconds": time.perf_counter() - t0})
        print(f"{name}: " + ", ".join(f"{k} {v:.4g}" for k, v in rows[-1].items() if isinstance(v, float)), flush=True)

    cols = ["variant", "val_loss", "lat_mse", "psnr", "ssim", "matches", "reproj_l1", "flicker_excess", "seconds"]
    table = metrics.format_table(rows, cols)
    header = (f"seed {a.seed}; {a.scenes} training scene(s) + 1 held-out, {a.views} views, {a.scene_frames}-frame "
              f"videos, clips of {a.frames} frames at {a.size}x{a.size}; {a.steps} training steps per row "
              f"(lr {a.lr}), sampler {a.sample_steps} Euler steps, shift 5, cfg 1; device cpu; "
              f"total {time.perf_counter() - t_all:.0f} s")
    return header, table


@torch.no_grad()
def _score(scene, cams, times, gt) -> tuple[float, float]:
    """Mean PSNR / SSIM of the fit rendered at cams (B,) x times vs gt (B, T, H, W, 3)."""
    from comfyui_full4d.media import metrics
    from comfyui_full4d.gaussians import render_scene

    ps, ss = [], []
    for b in range(len(cams)):
        pred = torch.stack([render_scene(scene, cams[b], float(t))[0].clamp(0, 1) for t in times])
        ps.append(metrics.psnr(pred, gt[b]))
        ss.append(metrics.ssim(pred, gt[b]))
    return sum(ps) / len(ps), sum(ss) / len(ss)


def tab5(a) -> tuple[str, str]:
    """4DGS without / with FMD on one synthetic capture (module docstring); returns (header, markdown table)."""
    from fixtures.wan import load_tiny_wan, tiny_wan_vae

    from comfyui_full4d.media import metrics
    from comfyui_full4d.geometry.cameras import Camera
    from comfyui_full4d.gaussians import DensifyConfig, FitConfig, HexPlaneConfig, backproject_views, fit_4dgs
    from comfyui_full4d.host.fmd import host_fmd
    from comfyui_full4d.host.patch import NONE_ADAPTER, load_full4d
    from comfyui_full4d.geometry.rig import interpolate_rig
    from comfyui_full4d.media.synthetic import make_capture, make_scene, render

    t_all = time.perf_counter()
    V, T, S, iters = a.fit_views, a.fit_frames, a.fit_size, a.fit_iterations
    cap = make_capture(V, T, S, S, seed=a.seed)
    cams = cap.metric_cameras
    pts, cols = backproject_views(cap.depth[:, 0], cap.views[:, 0], cams, max_points=a.fit_points, seed=a.seed)
    R, t = interpolate_rig(cams.R, cams.t, 4 * V)  # rig cameras are every 4th sample
    held = Camera(K=cams.K[0].expand(V, 3, 3), R=R[2::4], t=t[2::4], width=S, height=S)  # halfway between them
    gt_held, _ = render(make_scene(a.seed), held, cap.times)

    vae = tiny_wan_vae()
    ctx = torch.randn(1, 4, 4096, generator=torch.Generator().manual_seed(a.seed))
    teacher = load_full4d(load_tiny_wan(), NONE_ADAPTER)
    fmd = host_fmd(teacher, vae, [[ctx, {}]], vae.encode(cap.source), cap.source, cap.geometry(),
                   cap.rig.cameras[0], every=a.fmd_every)
    base = FitConfig(iterations=iters, sh_degree=1, sh_increase_every=max(1, iters // 3), init_opacity=0.5,
                     seed=a.seed, densify=DensifyConfig(start=100, stop=iters // 2, interval=100, max_gaussians=30_000),
                     hexplane=HexPlaneConfig(feature_dim=8, base_res=16, time_res=max(2, T), hidden=32))
    rows = []
    for name, f, lam in (("4DGS", None, 0.0), ("4DGS + FMD", fmd, a.lambda_fmd)):
        cfg = FitConfig(**{**base.__dict__, "lambda_fmd": lam})
        t0 = time.perf_counter()
        scene, stats = fit_4dgs(cap.views, cams, cap.times, cfg, pts, cols, fmd=f)
        dt = time.perf_counter() - t0
        (tp, ts), (hp, hs) = _score(scene, cams, cap.times, cap.views), _score(scene, held, cap.times, gt_held)
        rows.append({"method": name, "train_psnr": tp, "train_ssim": ts, "heldout_psnr": hp, "heldout_ssim": hs,
                     "seconds": dt, "gaussians": stats.count})
        print(f"{name}: " + ", ".join(f"{k} {v:.4g}" for k, v in rows[-1].items() if k != "method"), flush=True)
    table = metrics.format_table(rows, list(rows[0]))
    header = (f"seed {a.seed}; one synthetic capture, {V} ring views x {T} frames at {S}x{S}, {V} held-out cameras "
              f"(App. B orbit, halfway between rig cameras); {iters} iterations, SH degree 1, init "
              f"{len(pts)} Gaussians from the frame-0 depth of all views; FMD: lambda {a.lambda_fmd}, one term every {a.fmd_every} iterations, "
              f"tau ~ U[0.02, 0.98], 120 orbit poses; device cpu; total {time.perf_counter() - t_all:.0f} s")
    return header, table


def _tab4_section(header: str, table: str, cmd: str) -> str:
    return f"""## Tab. 4 style: ablations of the multi-view diffusion model (tiny Wan2.2, synthetic scenes)

Produced by `{cmd}`.

{header}.

{table}

Columns: `val_loss` flow-matching loss on fixed held-out clips (tau 0.6); `lat_mse` sampled vs true
target latents (model space); `psnr` / `ssim` decoded target views vs the true views; `matches`
SIFT ratio-test matches with the input frame at the same timestamp (stand-in for the paper's
"Mat. Pix."); `reproj_l1` mean |view - projection render| where the projection is valid;
`flicker_excess` temporal flicker above the true views' (definitions: `comfyui_full4d/media/metrics.py`).

What this is and is not: the base model and VAE are tiny random-initialised fixtures (no hub
weights here), trained for a few dozen CPU steps. The table shows the pipeline end to end
(train -> adapter file -> inference loader -> host sampler -> VAE -> metrics) and whether a
switch changes the loss, not the paper's numbers. The decoded-pixel metrics go through a random
VAE and mostly measure that VAE. Train with the real Wan2.2-TI2V-5B on a GPU for meaningful values
(`docs/training.md`).
"""


def _tab5_section(header: str, table: str, cmd: str) -> str:
    return f"""## Tab. 5 style: 4DGS with vs without FMD (tiny Wan2.2 teacher, synthetic scene)

Produced by `{cmd}`.

{header}.

{table}

Columns: `train_*` renders at the rig cameras vs the fitted views; `heldout_*` renders at the
held-out orbit cameras vs the exact ray-cast ground truth (mean over cameras and frames);
`seconds` fit wall time (on a shared CPU it moves with the other load, by 2x between runs and
between the two rows of one run: time the FMD overhead on an idle machine); `gaussians` count at
the end (no densification step falls in so short a fit).

What this is and is not: the FMD row runs the real wiring of the Fit4DGS node's FMD inputs
(`comfyui_full4d.host.fmd.host_fmd`: host VAE encoder, source projection into the sampled orbit
camera, the host's Wan2.2 patched by the Full-4D adapter as the frozen teacher), but the teacher
here is the tiny random-initialised Wan2.2 and VAE with a zero-init adapter, so its `z0_hat` is
no prior on this scene: the row measures what the distillation costs and that it runs end to
end, not what it gains. The paper's gain needs the trained adapter on the real Wan2.2-TI2V-5B
(GPU). `bench/fit.py` gives the other bound: a stand-in oracle teacher that knows the true
orbit renders.
"""


SECTIONS = {"4": "## Tab. 4 style", "5": "## Tab. 5 style"}


def _write(path: Path, sections: dict[str, str]) -> None:
    """Replace the regenerated sections of ``path``; keep the others as they are."""
    old = path.read_text() if path.is_file() else ""
    text = "# Results\n\nRegenerate after changing the model, the recipe or the 4DGS fit (commands per section).\n\n"
    for key, marker in SECTIONS.items():
        if key in sections:
            text += sections[key].rstrip() + "\n\n"
        elif marker in old:
            start = old.index(marker)
            ends = [old.index(m, start + 1) for m in SECTIONS.values() if m in old[start + 1:]]
            text += old[start:min(ends) if ends else len(old)].rstrip() + "\n\n"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text.rstrip() + "\n")
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
