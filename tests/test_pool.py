"""The in-server worker pool (host/pool.py): two CPU workers (gloo, 1x2 Ulysses) loading a tiny 2-head Wan2.2 and a
random adapter from files through the host's loaders give the one-process result; interrupt stops them within
5 s and the pool is reused; a killed worker, or one that raises mid-sample (the FULL4D_TEST_FAULT hook), fails
the call with a clear error within 5 s and the next call starts a new pool."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fixtures.parallel import HOST_DIR, T, H, W, rel_err, write_cli_inputs

V = 4


class _Cancel(Exception):
    pass


@pytest.fixture(scope="module")
def setup(comfy_host, tmp_path_factory):
    from comfyui_full4d.host.pool import PoolSpec, shutdown_all

    files = write_cli_inputs(tmp_path_factory.mktemp("pool"), V=V)
    spec = PoolSpec(comfyui=str(HOST_DIR), model=str(files["model"]), adapter=str(files["adapter"]), layout="1x2",
                    devices=("cpu", "cpu"))
    yield files, spec
    shutdown_all()


def _job(files, steps: int) -> dict:
    from comfyui_full4d.host.torchrun import load_scene

    sc = load_scene(str(files["scene"]))
    return dict(positive=[[sc["positive"], {}]], negative=[[sc["negative"], {}]], source=sc["source"],
                projections=sc["projections"], cams=sc["cams"], seed=3, steps=steps, cfg=5.0, shift=5.0,
                sampler_name="euler", scheduler="simple")


@contextlib.contextmanager
def workers_threads(world: int = 2):
    """The reference runs on as many CPU threads as each of ``world`` CPU workers (``pool_worker.serve``): with
    another thread count the CPU kernels block their sums differently, ~1e-5 apart after a few steps."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _one_process(files, job: dict) -> torch.Tensor:
    import comfy.sd

    from comfyui_full4d.host.patch import attach_adapter, make_adapter
    from comfyui_full4d.host.sampling import sample_full4d

    base = comfy.sd.load_diffusion_model(str(files["model"]))
    with workers_threads():
        return sample_full4d(attach_adapter(base, make_adapter(base, str(files["adapter"]))), **job)


@pytest.mark.slow  # starts worker processes
def test_pool_matches_one_process_then_interrupt_then_dead_worker(setup):
    from comfyui_full4d.host.pool import WorkerDied, get_pool

    files, spec = setup
    job = _job(files, steps=2)
    ref = _one_process(files, job)
    pool = get_pool(spec)
    seen = []
    out = pool.sample(job, on_step=lambda d, t: seen.append((d, t)))
    assert out.shape == ref.shape == (V - 1, 48, T, H, W)
    assert rel_err(out, ref) <= 1e-5
    assert (2, 2) in seen

    long = _job(files, steps=200)
    t_cancel = {}

    def cancel(done, total):
        if done >= 1:
            t_cancel.setdefault("t", time.monotonic())
            raise _Cancel()

    with pytest.raises(_Cancel):
        pool.sample(long, on_step=cancel)
    assert time.monotonic() - t_cancel["t"] < 5.0
    assert get_pool(spec) is pool and pool.alive  # reused after an interrupt
    assert rel_err(pool.sample(job), ref) <= 1e-5
    rejected = r"worker . \(pid \d+\) failed: ValueError: steps must be >= 1"  # every rank rejects it
    with pytest.raises(RuntimeError, match=rejected):
        pool.sample(dict(job, steps=0))
    assert pool.alive

    victim = pool.procs[1]

    def kill(done, total):
        if done >= 1 and victim.is_alive() and "t" not in t_cancel.setdefault("kill", {}):
            t_cancel["kill"]["t"] = time.monotonic()
            os.kill(victim.pid, signal.SIGKILL)

    with pytest.raises(WorkerDied, match="worker 1 .* exited"):
        pool.sample(long, on_step=kill)
    assert time.monotonic() - t_cancel["kill"]["t"] < 5.0
    fresh = get_pool(spec)
    assert fresh is not pool and fresh.alive
    assert rel_err(fresh.sample(job), ref) <= 1e-5


@pytest.mark.slow  # starts worker processes
def test_pool_matches_one_process_with_a_wan21_class_model(comfy_host, tmp_path):
    """The pool with a Wan2.1-class model file (the host loads it as WAN21 in every worker: 16 channels, no
    per-frame timesteps, its own inpainting rule): two CPU workers (1x2 Ulysses) give the one-process result."""
    import comfy.sd

    from comfyui_full4d.host.pool import PoolSpec, get_pool, shutdown_all

    files = write_cli_inputs(tmp_path, V=V, kind="wan21")
    assert type(comfy.sd.load_diffusion_model(str(files["model"])).model).__name__ == "WAN21"
    spec = PoolSpec(comfyui=str(HOST_DIR), model=str(files["model"]), adapter=str(files["adapter"]), layout="1x2",
                    devices=("cpu", "cpu"))
    job = _job(files, steps=2)
    ref = _one_process(files, job)
    try:
        out = get_pool(spec).sample(job)
    finally:
        shutdown_all()
    assert out.shape == ref.shape == (V - 1, 16, T, H, W) and ref.abs().max() > 0.1
    assert rel_err(out, ref) <= 1e-5


