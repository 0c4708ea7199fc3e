"""The nano Full-4D recipe (``python -m comfyui_full4d.training.nano``) end to end at a few steps per stage: the
training itself is not run in CI (an hour a stage), this smoke run of every stage is. The files it ships load
through the host's own loaders (core Load Diffusion Model / Load VAE) and the adapter through the pack's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from host import HOST_DIR, require_host

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow]


def _nano(*args: str, work: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "comfyui_full4d.training.nano", *args, "--work", str(work),
                          "--comfyui", str(HOST_DIR)], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


def test_every_stage_runs_resumes_and_ships(tmp_path, comfy_host):
    require_host()
    work = tmp_path / "nano"
    _nano("data", "--scenes", "1", "--videos", "2", work=work)
    assert len(list((work / "data" / "multiview").iterdir())) == 1 and len(list((work / "data" / "video").iterdir())) == 2
    for stage in ("vae", "latents", "base", "adapter"):
        _nano(stage, "--steps", "2", work=work)
    for folder in ("vae", "vae_color", "base", "adapter"):
        state = json.loads((work / folder / "checkpoint" / "state.json").read_text())
        assert state["step"] == 2, folder
    _nano("adapter", "--steps", "3", work=work)  # resumes from step 2: one more step, not three
    rows = (work / "adapter" / "log.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3"]
    dest = tmp_path / "models"
    _nano("ship", "--dest", str(dest), work=work)

    from safetensors import safe_open
    from safetensors.torch import load_file

    import comfy.model_base
    from comfyui_full4d.common.io import save_tensors
    from comfyui_full4d.host.nano import load_base, load_vae
    from comfyui_full4d.host.patch import attach_adapter, make_adapter
    from comfyui_full4d.training.nano import NANO_FILES, ship

    def inodes() -> dict[str, int]:
        return {stage: (dest / name).stat().st_ino for stage, name in NANO_FILES.items()}

    before = inodes()
    ship(work, dest)  # nothing new: no file is rewritten (a rewrite reorders the header's metadata: new bytes in git)
    assert inodes() == before
    trained = work / "adapter" / "adapter.safetensors"  # a retrained adapter: that file alone is written again
    with safe_open(str(trained), "pt") as f:
        meta = f.metadata()
    sd = load_file(str(trained))
    first = next(iter(sd))
    save_tensors(trained, {**sd, first: sd[first] + 1}, metadata=meta)
    ship(work, dest)
    after = inodes()
    assert after["adapter"] != before["adapter"] and {k: v for k, v in after.items() if k != "adapter"} == \
        {k: v for k, v in before.items() if k != "adapter"}

    for name in NANO_FILES.values():
        with safe_open(str(dest / name), "pt") as f:
            assert all(f.get_slice(k).get_dtype() == "F16" for k in f.keys()), name  # shipped in fp16
            assert f.metadata().get("format") in ("full4d-nano", "full4d-adapter"), name
    base = load_base(dest / NANO_FILES["base"])
    assert type(base.model) is comfy.model_base.WAN21  # the host's detection: a Wan2.1-class t2v model
    vae = load_vae(dest / NANO_FILES["vae"])
    assert vae.latent_channels == 16
    patched = attach_adapter(base, make_adapter(base, str(dest / NANO_FILES["adapter"])))
    assert patched is not base


def test_a_shorter_budget_keeps_the_schedule_shape():
    """``nano adapter --budget N`` (the Tab. 4 ablations): warmup and EMA horizon scale with N, so the file a short
    run writes is as far from its zero start as the full run's (an unscaled EMA of 0.998 would keep 67% of it)."""
    from comfyui_full4d.training.nano import STAGE_CONFIGS, scaled_budget

    full = STAGE_CONFIGS["adapter"]
    assert scaled_budget(full, full["steps"]) == full
    short = scaled_budget(full, full["steps"] // 5)
    assert short["steps"] == full["steps"] // 5 and short["warmup"] == round(full["warmup"] / 5)
    assert short["oracle_steps"] == round(full["oracle_steps"] / 5) > 0  # the curriculum keeps its share
    assert short["ema"] ** short["steps"] == pytest.approx(full["ema"] ** full["steps"], rel=0.02)
    assert {k: v for k, v in short.items() if k not in ("steps", "warmup", "ema", "oracle_steps")} == \
        {k: v for k, v in full.items() if k not in ("steps", "warmup", "ema", "oracle_steps")}
    with pytest.raises(ValueError, match="--budget"):
        scaled_budget(full, 0)


def test_the_evaluation_scenes_refuse_a_seed_training_used():
    """bench/eval.py, bench/fmd_eval.py and the model test build their scenes with ``heldout_scene``: a training seed
    there would score the model on what it learned from."""
    from comfyui_full4d.training.nano import HELDOUT_BELOW, MULTIVIEW_SEEDS, VIDEO_SEEDS, heldout_scene

    assert min(MULTIVIEW_SEEDS) >= HELDOUT_BELOW and min(VIDEO_SEEDS) >= HELDOUT_BELOW
    for seed in (HELDOUT_BELOW, MULTIVIEW_SEEDS[0], VIDEO_SEEDS[0], -1):
        with pytest.raises(ValueError, match="not held out"):
            heldout_scene(seed)
