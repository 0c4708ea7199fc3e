"""Tab. 4-style ablation table for the tiny Wan2.2 trained here on synthetic scenes.

    .venv/bin/python bench/eval.py                  # CPU default (~2 min): 64x64, 5 frames, 3 views
    .venv/bin/python bench/eval.py --steps 300 --size 128 --frames 9 --views 4 --scenes 4   # longer

Each row trains the adapter from zero-init for ``--steps`` steps with one Tab. 4 switch off (same
seed, data and draws), then evaluates on a held-out synthetic scene: the flow-matching loss on
fixed clips (``val_loss``), and the host sampler's output (``sample_full4d`` after the inference
loader ``load_full4d`` read the trained file), decoded by the VAE and scored with
``comfyui_full4d.metrics`` against the true target views (PSNR, SSIM), the input video (SIFT
matches), the projection renders (``reproj_l1``) and for flicker; ``lat_mse`` compares sampled
latents with the true views' latents. The row "zero-init" is the untrained adapter (= base Wan2.2).
The tiny model and tiny VAE are random-initialised: the numbers check the pipeline and the
direction of training, not the paper's quality. Tab. 5 (4DGS with / without FMD) needs the FMD
stage, which is not in the project yet. Writes ``docs/results.md`` unless ``--no-write``.
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
    p.add_argument("--out", default=str(ROOT / "docs" / "results.md"))
    p.add_argument("--no-write", action="store_true")
    return p.parse_args(argv)


def _fixed_loss(model, scene, cfg, cache, ablation, seeds=(101, 202, 303)):
    from comfyui_full4d import dataset as ds
    from comfyui_full4d import train as tr
    from comfyui_full4d.adapter import camera_features

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
    torch.manual_seed(a.seed)
    from host import InProcessHost

    work = Path(tempfile.mkdtemp(prefix="full4d_eval_"))
    host = InProcessHost.start(work / "host")
    from fixtures.wan import load_tiny_wan, tiny_wan_vae

    from comfyui_full4d import dataset as ds
    from comfyui_full4d import metrics
    from comfyui_full4d import train as tr
    from comfyui_full4d.adapter import camera_features
    from comfyui_full4d.host.patch import NONE_ADAPTER, load_full4d
    from comfyui_full4d.host.sampling import sample_full4d
    from comfyui_full4d.host.training import HostTrainModel, ablated
    from comfyui_full4d.synthetic import make_capture

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
        patched = ablated(load_full4d(base, NONE_ADAPTER if name == "zero-init" else f"{name}.safetensors"), ab)
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
    print("\n" + header + "\n\n" + table)
    if not a.no_write:
        _write(Path(a.out), header, table, " ".join(sys.argv[1:] if argv is None else argv))
    shutil.rmtree(work, ignore_errors=True)
    return 0


def _write(path: Path, header: str, table: str, argv: str) -> None:
    text = f"""# Results

Produced by `python bench/eval.py {argv}`. Regenerate after changing the model or the recipe.

## Tab. 4 style: ablations of the multi-view diffusion model (tiny Wan2.2, synthetic scenes)

{header}.

{table}

Columns: `val_loss` flow-matching loss on fixed held-out clips (tau 0.6); `lat_mse` sampled vs true
target latents (model space); `psnr` / `ssim` decoded target views vs the true views; `matches`
SIFT ratio-test matches with the input frame at the same timestamp (stand-in for the paper's
"Mat. Pix."); `reproj_l1` mean |view - projection render| where the projection is valid;
`flicker_excess` temporal flicker above the true views' (definitions: `comfyui_full4d/metrics.py`).

What this is and is not: the base model and VAE are tiny random-initialised fixtures (no hub
weights here), trained for a few dozen CPU steps. The table shows the pipeline end to end
(train -> adapter file -> inference loader -> host sampler -> VAE -> metrics) and whether a
switch changes the loss, not the paper's numbers. The decoded-pixel metrics go through a random
VAE and mostly measure that VAE. Train with the real Wan2.2-TI2V-5B on a GPU for meaningful values
(`docs/training.md`).

## Tab. 5 style: 4DGS with vs without FMD

Not produced yet: the Flow Matching Distillation stage (SPEC 8) is not in the project.
"""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
