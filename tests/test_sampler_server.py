"""Full4DSampler in the real server: the tiny Wan2.2 through the host's UNETLoader, over HTTP + websocket."""

from __future__ import annotations

import shutil
import threading
import time

import pytest

from fixtures.wan import tiny_wan_path

pytestmark = pytest.mark.server


def sampler_prompt(model_name: str, steps: int) -> dict:
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": model_name, "weight_dtype": "default"}},
        "2": {"class_type": "Full4DAdapterLoader", "inputs": {"model": ["1", 0], "adapter": "none (zero-init)"}},
        "3": {"class_type": "Full4DTestConditioning", "inputs": {"seed": 0, "length": 8}},
        "4": {"class_type": "Full4DTestConditioning", "inputs": {"seed": 1, "length": 8}},
        "5": {"class_type": "Full4DTestLatents", "inputs": {"seed": 0, "num_views": 3, "frames": 2, "height": 4, "width": 6}},
        "6": {"class_type": "Full4DSyntheticScene",
              "inputs": {"seed": 0, "num_views": 3, "num_frames": 5, "width": 32, "height": 32,
                         "radius": 1.0, "elevation": 0.0, "fov": 50.0}},
        "7": {"class_type": "Full4DSampler",
              "inputs": {"model": ["2", 0], "positive": ["3", 0], "negative": ["4", 0], "source": ["5", 0],
                         "projections": ["5", 1], "rig": ["6", 2], "seed": 0, "steps": steps, "cfg": 5.0,
                         "shift": 5.0, "sampler_name": "euler", "scheduler": "simple", "views_per_pass": 0,
                         "include_source": True}},
        "8": {"class_type": "SaveLatent", "inputs": {"samples": ["7", 0], "filename_prefix": "full4d/test_sampler"}},
    }


@pytest.fixture(scope="module")
def model_name(comfy_server, comfy_host):  # comfy_host: building the tiny model imports comfy
    dest = comfy_server.models_dir / "diffusion_models"
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(tiny_wan_path(), dest / "full4d_tiny_wan.safetensors")
    return "full4d_tiny_wan.safetensors"


def test_sampling_runs_over_http_with_progress(comfy_server, model_name):
    pid, messages = comfy_server.run_ws(sampler_prompt(model_name, steps=4), timeout=600)
    progress = [m["data"] for m in messages if m["type"] == "progress" and m["data"].get("node") == "7"]
    assert progress and progress[-1]["value"] == progress[-1]["max"] == 4, progress
    hist = comfy_server.history(pid)
    assert hist["status"]["completed"]
    saved = hist["outputs"]["8"]["latents"][0]
    assert (comfy_server.output_dir / saved["subfolder"] / saved["filename"]).stat().st_size > 0


def test_interrupt_stops_sampling_promptly(comfy_server, model_name):
    seen = threading.Event()
    t_interrupt = {}

    def on_message(msg):
        if msg["type"] == "progress" and msg["data"].get("node") == "7" and not seen.is_set():
            seen.set()
            t_interrupt["t"] = time.monotonic()
            comfy_server.interrupt()

    from host import PromptFailed

    with pytest.raises(PromptFailed) as info:
        comfy_server.run_ws(sampler_prompt(model_name, steps=1000), timeout=600, on_message=on_message)
    assert seen.is_set(), str(info.value)[:2000]
    assert "interrupted" in str(info.value)
    assert time.monotonic() - t_interrupt["t"] < 10.0
    # the server is healthy afterwards: the next prompt completes
    pid, _ = comfy_server.run_ws(sampler_prompt(model_name, steps=2), timeout=600)
    assert comfy_server.history(pid)["status"]["completed"]
