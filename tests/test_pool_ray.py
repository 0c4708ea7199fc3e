"""The worker pool on Ray actors (host/pool_ray.py, ray_address "local"): two CPU actors (gloo, 1x2 Ulysses) give
the one-process result; interrupt stops them within 5 s and the pool is reused; a rank that raises mid-sample
(FULL4D_TEST_FAULT) and a killed actor each fail the call with a clear error within 5 s and the next call runs on
new actors. Ray stays on 127.0.0.1, with no dashboard and no usage stats. Skipped when Ray is not installed."""

from __future__ import annotations

import importlib.util
import os
import signal
import time

import pytest

from fixtures.parallel import HOST_DIR, RAY_ENV, T, H, W, rel_err, write_cli_inputs
from test_pool import FAULT, V, _Cancel, _job, _one_process, run_with_fault

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed")


@pytest.fixture(scope="module")
def ray_setup(comfy_host, tmp_path_factory):
    from comfyui_full4d.host.pool import FAULT_ENV, PoolSpec, shutdown_all

    mp = pytest.MonkeyPatch()
    for k, v in {**RAY_ENV, FAULT_ENV: FAULT}.items():  # the actors get the fault from the server's environment
        mp.setenv(k, v)
    files = write_cli_inputs(tmp_path_factory.mktemp("pool_ray"), V=V)
    spec = PoolSpec(comfyui=str(HOST_DIR), model=str(files["model"]), adapter=str(files["adapter"]), layout="1x2",
                    devices=("cpu", "cpu"), ray_address="local")
    yield files, spec
    shutdown_all()
    import ray

    ray.shutdown()
    mp.undo()


@pytest.mark.slow  # starts a Ray instance and its actors
@needs_ray
def test_ray_pool_matches_one_process_then_interrupt_then_fault_then_dead_actor(ray_setup):
    from comfyui_full4d.host.pool import WorkerDied, get_pool
    from comfyui_full4d.host.pool_ray import RayPool

    files, spec = ray_setup
    job = _job(files, steps=2)
    ref = _one_process(files, job)
    pool = get_pool(spec)
    assert isinstance(pool, RayPool) and {w[1] for w in pool.where} == {"127.0.0.1"}
    out = pool.sample(job)
    assert out.shape == ref.shape == (V - 1, 48, T, H, W)
    assert rel_err(out, ref) <= 1e-5

    t = {}

    def cancel(done, total):
        if done >= 1:
            t.setdefault("cancel", time.monotonic())
            raise _Cancel()

    with pytest.raises(_Cancel):
        pool.sample(_job(files, steps=200), on_step=cancel)
    assert time.monotonic() - t["cancel"] < 5.0
    assert get_pool(spec) is pool and pool.alive  # reused after an interrupt

    run_with_fault(pool, get_pool, spec, job, ref, who="Ray actor, pid")
    pool = get_pool(spec)

    victim = pool.pids[1]

    def kill(done, total):
        if done >= 1 and "kill" not in t:
            t["kill"] = time.monotonic()
            os.kill(victim, signal.SIGKILL)

    with pytest.raises(WorkerDied, match=f"worker 1 \\(Ray actor, pid {victim} on 127.0.0.1\\) exited"):
        pool.sample(_job(files, steps=200), on_step=kill)
    assert time.monotonic() - t["kill"] < 5.0
    fresh = get_pool(spec)
    assert fresh is not pool and fresh.alive
    assert rel_err(fresh.sample(job), ref) <= 1e-5


@pytest.mark.slow  # starts a Ray instance and its actors
@needs_ray
def test_ray_short_of_resources_is_a_clear_error(ray_setup):
    """devices asks for more CPUs than the Ray instance has: the error names devices and what is free."""
    import dataclasses

    from comfyui_full4d.host.pool import get_pool, parse_devices

    files, spec = ray_setup
    with pytest.raises(RuntimeError, match="devices: 64 Ray actors need"):
        get_pool(dataclasses.replace(spec, devices=("cpu",) * 64, layout="1x64"))
    assert parse_devices("gpu:4", ray=True) == ("gpu",) * 4
    with pytest.raises(ValueError, match="gpu:N"):
        parse_devices("0,1", ray=True)


def test_ray_missing_is_a_clear_error(monkeypatch):
    import sys

    from comfyui_full4d.host.pool_ray import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # what ``import ray`` meets when Ray is not installed
    with pytest.raises(RuntimeError, match="ray_address: 'local' needs Ray, which is not installed.*pip install ray"):
        import_ray("local")
