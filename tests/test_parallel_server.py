"""Full4DParallel in the real server (CPU workers, gloo): the same latents as one process, cancel within 5 s,
a killed worker or one that raises mid-sample (FULL4D_TEST_FAULT, set on the server by conftest.py) fails the
prompt with a clear message and the next prompt runs; the same on Ray actors (ray_address "local")."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from fixtures.parallel import rel_err
from test_sampler_server import sampler_prompt

pytestmark = [pytest.mark.server, pytest.mark.slow]

MODEL, ADAPTER = "full4d_pool_wan.safetensors", "full4d_pool_adapter.safetensors"


@pytest.fixture(scope="module")
def files(comfy_server, comfy_host, tmp_path_factory):  # comfy_host: writing the model file imports comfy
    from fixtures.parallel import write_cli_inputs

    made = write_cli_inputs(tmp_path_factory.mktemp("pool_server"), V=3)
    for sub, key, name in (("diffusion_models", "model", MODEL), ("full4d", "adapter", ADAPTER)):
        (comfy_server.models_dir / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy(made[key], comfy_server.models_dir / sub / name)
    return made


def _prompt(steps: int, parallel: bool, prefix: str, ray: str = "") -> dict:
    p = sampler_prompt(MODEL, steps)
    p["2"]["inputs"]["adapter"] = ADAPTER
    p["7"]["inputs"]["include_source"] = False
    p["8"]["inputs"]["filename_prefix"] = f"full4d/{prefix}"
    if parallel:
        p["9"] = {"class_type": "Full4DParallel", "inputs": {"model": ["2", 0], "unet_name": MODEL, "devices": "cpu:2",
                                                            "layout": "1x2", "weight_dtype": "default"}}
        if ray:  # appended input: prompts without it keep the worker processes
            p["9"]["inputs"]["ray_address"] = ray
        p["7"]["inputs"]["model"] = ["9", 0]
    return p


def _latent(server, pid: str) -> torch.Tensor:
    from safetensors.torch import load_file

    saved = server.history(pid)["outputs"]["8"]["latents"][0]
    return load_file(str(server.output_dir / saved["subfolder"] / saved["filename"]))["latent_tensor"]


def _workers(server_pid: int) -> list[int]:
    """The server's worker processes (multiprocessing spawn children, not its resource tracker)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if int(stat[1]) == server_pid and b"spawn_main" in cmd:
            out.append(int(d.name))
    return sorted(out)


def _cancel_on_progress(server, action) -> tuple:
    seen, t = threading.Event(), {}

    def on_message(msg):
        if msg["type"] == "progress" and msg["data"].get("node") == "7" and not seen.is_set():
            seen.set()
            t["t"] = time.monotonic()
            action()

    return seen, t, on_message


def test_parallel_prompt_matches_one_process_then_cancel_then_dead_worker(comfy_server, files):
    from host import PromptFailed

    one, _ = comfy_server.run_ws(_prompt(2, False, "one"), timeout=600)
    two, _ = comfy_server.run_ws(_prompt(2, True, "two"), timeout=600)
    ref, got = _latent(comfy_server, one), _latent(comfy_server, two)
    assert ref.shape == got.shape == (2, 48, 2, 4, 6) and ref.abs().max() > 0.1
    assert rel_err(got, ref) <= 1e-5
    assert len(_workers(comfy_server.proc.pid)) == 2

    seen, t, on_message = _cancel_on_progress(comfy_server, comfy_server.interrupt)
    with pytest.raises(PromptFailed) as info:
        comfy_server.run_ws(_prompt(1000, True, "cancel"), timeout=600, on_message=on_message)
    assert seen.is_set() and "interrupted" in str(info.value)
    assert time.monotonic() - t["t"] < 5.0

    victims = _workers(comfy_server.proc.pid)
    seen, t, on_message = _cancel_on_progress(comfy_server, lambda: os.kill(victims[-1], signal.SIGKILL))
    with pytest.raises(PromptFailed) as info:
        comfy_server.run_ws(_prompt(1000, True, "killed"), timeout=600, on_message=on_message)
    assert "Full4DParallel: worker" in str(info.value) and "exited" in str(info.value), str(info.value)[:2000]
    assert time.monotonic() - t["t"] < 5.0
    again, _ = comfy_server.run_ws(_prompt(2, True, "again"), timeout=600)  # a new pool
    assert rel_err(_latent(comfy_server, again), ref) <= 1e-5


def _fails_then_next_runs(server, ray: str, ref: torch.Tensor, who: str) -> None:
    """A 7-step prompt: rank 1 raises after step 1 (the server's FULL4D_TEST_FAULT); the prompt fails within 5 s
    of the first progress message naming the worker and its error, and the next prompt runs on new workers."""
    from host import PromptFailed

    seen, t, on_message = _cancel_on_progress(server, lambda: None)
    with pytest.raises(PromptFailed) as info:
        server.run_ws(_prompt(7, True, "fault" + ray, ray), timeout=600, on_message=on_message)
    msg = str(info.value)
    assert f"Full4DParallel: worker 1 ({who}" in msg and "failed: RuntimeError: FULL4D_TEST_FAULT" in msg, msg[:2000]
    assert "the other workers were stopped" in msg
    assert time.monotonic() - t["t"] < 5.0
    again, _ = server.run_ws(_prompt(2, True, "after_fault" + ray, ray), timeout=600)
    assert rel_err(_latent(server, again), ref) <= 1e-5


def test_failing_worker_fails_the_prompt_then_the_next_runs(comfy_server, files):
    one, _ = comfy_server.run_ws(_prompt(2, False, "one_f"), timeout=600)
    _fails_then_next_runs(comfy_server, "", _latent(comfy_server, one), who="pid")


def test_ray_workers_match_one_process_then_cancel_then_fault(comfy_server, files):
    pytest.importorskip("ray")
    from host import PromptFailed

    one, _ = comfy_server.run_ws(_prompt(2, False, "one_r"), timeout=600)
    ref = _latent(comfy_server, one)
    two, _ = comfy_server.run_ws(_prompt(2, True, "ray", "local"), timeout=600)
    assert rel_err(_latent(comfy_server, two), ref) <= 1e-5

    seen, t, on_message = _cancel_on_progress(comfy_server, comfy_server.interrupt)
    with pytest.raises(PromptFailed) as info:
        comfy_server.run_ws(_prompt(1000, True, "ray_cancel", "local"), timeout=600, on_message=on_message)
    assert seen.is_set() and "interrupted" in str(info.value)
    assert time.monotonic() - t["t"] < 5.0
    _fails_then_next_runs(comfy_server, "local", ref, who="Ray actor, pid")
