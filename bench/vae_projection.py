"""How much of the projection's covered pixels survive the nano VAE, and does training the VAE on projection renders
keep more? (issue 29: the ceiling of the adapter's "uses the projection" checks.) A probe; writes nothing.

    .venv/bin/python bench/vae_projection.py            # ~16 min on two CPU cores

The adapter reads each target's projection only through its VAE latent, so what the latent keeps of the covered
pixels bounds how much the right projection can help over another view's. The projection render has black holes
(SPEC 3) that share the VAE's 8 x 8 x 4 blocks with covered pixels; the nano VAE never saw such images in training.

Side by side in one run, each from the shipped VAE (fp16 file, trained in fp32 here), ``--steps`` steps of AdamW
(lr ``--lr``, clip 1), batch 4 crops of 5 frames, 64 x 80, latent noise ``U(0, 0.05)`` and the latent moment term
of ``training.stages.VAELoss``:

* ``control``: crops of true target views only, L1 on every pixel;
* ``with projections``: half the crops are projection renders (the source projected into a target at
  ``POINT_RADIUS``, as the adapter's condition half), their L1 counted on the covered pixels only (what the holes
  decode to does not matter: the model reads the latent).

Data: ``--scenes`` training scenes (``MULTIVIEW_SEEDS``, their rigs ``multiview_params``). Scores, validation scenes
500-501 on the evaluation's rig (radius 1, elevation 0) and the model test's (radius 1.2, 15 degrees), mean of the
four: ``projection_covered`` PSNR of the projection's round trip against the truth on its covered pixels (the render
itself: ``render_covered``), ``views_all`` PSNR of the true target views' round trip (the ceiling of every row of
docs/results.md).
"""

from __future__ import annotations

import argparse
import copy
import random
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RIGS = ((1.0, 0.0), (1.2, 15.0))  # (radius, elevation): bench/eval.py's, tests/test_nano_model.py's
VALIDATION_SEEDS = (500, 501)


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--scenes", type=int, default=16)
    p.add_argument("--models", type=Path, default=ROOT / "models" / "nano")
    p.add_argument("--comfyui", default=str(ROOT / ".cache" / "comfyui"))
    return p.parse_args(argv)


def round_trip(model, frames: Tensor) -> Tensor:
    """frames (N, T, H, W, 3) in [0, 1] -> their VAE round trip, same shape."""
    with torch.no_grad():
        y = model.decode(model.encode(frames.permute(0, 4, 1, 2, 3) * 2 - 1))
    return ((y.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 4, 1)


def score(model, scenes: list[dict]) -> dict[str, float]:
    from comfyui_full4d.media.metrics import psnr, psnr_masked

    model.vae.eval()
    rows = []
    for sc in scenes:
        truth, renders, covered = sc["cap"].views[1:], sc["renders"][1:], sc["masks"][1:].bool()
        rows.append({"render_covered": psnr_masked(renders, truth, covered),
                     "projection_covered": psnr_masked(round_trip(model, renders), truth, covered),
                     "views_all": psnr(round_trip(model, truth), truth)})
    model.vae.train()
    return {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}


def training_crops(scenes: int) -> list[tuple[Tensor, Tensor, Tensor]]:
    """(views (V, T, H, W, 3), projection renders, covered masks (V, T, H, W)) of the first ``scenes`` training
    scenes."""
    from comfyui_full4d.geometry.projection import project_rig
    from comfyui_full4d.geometry.source import Geometry
    from comfyui_full4d.media.synthetic import make_capture
    from comfyui_full4d.training.nano import MULTIVIEW_SEEDS, POINT_RADIUS, multiview_params

    out = []
    for seed in MULTIVIEW_SEEDS[:scenes]:
        cap = make_capture(num_frames=9, height=96, width=160, seed=seed, **multiview_params(seed))
        geo = Geometry.static(cap.source_depth.clone(), cap.rig.cameras.K[0].clone())
        renders, masks = project_rig(cap.source, geo, cap.rig, point_radius=POINT_RADIUS)
        out.append((cap.views, renders, masks))
    return out


def batch(data: list, rng: random.Random, projection_share: float, n: int = 4, frames: int = 5,
          crop: tuple[int, int] = (64, 80)) -> tuple[Tensor, Tensor]:
    """x (n, 3, frames, h, w) in [-1, 1] and its loss weight (n, 1, frames, h, w): random target view, start and
    crop; a projection render (weight: covered) with probability ``projection_share``, else the true view (1)."""
    xs, ws = [], []
    for _ in range(n):
        views, renders, masks = data[rng.randrange(len(data))]
        V, T, H, W = masks.shape
        v, s = rng.randrange(1, V), rng.randrange(T - frames + 1)
        y, x = rng.randrange(H - crop[0] + 1), rng.randrange(W - crop[1] + 1)
        if rng.random() < projection_share:
            img, w = renders[v], masks[v].float()
        else:
            img, w = views[v], torch.ones(T, H, W)
        sl = (slice(s, s + frames), slice(y, y + crop[0]), slice(x, x + crop[1]))
        xs.append(img[sl].permute(3, 0, 1, 2))
        ws.append(w[sl])
    return torch.stack(xs) * 2 - 1, torch.stack(ws)[:, None]


def fine_tune(model, data: list, steps: int, lr: float, projection_share: float, seed: int = 0) -> float:
    """``steps`` AdamW steps in place (module docstring); returns the seconds they took."""
    from comfyui_full4d.training.stages import VAELoss, _moments

    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.vae.parameters(), lr=lr, weight_decay=0.0)
    lam = VAELoss.lambda_moments
    t0 = time.time()
    for step in range(steps):
        x, w = batch(data, rng, projection_share)
        z = model.encode(x)
        y = model.decode(z + 0.05 * torch.rand((), generator=gen) * torch.randn(z.shape, generator=gen))
        loss = ((y - x).abs() * w).sum() / (3 * w.sum()).clamp_min(1) + lam * _moments(z)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.vae.parameters(), 1.0)
        opt.step()
        if step % 50 == 0:
            print(f"  step {step}: loss {loss.item():.4f} ({time.time() - t0:.0f} s)", flush=True)
    return time.time() - t0


def main(argv=None) -> int:
    a = _args(argv)
    from comfyui_full4d.host.boot import import_host

    import_host(a.comfyui, cpu=True)
    from safetensors.torch import load_file

    from comfyui_full4d.host.nano import HostVAETrainModel, build_vae
    from comfyui_full4d.training.nano import NANO_FILES, heldout_scene

    torch.manual_seed(0)
    vae = build_vae()
    vae.load_state_dict({k: v.float() for k, v in load_file(str(a.models / NANO_FILES["vae"])).items()})
    shipped = HostVAETrainModel(vae)
    scenes = [heldout_scene(s, radius=r, elevation_deg=e) for s in VALIDATION_SEEDS for r, e in RIGS]
    data = training_crops(a.scenes)
    rows = {"shipped VAE": {**score(shipped, scenes), "seconds": 0.0}}
    for name, share in (("control", 0.0), ("with projections", 0.5)):
        print(f"[vae_projection] {name}: {a.steps} steps", flush=True)
        model = HostVAETrainModel(copy.deepcopy(vae))
        secs = fine_tune(model, data, a.steps, a.lr, share)
        rows[name] = {**score(model, scenes), "seconds": secs}
    cols = ("render_covered", "projection_covered", "views_all", "seconds")
    print("\n| VAE | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols))
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(f"{r[c]:.2f}" for c in cols) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
