"""The nano Full-4D: data, the three training stages and the shipped files, one command each
(``python -m comfyui_full4d.training.nano {data,vae,base,adapter,ship,all}``; ``make nano`` runs ``all``).

Everything runs through the trainer users get (``train.run``: one loop, resumable checkpoints in
``<work>/<stage>/checkpoint``); each stage's step budget is sized to about an hour on two CPU cores.

Data (procedural scene family ``media.synthetic``; seeds below ``HELDOUT_BELOW`` are never used here: they
are the evaluation, validation and demo scenes):

* ``<work>/data/multiview/s<seed>/``: scene folders (``docs/training.md`` format: one lossless video per
  camera, ``cameras.json``, ground-truth ``depth.safetensors``), seeds ``MULTIVIEW_SEEDS``: a ring (evenly
  spaced) or arc rig of 4-6 views, random radius, elevation (and arc span), ``NANO.frames`` frames. The
  adapter trains on the first 32 (``ADAPTER_SEEDS``: each is visited often enough that the VAE latents of
  its clips, cached on disk, are reused); the VAE and base see the videos of all.
* ``<work>/data/video/v<seed>.mp4``: single-view clips from a moving camera (random orbit arc, radius,
  elevation, time window), seeds ``VIDEO_SEEDS``; the VAE and the base train on these plus every view of the
  scene folders.

Stages: ``vae`` (``stages.VAEStage``) -> ``latents`` of the clips (``stages.encode_videos``) -> ``base``
(``stages.BaseStage``) -> ``adapter`` (``train.AdapterStage`` through ``host.training.HostTrainModel`` on the nano
base and VAE loaded by the host's own loaders, exactly what ``Full4DAdapterLoader`` then runs; the VAE latents of
the clips are cached on disk, shared by the ablation runs; its first 800 of 4000 steps condition the targets on
their own clean latents, ``TrainConfig.oracle_steps``: trained on the real projections alone from the start the
adapter learned to ignore them, docs/results.md). ``ship`` writes the fp16 files to
``models/nano/`` (``NANO_FILES``).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

from ..common.io import write_json
from ..diffusion.nano import NANO_FILES

__all__ = ["HELDOUT_BELOW", "MULTIVIEW_SEEDS", "POINT_RADIUS", "VIDEO_SEEDS", "NANO_FILES", "STAGE_CONFIGS",
           "heldout_scene", "multiview_params", "render_data", "scaled_budget", "main"]

ROOT = Path(__file__).resolve().parents[2]
HELDOUT_BELOW = 10_000
MULTIVIEW_SEEDS = range(100_000, 100_320)
# the adapter's scenes: fewer than all, so the VAE latents of their clips (each view, and the source's projection into
# each other view: 36 per scene of 6 views) are encoded once and reused from the disk cache
ADAPTER_SEEDS = MULTIVIEW_SEEDS[:32]
VIDEO_SEEDS = range(200_000, 201_600)
# the splat radius of the adapter's projection renders (Full4DProjectToCameras' point_radius; the demo graphs and
# bench/eval.py project with it): radius 0 covers ~26% of a target and the nano VAE's round trip blurs those pixels
# to what the base guesses anyway, radius 1 ~43% (docs/results.md, issue 29)
POINT_RADIUS = 1
SHIFT = 3.0  # sampling shift of the nano model (small latents need less than Wan's 5 / 8)

# Loop settings per stage (``train.TrainConfig`` fields; data / out filled in by ``_config``).
STAGE_CONFIGS = {
    "vae": dict(steps=1500, lr=6e-4, warmup=100, lr_final=0.1, save_every=100, grad_clip=1.0),
    # phase 2 of the VAE, from phase 1's weights: the colour term on (stages.VAELoss.lambda_chroma)
    "vae_color": dict(steps=900, lr=3e-4, warmup=50, lr_final=0.2, save_every=100, grad_clip=1.0),
    "base": dict(steps=5000, lr=4e-4, warmup=200, lr_final=0.1, ema=0.999, save_every=200, shift=SHIFT),
    "adapter": dict(steps=4000, lr=4e-4, warmup=400, lr_final=0.1, ema=0.9995, save_every=100, shift=SHIFT,
                    views=6, latent_cache=0, point_radius=POINT_RADIUS, oracle_steps=800),
}
BASE_BATCH = 8


def _commit() -> str:
    """The checkout's commit (read from ``.git``, no subprocess), recorded in every stage's metadata."""
    git = ROOT / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head[:12]
        ref = head[5:]
        if (git / ref).is_file():
            return (git / ref).read_text().strip()[:12]
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0][:12]
    except OSError:
        pass
    return "unknown"


def heldout_scene(seed: int, radius: float = 1.0, elevation_deg: float = 0.0) -> dict:
    """The inputs of one held-out scene as the demo graphs make them (bench/eval.py's rows, the nano model test):
    ``make_capture(6, 9, 96, 160, seed)`` on a ring of ``radius`` / ``elevation_deg``, its source-only geometry
    (the source's depth, one static camera) and the projection of the source into the rig at ``POINT_RADIUS``.

    Returns {"cap": SyntheticCapture, "geometry": Geometry, "renders": (V, T, H, W, 3), "masks": (V, T, H, W)}.
    ValueError for a seed a training clip may have used (``>= HELDOUT_BELOW``)."""
    from ..geometry.projection import project_rig
    from ..geometry.source import Geometry
    from ..media.synthetic import make_capture

    if not 0 <= seed < HELDOUT_BELOW:
        raise ValueError(f"seed {seed} is not held out: training clips use seeds from {HELDOUT_BELOW} up")
    cap = make_capture(6, 9, 96, 160, seed=seed, radius=radius, elevation_deg=elevation_deg)
    geo = Geometry.static(cap.source_depth.clone(), cap.rig.cameras.K[0].clone())
    renders, masks = project_rig(cap.source, geo, cap.rig, point_radius=POINT_RADIUS)
    return {"cap": cap, "geometry": geo, "renders": renders, "masks": masks}


def multiview_params(seed: int) -> dict:
    """The rig of training scene ``seed`` (``make_capture`` keywords): ring (60%) or arc of 4-6 views, radius
    0.9-1.6, elevation -5-35 degrees, arc span 90-240 degrees."""
    r = random.Random(seed)
    kind = "ring" if r.random() < 0.6 else "arc"
    return dict(num_views=r.choice((4, 5, 6)), rig=kind, radius=r.uniform(0.9, 1.6),
                elevation_deg=r.uniform(-5.0, 35.0), span_deg=r.uniform(90.0, 240.0))


def _video_params(seed: int) -> dict:
    r = random.Random(seed)
    return dict(radius=r.uniform(0.9, 2.0), elevation_deg=r.uniform(-5.0, 40.0), azimuth_deg=r.uniform(0, 360),
                sweep_deg=0.0 if r.random() < 0.25 else r.uniform(-60.0, 60.0), time_start=r.uniform(0.0, 1.0),
                time_span=r.uniform(0.5, 1.2))


def render_data(work: Path, *, scenes: int | None = None, videos: int | None = None, log=print) -> None:
    """Render the training data (module docstring): the first ``scenes`` / ``videos`` seeds (None: all);
    skips what exists, so it resumes."""
    from ..media.synthetic import make_capture, make_moving_video
    from ..media.video import save_video
    from ..diffusion.nano import NANO
    from .dataset import write_synthetic_scene

    H, W, F = NANO.height, NANO.width, NANO.frames
    mv, vid = work / "data" / "multiview", work / "data" / "video"
    vid.mkdir(parents=True, exist_ok=True)
    mv.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    for i, seed in enumerate(MULTIVIEW_SEEDS[:scenes]):
        dest = mv / f"s{seed}"
        if (dest / "cameras.json").is_file():
            continue
        p = multiview_params(seed)
        while True:
            try:
                cap = make_capture(p["num_views"], F, H, W, seed=seed, radius=p["radius"],
                                   elevation_deg=p["elevation_deg"], rig=p["rig"], span_deg=p["span_deg"])
                break
            except ValueError:  # a camera below the ground or outside the backdrop: lift it
                p["elevation_deg"] += 5.0
        write_synthetic_scene(dest, cap)
        if i % 20 == 0:
            log(f"[nano data] multiview {i + 1}/{len(MULTIVIEW_SEEDS)} ({time.time() - t0:.0f} s)")
    for i, seed in enumerate(VIDEO_SEEDS[:videos]):
        dest = vid / f"v{seed}.mp4"
        if dest.is_file():
            continue
        save_video(make_moving_video(seed, F, H, W, **_video_params(seed)), dest, 16.0, lossless=True)
        if i % 100 == 0:
            log(f"[nano data] video {i + 1}/{len(VIDEO_SEEDS)} ({time.time() - t0:.0f} s)")
    log(f"[nano data] done in {time.time() - t0:.0f} s")


def scaled_budget(settings: dict, steps: int) -> dict:
    """A stage's loop settings compressed to ``steps``: the warmup, the EMA's horizon (``1 / (1 - ema)`` steps) and
    the oracle phase (``TrainConfig.oracle_steps``) scaled by ``steps / settings["steps"]``, so a short run (the
    Tab. 4 ablations' budget) has the same schedule shape instead of an EMA still near its zero start (0.999 after
    200 steps keeps 82% of the initial weights)."""
    if steps < 1:
        raise ValueError(f"--budget must be >= 1 step, got {steps}")
    k = steps / settings["steps"]
    out = dict(settings, steps=steps, warmup=round(settings.get("warmup", 0) * k))
    if settings.get("oracle_steps"):  # the curriculum's first phase keeps its share of the run
        out["oracle_steps"] = round(settings["oracle_steps"] * k)
    if settings.get("ema"):
        out["ema"] = round(max(0.0, 1.0 - (1.0 - settings["ema"]) / k), 10)  # 0.99, not 0.9900000000000011
    return out


def _config(stage: str, work: Path, **over) -> "TrainConfig":
    from ..diffusion.nano import NANO
    from .train import TrainConfig

    data = work / "data" / ("multiview" if stage.startswith("adapter") else "")
    kw = dict(data=str(data), out=str(work / stage), frames=NANO.frames, height=NANO.height, width=NANO.width,
              bf16=False, seed=0)
    kw.update(STAGE_CONFIGS["adapter" if stage.startswith("adapter") else stage])
    kw.update({k: v for k, v in over.items() if v is not None})
    return TrainConfig(**kw)


def _log_line(work: Path, stage: str, text: str) -> None:
    with open(work / "train.log", "a") as fh:
        fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} [{stage}] {text}\n")


def _printer(work: Path, stage: str, every: int = 25):
    def log(text: str) -> None:
        step = int(text.split()[1].split("/")[0])
        if step % every == 0:
            print(f"[nano {stage}] {text}", flush=True)
            _log_line(work, stage, text)
    return log


def train_vae(work: Path, steps: int | None = None) -> Path:
    """Phase 1 (``vae``: L1 + D-SSIM + latent moments, from scratch) then phase 2 (``vae_color``: the same plus
    the colour term, from phase 1's weights; a small VAE keeps grey levels and drops colour otherwise)."""
    from safetensors.torch import load_file

    from ..host.nano import HostVAETrainModel, build_vae
    from .stages import VAELoss, VAEStage, find_videos
    from .train import run

    meta = {"trained_by": "comfyui_full4d.training.nano vae", "commit": _commit(), "data_seeds": _seed_text()}
    for phase, loss in (("vae", VAELoss()), ("vae_color", VAELoss(lambda_chroma=4.0, latent_noise=0.05))):
        cfg = _config(phase, work, steps=steps)
        vae = build_vae(seed=cfg.seed)
        if phase == "vae_color":
            vae.load_state_dict(load_file(str(work / "vae" / "vae.safetensors")))
        model = HostVAETrainModel(vae, metadata=meta)
        res = run(cfg, VAEStage(cfg, model, find_videos(work / "data"), loss), log=_printer(work, phase))
        _log_line(work, phase, f"finished at step {res['step']} ({res['seconds']:.0f} s this run)")
    return Path(cfg.out) / "vae.safetensors"


def _seed_text() -> str:
    return (f"multiview {MULTIVIEW_SEEDS.start}-{MULTIVIEW_SEEDS.stop - 1}, video {VIDEO_SEEDS.start}-"
            f"{VIDEO_SEEDS.stop - 1}; seeds below {HELDOUT_BELOW} held out")


def encode_latents(work: Path) -> Path:
    """Latents of every training clip (first ``frames`` frames) through the trained VAE loaded by the host."""
    from ..host.nano import HostVAETrainModel, load_vae
    from .stages import encode_videos, find_videos

    dest = work / "latents" / "clips.safetensors"
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    vae = load_vae(work / "vae_color" / "vae.safetensors")
    enc = HostVAETrainModel(vae.first_stage_model.float().eval())
    videos = find_videos(work / "data")
    t0 = time.time()

    def on_step(done, total):
        if done % 80 == 0 or done == total:
            print(f"[nano latents] {done}/{total} ({time.time() - t0:.0f} s)", flush=True)

    with torch.no_grad():
        encode_videos(enc.encode, videos, _config("base", work).frames, dest, on_step=on_step)
    _log_line(work, "latents", f"{len(videos)} clips encoded in {time.time() - t0:.0f} s")
    return dest


def train_base(work: Path, steps: int | None = None) -> Path:
    from ..host.nano import HostBaseTrainModel, build_base
    from .stages import BaseStage, LatentSet
    from .train import run

    latents = LatentSet(encode_latents(work))
    cfg = _config("base", work, steps=steps)
    model = HostBaseTrainModel(build_base(seed=cfg.seed), metadata={
        "trained_by": "comfyui_full4d.training.nano base", "commit": _commit(), "data_seeds": _seed_text(),
        "shift": str(cfg.shift), "context": "zeros (1, 1, 4096)"})
    res = run(cfg, BaseStage(cfg, model, latents, BASE_BATCH), log=_printer(work, "base"))
    _log_line(work, "base", f"finished at step {res['step']} ({res['seconds']:.0f} s this run)")
    return Path(cfg.out) / "base.safetensors"


def train_adapter(work: Path, steps: int | None = None, ablation: str = "full", out: str | None = None,
                  budget: int | None = None) -> Path:
    """The adapter on the nano base, by ``train.train`` through the host (module docstring). ``budget``: a shorter
    run with the same schedule shape (``scaled_budget``); ``steps`` overrides the step count alone (smoke runs)."""
    from ..diffusion.nano import empty_context
    from ..host.nano import load_base, load_vae
    from ..host.training import HostTrainModel
    from .dataset import find_scenes
    from .train import _LatentCache, train
    from ..diffusion.ablation import Ablation

    name = "adapter" if ablation == "full" and out is None else (out or f"adapter_{ablation}")
    over = scaled_budget(STAGE_CONFIGS["adapter"], budget) if budget else {}
    if steps:  # a smoke run: the step count alone, with the oracle phase its share of it
        over = {**over, "steps": steps, "oracle_steps": scaled_budget(STAGE_CONFIGS["adapter"], steps)["oracle_steps"]}
    cfg = _config("adapter", work, **over, ablation=ablation, out=str(work / name))
    model = load_base(work / "base" / "base.safetensors")
    vae = load_vae(work / "vae_color" / "vae.safetensors")
    host = HostTrainModel(model, vae, empty_context(), ablation=Ablation.named(ablation),
                          adapter_meta={"base_model": "full4d-nano-base", "views_trained": str(cfg.views)})
    cache = _LatentCache(cfg.latent_cache, folder=work / "latents" / "multiview")
    scenes = [sc for sc in find_scenes(cfg.data) if int(sc.root.name[1:]) in ADAPTER_SEEDS]
    res = train(cfg, host, scenes, cache=cache, log=_printer(work, name))
    _log_line(work, name, f"finished at step {res['step']} ({res['seconds']:.0f} s this run)")
    return Path(cfg.out) / "adapter.safetensors"


def ship(work: Path, dest: Path = ROOT / "models" / "nano") -> list[Path]:
    """fp16 copies of the three final files in ``dest``; headers kept, and each says which stage of this recipe
    made it from which data (``trained_by``, ``data_seeds``; the adapter's own header names only its base). A file
    already there with the same tensors and header is not rewritten (``_same_file``)."""
    from safetensors import safe_open

    from ..common.io import save_tensors

    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for stage, name in NANO_FILES.items():
        src = work / ("vae_color" if stage == "vae" else stage) / f"{stage}.safetensors"
        with safe_open(str(src), framework="pt") as f:
            meta = dict(f.metadata() or {})
            sd = {k: f.get_tensor(k).half() for k in f.keys()}
        meta.setdefault("trained_by", f"comfyui_full4d.training.nano {stage}")
        if stage == "adapter":  # what Full4DProjectToCameras' point_radius should be (extra key: loaders skip it)
            meta.setdefault("point_radius_trained", str(POINT_RADIUS))
        meta.setdefault("data_seeds", _seed_text() + (f"; adapter scenes {ADAPTER_SEEDS.start}-{ADAPTER_SEEDS.stop - 1}"
                                                      if stage == "adapter" else ""))
        if not _same_file(dest / name, sd, meta):
            save_tensors(dest / name, sd, metadata=meta)
        out.append(dest / name)
    return out


def _same_file(path: Path, tensors: dict, metadata: dict) -> bool:
    """Whether ``path`` already holds exactly these tensors and metadata. ``ship`` then leaves it alone: safetensors
    writes the header's metadata in a fresh order each time, so a rewrite of unchanged weights is new bytes in git."""
    from safetensors import safe_open

    if not path.is_file():
        return False
    with safe_open(str(path), framework="pt") as f:
        if dict(f.metadata() or {}) != metadata or set(f.keys()) != set(tensors):
            return False
        for k, v in tensors.items():
            old = f.get_tensor(k)
            if old.dtype != v.dtype or not torch.equal(old, v):
                return False
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m comfyui_full4d.training.nano", description=__doc__.split("\n")[0])
    p.add_argument("stage", choices=["data", "vae", "latents", "base", "adapter", "ship", "all"])
    p.add_argument("--work", type=Path, default=ROOT / ".cache" / "nano", help="data, checkpoints, logs")
    p.add_argument("--comfyui", default=str(ROOT / ".cache" / "comfyui"), help="the ComfyUI folder (host classes)")
    p.add_argument("--steps", type=int, default=None, help="override the stage's step budget (smoke runs)")
    p.add_argument("--ablation", default="full", help="adapter: full or a Tab. 4 variant (no_fused_attention, ...)")
    p.add_argument("--out", default=None, help="adapter: output folder name under --work")
    p.add_argument("--budget", type=int, default=None,
                   help="adapter: a shorter run (the Tab. 4 ablations), warmup and EMA horizon scaled with it")
    p.add_argument("--scenes", type=int, default=None, help="data: render only the first N multiview scenes")
    p.add_argument("--videos", type=int, default=None, help="data: render only the first N single-view clips")
    p.add_argument("--dest", type=Path, default=ROOT / "models" / "nano", help="ship: the folder of the fp16 files")
    a = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if a.stage != "data":
        from ..host.boot import import_host

        import_host(a.comfyui, cpu=not torch.cuda.is_available())
    work = a.work
    work.mkdir(parents=True, exist_ok=True)
    stages = ["data", "vae", "latents", "base", "adapter", "ship"] if a.stage == "all" else [a.stage]
    for st in stages:
        t0 = time.time()
        _log_line(work, st, "start")
        if st == "data":
            render_data(work, scenes=a.scenes, videos=a.videos)
        elif st == "vae":
            train_vae(work, a.steps)
        elif st == "latents":
            encode_latents(work)
        elif st == "base":
            train_base(work, a.steps)
        elif st == "adapter":
            train_adapter(work, a.steps, a.ablation, a.out, a.budget)
        else:
            print("\n".join(str(x) for x in ship(work, a.dest)))
        _log_line(work, st, f"stage wall time {time.time() - t0:.0f} s")
        write_json(work / f"{st}.done.json", {"seconds": time.time() - t0, "commit": _commit()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