@pytest.mark.slow  # starts worker processes
def test_parallel_node_feeds_the_sampler(setup, comfy_host):
    """Full4DParallel (cpu:2, 2x1 CFG split) -> Full4DSampler gives the latents of Full4DSampler alone; one device
    passes the model through unchanged; bad devices are a clear error naming the input."""
    import shutil

    import comfy.sd

    from fixtures.wan import random_rig_inputs

    files, _ = setup
    for sub, key in (("diffusion_models", "model"), ("full4d", "adapter")):
        (comfy_host.models_dir / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy(files[key], comfy_host.models_dir / sub / "pool_test.safetensors")
    loader, par, sampler = (comfy_host.node(n) for n in ("Full4DAdapterLoader", "Full4DParallel", "Full4DSampler"))
    base = comfy.sd.load_diffusion_model(str(comfy_host.models_dir / "diffusion_models" / "pool_test.safetensors"))
    patched = loader.execute(model=base, adapter="pool_test.safetensors").result[0]
    rig, src, proj, pos, neg, _ = random_rig_inputs(V, T, H, W)
    args = dict(positive=pos, negative=neg, source={"samples": src}, projections={"samples": proj}, rig=rig, seed=4,
                steps=2, cfg=5.0, shift=5.0, sampler_name="euler", scheduler="simple", views_per_pass=0,
                include_source=False)
    node_args = dict(unet_name="pool_test.safetensors", layout="auto", weight_dtype="default")
    assert par.execute(model=patched, devices="cpu:1", **node_args).result[0] is patched
    assert "cpu:N" in par.validate_inputs(devices="cpu:x", layout="auto")
    pooled = par.execute(model=patched, devices="cpu:2", **node_args).result[0]
    with workers_threads():
        ref = sampler.execute(model=patched, **args).result[0]["samples"]
    out = sampler.execute(model=pooled, **args).result[0]["samples"]
    assert out.shape == ref.shape == (V - 1, 48, T, H, W)
    assert rel_err(out, ref) <= 1e-5


# every Full4DSampler option away from its default (the ablation per case below)
OPTIONS = dict(seed=9, steps=3, cfg=3.0, shift=2.0, sampler_name="dpmpp_2m", scheduler="normal", views_per_pass=3,
               include_source=True)
V_OPTIONS = 7  # two passes of the source + 3 targets: 2 views per worker, where CPU kernels give bit-equal rows
DEFAULTS = dict(seed=4, steps=2, cfg=5.0, shift=5.0, sampler_name="euler", scheduler="simple", views_per_pass=0,
                include_source=False)


@pytest.mark.slow  # starts worker processes
def test_the_pool_carries_every_sampler_option(setup, comfy_host):
    """Full4DParallel (cpu:2, 1x2: the views of each pass split over the workers) -> Full4DSampler with every option
    off its default and each of the paper's Tab. 4 ablations gives the latents of Full4DSampler on one device. Each
    option changes the one-device result (checked with no_cross_half, where the views of a pass interact), so a job
    that left one behind would differ. (Passes of 4 views, 2 per worker: with 1 view per worker, or 3 views split
    2 + 1, CPU matmuls over fewer rows round differently and the pool differs by ~1e-5 after 3 steps.)"""
    import shutil

    import comfy.sd

    from fixtures.wan import random_rig_inputs

    files, _ = setup
    for sub, key in (("diffusion_models", "model"), ("full4d", "adapter")):
        (comfy_host.models_dir / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy(files[key], comfy_host.models_dir / sub / "pool_test.safetensors")
    loader, par, sampler = (comfy_host.node(n) for n in ("Full4DAdapterLoader", "Full4DParallel", "Full4DSampler"))
    base = comfy.sd.load_diffusion_model(str(comfy_host.models_dir / "diffusion_models" / "pool_test.safetensors"))
    patched = loader.execute(model=base, adapter="pool_test.safetensors").result[0]
    rig, src, proj, pos, neg, _ = random_rig_inputs(V_OPTIONS, T, H, W)
    data = dict(positive=pos, negative=neg, source={"samples": src}, projections={"samples": proj}, rig=rig)
    pooled = par.execute(model=patched, unet_name="pool_test.safetensors", devices="cpu:2", layout="1x2",
                         weight_dtype="default").result[0]

    def run(model, ablation, **kw):
        with workers_threads():
            return sampler.execute(model=model, **data, **{**OPTIONS, **kw}, ablation=ablation).result[0]["samples"]

    ref = run(patched, "no_cross_half")
    for name, default in DEFAULTS.items():
        other = run(patched, "no_cross_half", **{name: default})
        assert other.shape != ref.shape or (other - ref).abs().max() > 1e-3, f"{name} does not change the result"
    assert (run(patched, "full") - ref).abs().max() > 1e-3
    for ablation in ("no_cross_half", "no_intra_time", "no_fused_attention", "no_projection"):
        want = ref if ablation == "no_cross_half" else run(patched, ablation)
        got = run(pooled, ablation)
        assert got.shape == want.shape == (V_OPTIONS, 48, T, H, W)
        assert rel_err(got, want) <= 1e-5, (ablation, rel_err(got, want))


FAULT = "1:7"  # rank 1 raises after step 1 of a 7-step job (pool.FAULT_ENV, read by the workers at start)


def run_with_fault(pool, get_pool, spec, job, ref, who: str) -> None:
    """A 7-step job: rank 1 raises after step 1 while rank 0 waits for it in an all-to-all. The call fails
    within 5 s of step 1 naming the worker and its error, every worker of the pool is gone, and the next
    call gets a new pool that runs (the fault fires on 7-step jobs only)."""
    t = {}

    def first_step(done, total):
        if done >= 1:
            t.setdefault("t", time.monotonic())

    named = f"worker 1 \\({who}.*\\) failed: RuntimeError: FULL4D_TEST_FAULT"
    with pytest.raises(RuntimeError, match=named) as info:
        pool.sample(dict(job, steps=7), on_step=first_step)
    assert time.monotonic() - t["t"] < 5.0
    assert "the other workers were stopped" in str(info.value)
    assert not pool.alive
    fresh = get_pool(spec)
    assert fresh is not pool and fresh.alive
    assert rel_err(fresh.sample(job), ref) <= 1e-5


@pytest.mark.slow  # starts worker processes
def test_failing_rank_fails_the_call_then_the_next_runs(setup, monkeypatch):
    from comfyui_full4d.host.pool import FAULT_ENV, get_pool, shutdown_all

    files, spec = setup
    job = _job(files, steps=2)
    ref = _one_process(files, job)
    shutdown_all()
    monkeypatch.setenv(FAULT_ENV, FAULT)  # spawned workers inherit it
    pool = get_pool(spec)
    procs = list(pool.procs)
    run_with_fault(pool, get_pool, spec, job, ref, who="pid")
    assert not any(p.is_alive() for p in procs)
    shutdown_all()  # its workers carry the fault


_ORPHAN = """
import os, sys, time
sys.path.insert(0, {tests!r})
from comfyui_full4d.host.boot import import_host
import_host({host!r}, cpu=True)
from comfyui_full4d.host.pool import PoolSpec, get_pool
pool = get_pool(PoolSpec(comfyui={host!r}, model={model!r}, adapter=None, layout="2x1", devices=("cpu", "cpu")))
print(" ".join(str(p.pid) for p in pool.procs), flush=True)
os._exit(0)  # no exit handlers, as when the server is killed
"""


@pytest.mark.slow  # starts worker processes
def test_workers_exit_when_the_server_dies(setup):
    files, _ = setup
    code = _ORPHAN.format(tests=str(Path(__file__).parent), host=str(HOST_DIR), model=str(files["model"]))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    pids = [int(p) for p in r.stdout.split()]
    assert len(pids) == 2, r.stderr[-2000:]
    t0 = time.monotonic()
    while time.monotonic() - t0 < 10 and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.2)
    alive = [p for p in pids if Path(f"/proc/{p}").exists()]
    for p in alive:  # do not leave them behind if the check failed
        os.kill(p, signal.SIGKILL)
    assert not alive, f"workers {alive} outlived the server process"


_MAIN = """
import os, sys
sys.path.insert(0, {repo!r})
with open({marker!r}, "a") as f:
    f.write("ran\\n")
if __name__ == "__main__":
    import contextlib
    import multiprocessing as mp
    from comfyui_full4d.host.pool import _main_script_hidden
    hide = _main_script_hidden() if sys.argv[1] == "hide" else contextlib.nullcontext()
    with hide:
        p = mp.get_context("spawn").Process(target=os.getpid)
        p.start()
    p.join()
    assert __file__ and p.exitcode == 0, p.exitcode
"""


@pytest.mark.parametrize("hide", [False, True])
@pytest.mark.parametrize("started", ["script", "module"])
def test_spawned_workers_do_not_rerun_the_server_script(tmp_path, hide, started):
    """A worker must not re-run ComfyUI's main.py (prestartup scripts again; on 0.33 it fails to import, as
    the host puts its comfy/ folder first on sys.path), whether the server ran as ``python main.py`` or
    ``python -m main``. The unhidden cases show the check sees a re-run."""
    marker = tmp_path / "runs.txt"
    script = tmp_path / "main.py"
    script.write_text(_MAIN.format(repo=str(Path(__file__).resolve().parents[1]), marker=str(marker)))
    run = [str(script)] if started == "script" else ["-m", "main"]
    subprocess.run([sys.executable, *run, "hide" if hide else "plain"], check=True, timeout=120, cwd=tmp_path)
    assert marker.read_text().count("ran") == (1 if hide else 2)
