"""Does the nano adapter read its condition half? (issue 29's finding.) Prints the flow-matching loss of an adapter
on fixed training clips with each target view's condition half replaced; optionally fine-tunes first.

    .venv/bin/python bench/nano_condition.py                                  # the shipped adapter, ~1 min
    .venv/bin/python bench/nano_condition.py --finetune oracle:120            # can the path learn to copy at all?
    .venv/bin/python bench/nano_condition.py --finetune oracle:120,right:300  # and keep it on the real projections?

Conditions (SPEC 1: view 0 keeps the source latent in both halves; only targets change): ``right`` the latent of
the view's own projection render (what training and sampling use), ``swapped`` another target's projection,
``black`` zeros, ``oracle`` the view's own true latent (a perfect, fully covered projection). A model that carries
projected pixels into the view has ``swapped`` and ``black`` above ``right``, and ``oracle`` far below it (knowing
``z0`` at noise level ``tau`` the velocity is exact). Clips: ``--clips`` from the adapter's training scenes (the
disk latent cache of ``training.nano``), each at tau 0.6 and 0.9 with fixed noise.

``--finetune cond:N,...`` trains the adapter (and ``--lora-rank`` LoRA on the base self-attention) N more steps per
phase at ``--lr`` (AdamW, clip 1, no schedule, no EMA) on that phase's conditions (``right``: the recipe's data;
``oracle``: a copying task) and re-measures every 40 steps; ``--save`` writes the fine-tuned adapter there (e.g. for ``bench/eval.py
--rows``-style checks), nothing else is written. The work folder is ``training.nano``'s.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONDITIONS = ("right", "swapped", "black", "oracle")


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", type=Path, default=ROOT / ".cache" / "nano", help="training.nano's work folder")
    p.add_argument("--adapter", default="shipped", help="shipped, zero, or an adapter file")
    p.add_argument("--clips", type=int, default=6)
    p.add_argument("--finetune", default="", help="phases cond:steps, comma separated (empty: measure only)")
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--lora-rank", type=int, default=0)
    p.add_argument("--save", type=Path, default=None, help="write the fine-tuned adapter file here")
    p.add_argument("--comfyui", default=str(ROOT / ".cache" / "comfyui"))
    return p.parse_args(argv)


def condition(name: str, cond: torch.Tensor, z0: torch.Tensor) -> torch.Tensor:
    """cond, z0 (V, C, T, h, w) -> the condition halves with the targets' (views 1..V-1) replaced by ``name``."""
    from comfyui_full4d.training.train import oracle_condition

    if name == "oracle":  # the recipe's curriculum condition (TrainConfig.oracle_steps)
        return oracle_condition(cond, z0)
    targets = {"right": cond[1:], "swapped": cond[1:].roll(1, 0), "black": torch.zeros_like(cond[1:])}[name]
    return torch.cat([cond[:1], targets])


def main(argv=None) -> int:
    a = _args(argv)
    from comfyui_full4d.host.boot import import_host

    import_host(a.comfyui, cpu=not torch.cuda.is_available())
    from comfyui_full4d.diffusion.adapter import camera_features
    from comfyui_full4d.diffusion.nano import empty_context
    from comfyui_full4d.host.nano import load_base, load_vae
    from comfyui_full4d.host.training import HostTrainModel
    from comfyui_full4d.training import dataset as ds
    from comfyui_full4d.training import nano
    from comfyui_full4d.training.train import _LatentCache, encode_clip, flow_matching_loss, noisy_latents, sample_tau

    cfg = nano._config("adapter", a.work)
    scenes = [sc for sc in ds.find_scenes(cfg.data) if int(sc.root.name[1:]) in nano.ADAPTER_SEEDS]
    cache = _LatentCache(0, folder=a.work / "latents" / "multiview")
    adapter = {"zero": None, "shipped": str(a.work / "adapter" / "adapter.safetensors")}.get(a.adapter, a.adapter)
    torch.manual_seed(0)
    host = HostTrainModel(load_base(a.work / "base" / "base.safetensors"),
                          load_vae(a.work / "vae_color" / "vae.safetensors"), empty_context(),
                          adapter_path=adapter, lora_rank=a.lora_rank)

    def draw(rng: random.Random):
        sc = scenes[rng.randrange(len(scenes))]
        clip = ds.sample_clip(sc, cfg.frames, rng, max_views=cfg.views)
        z0, cond = encode_clip(host, clip, cfg, cache, str(sc.root))
        return z0, cond, camera_features(clip.cameras.R, clip.cameras.t)

    rng, gen = random.Random(7), torch.Generator().manual_seed(7)
    fixed = [(z0, cond, cams, tau, torch.randn(z0.shape, generator=gen))
             for z0, cond, cams in (draw(rng) for _ in range(a.clips)) for tau in (0.6, 0.9)]
    t0 = time.time()

    def measure(step: int) -> None:
        sums = dict.fromkeys(CONDITIONS, 0.0)
        with torch.no_grad():
            for z0, cond, cams, tau, eps in fixed:
                x, taus = noisy_latents(z0, eps, tau)
                for name in CONDITIONS:
                    sums[name] += float(flow_matching_loss(host.velocity(x, condition(name, cond, z0), taus, cams),
                                                           z0, eps))
        print(f"step {step:4d}  " + "  ".join(f"{n} {v / len(fixed):.4f}" for n, v in sums.items())
              + f"  ({time.time() - t0:.0f} s)", flush=True)

    measure(0)
    params = [p for p in host.trainable.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.0)
    rng, gen = random.Random(11), torch.Generator().manual_seed(11)
    phases = [(c, int(n)) for c, n in (ph.split(":") for ph in a.finetune.split(",") if ph.strip())]
    if any(c not in ("right", "oracle") for c, _ in phases):
        raise SystemExit(f"--finetune {a.finetune!r}: phases are right:N or oracle:N")
    step = 0
    for train_on, steps in phases:
        print(f"fine-tuning {steps} steps on {train_on} conditions", flush=True)
        for k in range(1, steps + 1):
            step += 1
            z0, cond, cams = draw(rng)
            eps = torch.randn(z0.shape, generator=gen)
            x, taus = noisy_latents(z0, eps, sample_tau(cfg.shift, gen))
            loss = flow_matching_loss(host.velocity(x, condition(train_on, cond, z0), taus, cams), z0, eps)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            if k % 40 == 0 or k == steps:
                measure(step)
    if a.save is not None:
        host.save_adapter(a.save)
    return 0


if __name__ == "__main__":
    sys.exit(main())
