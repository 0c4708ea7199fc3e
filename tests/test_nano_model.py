"""The shipped nano Full-4D (models/nano/, issue 29) as a user loads it: base and VAE through the host's own loaders
(core Load Diffusion Model / Load VAE), the adapter through the pack's, sampled with the host's sampler on a
synthetic scene held out from training and from every reported evaluation, and judged against its ray-cast truth.

Scene ``SEED`` 600: no training clip used a seed below ``training.nano.HELDOUT_BELOW`` (10,000); bench/eval.py reports
seeds 1-8 and bench/fmd_eval.py validates on 500-501, so this scene was used by neither. Inputs come from the source
video and its depth alone; the truth of the five target views only scores.

The floors are about half the margins docs/results.md reports over the eight evaluation scenes (one scene varies
more than a mean of eight), and the checks are relative to baselines run here on the same inputs:

* the trained model against the projection it was given (all target pixels: the holes filled);
* the trained adapter against the untrained, zero-init one on the same base (the pixels the projection did not
  cover: what the adapter learned to fill);
* the trained adapter against itself with the camera encoder's input negated, and fed the wrong view's projection
  (views 1..5 take 5..1's; bench/eval.py's two check rows): a model that uses the camera and the projection as the
  paper says must get worse.

The projection check is the smallest effect (docs/results.md: -0.54 ± 0.21 dB over the eight scenes, every one
worse; -0.38 for negated cameras), and one scene's gap varies by as much as the floor, so it is scored on the mean
of ``SWAP_SEEDS`` (scene 600 and the next two seeds, made the same way; chosen before they were run). The shipped
adapter fails it (strict xfail, so the test says when that changes): 0.16, 0.05, 0.10 dB (mean 0.10). Not chance:
the same seeds 601 and 602 on the evaluation's rig (radius 1, elevation 0) give 0.31 and 0.68 dB; on this rig
(radius 1.2, 15 degrees up: more ground, 35-39% covered) its covered pixels lose 0.4-0.5 dB but all pixels ~0.1.
The adapters before the recipe's oracle-first curriculum gave ~0 on both rigs; the curriculum's 1000-step adapter
0.05, -0.03, 0.05 here, the 2000-step one 0.08, -0.00, 0.08 (issue 29, docs/results.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
SEED = 600
STEPS = 12
ALL_OVER_PROJECTION_DB = 6.0
UNCOVERED_OVER_ZERO_INIT_DB = 1.5
SWAP_SEEDS = (SEED, 601, 602)
RIGHT_OVER_SWAPPED_DB = 0.25  # mean over SWAP_SEEDS: half the eval's 0.54, rounded down to 0.05
RIGHT_OVER_NEGATED_CAMERAS_DB = 0.25


@pytest.fixture(scope="module")
def nano(comfy_host):
    from comfyui_full4d.host.nano import load_base, load_vae
    from comfyui_full4d.host.patch import attach_adapter, make_adapter
    from comfyui_full4d.training.nano import HELDOUT_BELOW, NANO_FILES

    assert max(SWAP_SEEDS) < HELDOUT_BELOW
    folder = ROOT / "models" / "nano"
    base, vae = load_base(folder / NANO_FILES["base"]), load_vae(folder / NANO_FILES["vae"])
    models = {"full": attach_adapter(base, make_adapter(base, str(folder / NANO_FILES["adapter"]))),
              "zero-init": attach_adapter(base, make_adapter(base, None))}
    return {**_scene(SEED), "vae": vae, "models": models}


def _scene(seed: int) -> dict:
    """Held-out scene ``seed`` on this test's rig (radius 1.2, 15 degrees up), as bench/eval.py makes its scenes."""
    from comfyui_full4d.training.nano import heldout_scene

    return heldout_scene(seed, radius=1.2, elevation_deg=15.0)


def _generate(nano: dict, model: str, projections: torch.Tensor, negate_cameras: bool = False) -> torch.Tensor:
    """(V-1, T, H, W, 3) target views sampled as Full4DSampler does (Euler, simple schedule, cfg 1, shift 3)."""
    from contextlib import nullcontext

    from comfyui_full4d.diffusion.adapter import negated_camera_features
    from comfyui_full4d.diffusion.nano import empty_context
    from comfyui_full4d.host.sampling import generate_views
    from comfyui_full4d.training.nano import SHIFT

    cap = nano["cap"]
    with negated_camera_features() if negate_cameras else nullcontext():
        return generate_views(nano["models"][model], nano["vae"], cap.source, projections, cap.rig,
                              [[empty_context(), {}]], steps=STEPS, shift=SHIFT)


