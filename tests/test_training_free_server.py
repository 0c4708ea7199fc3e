"""Full4DTrainingFreeSampler in the real server: the tiny Wan2.2 through the host's UNETLoader and the
projection masks from Full4DProjectToCameras, over HTTP + websocket (progress and cancel as Full4DSampler)."""

from __future__ import annotations

import shutil
import threading
import time

import pytest

from fixtures.wan import tiny_wan_path

pytestmark = pytest.mark.server


def prompt(model_name: str, steps: int, cross_view: bool = False) -> dict:
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": model_name, "weight_dtype": "default"}},
        "3": {"class_type": "Full4DTestConditioning", "inputs": {"seed": 0, "length": 8}},
        "4": {"class_type": "Full4DTestConditioning", "inputs": {"seed": 1, "length": 8}},
        "5": {"class_type": "Full4DTestLatents", "inputs": {"seed": 0, "num_views": 3, "frames": 2, "height": 4, "width": 4}},
        "6": {"class_type": "Full4DSyntheticScene",
              "inputs": {"seed": 0, "num_views": 3, "num_frames": 5, "width": 64, "height": 64,
                         "radius": 1.0, "elevation": 0.0, "fov": 50.0}},
        "7": {"class_type": "Full4DProjectToCameras",
              "inputs": {"source": ["6", 0], "geometry": ["6", 3], "rig": ["6", 2], "width": 0, "height": 0,
                         "conf_threshold": 0.0, "point_radius": 1}},
        "8": {"class_type": "Full4DTrainingFreeSampler",
              "inputs": {"model": ["1", 0], "positive": ["3", 0], "negative": ["4", 0], "source": ["5", 0],
                         "projections": ["5", 1], "masks": ["7", 1], "rig": ["6", 2], "seed": 0, "steps": steps,
                         "cfg": 5.0, "shift": 5.0, "sampler_name": "euler", "scheduler": "simple", "stop": 0.8,
                         "start_sigma": 1.0, "views_per_pass": 0, "include_source": True, "cross_view": cross_view}},
        "9": {"class_type": "SaveLatent", "inputs": {"samples": ["8", 0], "filename_prefix": "full4d/test_tf"}},
    }


@pytest.fixture(scope="module")
def model_name(comfy_server, comfy_host):  # comfy_host: building the tiny model imports comfy
    dest = comfy_server.models_dir / "diffusion_models"
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(tiny_wan_path(), dest / "full4d_tiny_wan_tf.safetensors")
    return "full4d_tiny_wan_tf.safetensors"


@pytest.mark.parametrize("cross_view", [False, True])
def test_runs_over_http_with_progress(comfy_server, model_name, cross_view):
    pid, messages = comfy_server.run_ws(prompt(model_name, steps=4, cross_view=cross_view), timeout=600)
    progress = [m["data"] for m in messages if m["type"] == "progress" and m["data"].get("node") == "8"]
    assert progress and progress[-1]["value"] == progress[-1]["max"] == 4, progress
    hist = comfy_server.history(pid)
    assert hist["status"]["completed"]
    saved = hist["outputs"]["9"]["latents"][0]
    assert (comfy_server.output_dir / saved["subfolder"] / saved["filename"]).stat().st_size > 0


def test_interrupt_stops_sampling_promptly(comfy_server, model_name):
    seen = threading.Event()
    t_interrupt = {}

    def on_message(msg):
        if msg["type"] == "progress" and msg["data"].get("node") == "8" and not seen.is_set():
            seen.set()
            t_interrupt["t"] = time.monotonic()
            comfy_server.interrupt()

    from host import PromptFailed

    with pytest.raises(PromptFailed) as info:
        comfy_server.run_ws(prompt(model_name, steps=1000), timeout=600, on_message=on_message)
    assert seen.is_set(), str(info.value)[:2000]
    assert "interrupted" in str(info.value)
    assert time.monotonic() - t_interrupt["t"] < 10.0
    pid, _ = comfy_server.run_ws(prompt(model_name, steps=2), timeout=600)
    assert comfy_server.history(pid)["status"]["completed"]


def test_bad_masks_are_a_clear_error(comfy_server, model_name):
    from host import PromptFailed

    p = prompt(model_name, steps=2)
    p["5"]["inputs"]["width"] = 6  # latents 4x6, masks 64x64 -> 4x4
    with pytest.raises(PromptFailed, match=r"masks: 5 frames of 64x64 pixels give latent"):
        comfy_server.run_ws(p, timeout=600)