@pytest.fixture(scope="module")
def scores(nano) -> dict:
    from comfyui_full4d.media.metrics import psnr, psnr_masked

    truth, hole, renders = nano["cap"].views[1:], ~nano["masks"][1:].bool(), nano["renders"][1:]
    out = {"projection": renders, "full": _generate(nano, "full", renders),
           "zero-init": _generate(nano, "zero-init", renders), "swapped": _generate(nano, "full", renders.flip(0)),
           "negated cameras": _generate(nano, "full", renders, negate_cameras=True)}
    res = {k: {"all": psnr(v, truth), "uncovered": psnr_masked(v, truth, hole)} for k, v in out.items()}
    print("\nnano model on held-out scene", SEED, {k: {c: round(x, 2) for c, x in v.items()} for k, v in res.items()})
    return res


def test_the_generated_views_beat_the_projection(scores):
    assert scores["full"]["all"] >= scores["projection"]["all"] + ALL_OVER_PROJECTION_DB, scores


def test_the_trained_adapter_fills_the_holes_better_than_the_untrained_one(scores):
    assert scores["full"]["uncovered"] >= scores["zero-init"]["uncovered"] + UNCOVERED_OVER_ZERO_INIT_DB, scores


@pytest.mark.xfail(strict=True, reason="on this rig the swapped projections cost the shipped adapter ~0.1 dB on all "
                                       "pixels (0.5 dB on the evaluation's rig, docs/results.md; issue 29)")
def test_the_adapter_uses_each_view_s_own_projection(nano, scores):
    from comfyui_full4d.media.metrics import psnr

    gaps = {SEED: scores["full"]["all"] - scores["swapped"]["all"]}
    for seed in SWAP_SEEDS[1:]:
        sc = {**nano, **_scene(seed)}  # the loaded models, this scene's capture and projections
        truth, renders = sc["cap"].views[1:], sc["renders"][1:]
        right, swapped = (psnr(_generate(sc, "full", r), truth) for r in (renders, renders.flip(0)))
        gaps[seed] = right - swapped
    print("\nright minus swapped projections, dB:", {k: round(v, 3) for k, v in gaps.items()})
    assert sum(gaps.values()) / len(gaps) >= RIGHT_OVER_SWAPPED_DB, gaps


def test_the_adapter_uses_the_cameras(scores):
    assert scores["full"]["all"] >= scores["negated cameras"]["all"] + RIGHT_OVER_NEGATED_CAMERAS_DB, scores


def test_the_shipped_files_are_fp16_within_40_mb_and_say_how_they_were_made():
    from safetensors import safe_open

    from comfyui_full4d.training.nano import NANO_FILES

    folder = ROOT / "models" / "nano"
    paths = [folder / name for name in NANO_FILES.values()]
    assert sum(p.stat().st_size for p in paths) <= 40 * 2**20
    for p in paths:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
            assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}, p.name
        assert meta.get("data_seeds", "").startswith("multiview 100000-"), (p.name, meta)
    assert (folder / "README.md").is_file()


def test_the_demo_graphs_project_at_the_radius_the_shipped_adapter_was_trained_on():
    """A projection at another splat radius than training is a different input (coverage 26% vs 43%): the shipped
    adapter's header, the recipe's constant and every demo graph running the nano model must agree."""
    import json

    from safetensors import safe_open

    from comfyui_full4d.training.nano import NANO_FILES, POINT_RADIUS

    with safe_open(str(ROOT / "models" / "nano" / NANO_FILES["adapter"]), framework="pt") as f:
        assert (f.metadata() or {}).get("point_radius_trained") == str(POINT_RADIUS)
    demos = [p for p in (ROOT / "workflows" / "api").glob("*_api.json") if "full4d_nano" in p.read_text()]
    assert demos
    for p in demos:
        radii = [n["inputs"]["point_radius"] for n in json.loads(p.read_text()).values()
                 if n["class_type"] == "Full4DProjectToCameras"]
        assert radii and all(r == POINT_RADIUS for r in radii), (p.name, radii)
