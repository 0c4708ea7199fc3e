"""The 4DGS stage on the host's device (issue 20).

On a CPU-only machine the fit is given ``torch.device("cpu", 0)``, a device object distinct from the default
``torch.device("cpu")``, and ``fixtures.devices.DeviceRecorder`` watches the engine while it runs: every tensor
factory the engine calls must name its device (on a GPU a factory without one makes a CPU tensor that the
CUDA tensors then meet), and no stage may hand data back to the CPU except the one-off reads listed in
``ONE_OFF_CPU`` (none of them inside the iteration loop). The code before issue 20 made its views, Gaussians,
HexPlane and densification state on the CPU and fails both checks.
Checkpoints are device-independent: a fit interrupted on one device resumes on another with the result of an
uninterrupted fit. A fit that runs out of device memory ends with an error naming max_gaussians and the image
size, not a CUDA traceback.
"""

from __future__ import annotations

import os

import pytest
import torch

from comfyui_full4d.gaussians import fit_4dgs
from comfyui_full4d.gaussians import fit as fit_mod
from comfyui_full4d.gaussians import pipeline
from comfyui_full4d.gaussians.memory import fit_bytes
from fixtures.devices import DeviceRecorder
from test_fit import _cfg  # the same config as the fit's own tests (the tiny capture: conftest.py)

FIT_DEVICE = torch.device("cpu", 0)
# the engine's only CPU reads during a fit, each once per fit or per checkpoint (never per iteration):
ONE_OFF_CPU = {"_fingerprint", "_checkpoint_name",  # the checkpoint's name hashes the inputs' bytes (host.fitting)
               "nn_scales",  # the initial scales: scipy's KD-tree on the initial points
               "save_tensors",  # a checkpoint is written from CPU copies (device-independent file)
               "interpolate_rig"}  # the orbit / FMD cameras: scipy's spline and SLERP of the rig's poses
WIDGETS = dict(iterations=12, lr_means=1.6e-4, lr_planes=0.05, lambda_dssim=0.2, lambda_tv=2e-4, max_gaussians=600,
               prune_opacity=0.015, sh_degree=1)  # the Fit node's widgets (node_fit_config's)
RUN = dict(checkpoint_every=5, resume=True, render_time=0.5, orbit_frames=3)


def _check_recorded(rec: DeviceRecorder) -> None:
    assert rec.factories == [], f"engine tensors made without a device (CPU on any machine): {rec.factories}"
    stray = {w for w in rec.to_cpu if w[1] not in ONE_OFF_CPU}
    assert not stray, f"engine stages that hand data back to the CPU: {sorted(stray)}"
    assert rec.devices == {"cpu"}


def test_the_fit_makes_and_keeps_every_tensor_on_its_device(tiny, tmp_path, monkeypatch):
    cap = tiny[0]
    seen = []
    real = pipeline.fit_4dgs

    def spy(*a, **k):
        seen.append(k.get("device"))
        return real(*a, **k)

    monkeypatch.setattr(pipeline, "fit_4dgs", spy)
    geometry, rec = cap.geometry(), DeviceRecorder()
    with rec:
        scene, orbit, rep = pipeline.fit_from_grid(cap.view_major, cap.rig, pipeline.node_fit_config(**WIDGETS),
                                                   geometry, device=FIT_DEVICE,
                                                   checkpoint_path=str(tmp_path / "c.safetensors"), **RUN)
    assert seen == [FIT_DEVICE]
    _check_recorded(rec)
    assert orbit.shape == (3, 24, 40, 3) and rep.count == len(scene) > 0


def interrupted_at(step: int):
    """An on_step that cancels the fit (as the host's interrupt does) when it reports ``step``."""
    def on_step(done: int, total: int) -> None:
        if done == step:
            raise KeyboardInterrupt("user cancel")
    return on_step


def test_resume_on_another_device_matches_an_uninterrupted_fit(tiny, tmp_path):
    cap, cams, pts, cols = tiny
    args = (cap.views, cams, cap.times, _cfg(), pts, cols)
    ref, _ = fit_4dgs(*args)
    ck = str(tmp_path / "fit.safetensors")
    with pytest.raises(KeyboardInterrupt):  # written from one device object ...
        fit_4dgs(*args, on_step=interrupted_at(7), checkpoint_path=ck, checkpoint_every=5, device=torch.device("cpu"))
    rec = DeviceRecorder()
    with rec:  # ... and resumed on another
        scene, stats = fit_4dgs(*args, checkpoint_path=ck, checkpoint_every=5, device=FIT_DEVICE)
    assert stats.resumed_from == 5
    _check_recorded(rec)  # the checkpoint was read onto the fit's device
    assert len(scene) == len(ref)
    for k, v in ref.gaussians.as_dict().items():
        torch.testing.assert_close(getattr(scene.gaussians, k), v, rtol=1e-4, atol=1e-5)
    for (n, a), b in zip(scene.hexplane.state_dict().items(), ref.hexplane.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=n)


def _stream(seed: int, V: int, T: int, n: int) -> list[tuple[int, int]]:
    """The reference: n (view, frame) draws of an independent CPU generator (mt19937) seeded with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return [(int(torch.randint(V, (1,), generator=g)), int(torch.randint(T, (1,), generator=g))) for _ in range(n)]


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("start_on, resume_on", [
    (FIT_DEVICE, torch.device("cpu")),
    pytest.param(torch.device("cuda"), FIT_DEVICE, marks=[pytest.mark.cuda, CUDA]),
    pytest.param(torch.device("cpu"), torch.device("cuda"), marks=[pytest.mark.cuda, CUDA])],
    ids=["cpu0-cpu", "cuda-cpu0", "cpu-cuda"])
def test_random_streams_are_cpu_generators_and_resume_draws_on(tiny, tmp_path, monkeypatch, start_on, resume_on):
    """Every generator the fit makes is a CPU generator, whatever device it is given (a generator on the fit's
    device draws another stream there, and its state would not load on another device), and its state travels in
    the checkpoint: the (view, frame) drawn at each iteration of a fit started on one device, interrupted at 7 and
    resumed from the checkpoint of 5 on another, are an independent CPU stream seeded with the config's seed. On a
    CPU-only machine ``torch.device("cpu", 0)`` stands in for the other device (it draws the same stream, so the
    generators' requested devices are recorded too)."""
    from dataclasses import replace

    from comfyui_full4d.gaussians import DensifyConfig

    cap, cams, pts, cols = tiny
    cfg = replace(_cfg(), densify=DensifyConfig(start=10**6, stop=10**6 + 1))  # only the (view, frame) draws
    V, T = cap.views.shape[:2]
    ref = _stream(cfg.seed, V, T, cfg.iterations)
    assert len(set(ref)) > 2  # the stream visits several (view, frame) pairs
    made, drawn, real_generator = [], [], torch.Generator

    class Recording(real_generator):
        def __new__(cls, device="cpu"):
            made.append(torch.device(device))
            return real_generator.__new__(cls, device)

    real = fit_mod.render_scene

    def spy(scene, camera, time, *a, **k):
        v = int((cams.t.to(camera.t.device) - camera.t).abs().sum(-1).argmin())
        drawn.append((v, int((cap.times - time).abs().argmin())))
        return real(scene, camera, time, *a, **k)

    monkeypatch.setattr(torch, "Generator", Recording)
    monkeypatch.setattr(fit_mod, "render_scene", spy)
    ck, args = str(tmp_path / "fit.safetensors"), (cap.views, cams, cap.times, cfg, pts, cols)
    with pytest.raises(KeyboardInterrupt):
        fit_4dgs(*args, on_step=interrupted_at(7), checkpoint_path=ck, checkpoint_every=5, device=start_on)
    first = list(drawn)
    drawn.clear()
    _, stats = fit_4dgs(*args, checkpoint_path=ck, checkpoint_every=5, device=resume_on)
    assert stats.resumed_from == 5
    assert made and all(d == torch.device("cpu") for d in made), made
    assert first == ref[:7] and drawn == ref[5:]


def test_out_of_device_memory_is_an_error_naming_the_budget_and_image_size(tiny, tmp_path, monkeypatch):
    cap, cams, pts, cols = tiny
    real, calls = fit_mod.photometric_loss, {"n": 0}

    def runs_out(*a, **k):
        calls["n"] += 1
        if calls["n"] == 8:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total)")
        return real(*a, **k)

    monkeypatch.setattr(fit_mod, "photometric_loss", runs_out)
    ck = str(tmp_path / "fit.safetensors")
    with pytest.raises(RuntimeError) as err:
        fit_4dgs(cap.views, cams, cap.times, _cfg(), pts, cols, checkpoint_path=ck, checkpoint_every=5)
    e = err.value
    assert not isinstance(e, torch.OutOfMemoryError) and e.__context__ is None  # no CUDA traceback attached
    text = str(e)
    assert "max_gaussians = 600" in text and "3 x 2 training images of 40x24" in text and "Tried to allocate" in text
    assert "Lower max_gaussians, or the image size" in text
    assert os.path.exists(ck)  # the checkpoint of iteration 5 is kept: a rerun resumes from it
    monkeypatch.setattr(fit_mod, "photometric_loss", real)
    _, stats = fit_4dgs(cap.views, cams, cap.times, _cfg(), pts, cols, checkpoint_path=ck, checkpoint_every=5)
    assert stats.resumed_from == 5


def test_the_memory_estimate_grows_with_the_budget_the_image_size_and_fmd():
    base = fit_bytes(6, 21, 384, 672, 120_000, 3)
    assert base > 6 * 21 * 384 * 672 * 3 * 4  # at least the views
    assert fit_bytes(6, 21, 384, 672, 240_000, 3) > base
    assert fit_bytes(6, 21, 768, 1344, 120_000, 3) > base
    assert fit_bytes(6, 21, 384, 672, 120_000, 3, fmd=True) > base


_MEASURE = r"""
import ctypes, gc, json, re, sys
import torch
torch.set_num_threads(1)
from comfyui_full4d.gaussians import DensifyConfig, FitConfig, backproject_views, fit_4dgs
from comfyui_full4d.media.synthetic import make_capture

def status(key):
    return int(re.search(key + r":\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

n, H, W, sh = json.loads(sys.argv[1])
# one fit per process: memory an earlier fit freed would be reused, not counted
cap = make_capture(3, 2, H, W)
cams = cap.metric_cameras
pts, cols = backproject_views(cap.depth[:, 0], cap.views[:, 0], cams, max_points=10**9)
g = torch.Generator().manual_seed(0)
idx = torch.randint(len(pts), (n,), generator=g)  # n Gaussians on the surfaces, a few pixels wide
pts, cols = pts[idx] + 0.01 * torch.randn(n, 3, generator=g), cols[idx]
densify = DensifyConfig(start=10**6, stop=10**6 + 1, max_gaussians=n)  # exactly n throughout
fit_4dgs(cap.views, cams, cap.times, FitConfig(iterations=2, sh_degree=sh, densify=densify), pts[:100], cols[:100])
gc.collect()
ctypes.CDLL("libc.so.6").malloc_trim(0)  # what the warm-up freed goes back to the system, so reuse is not hidden
open("/proc/self/clear_refs", "w").write("5")  # VmHWM (peak resident memory) := the current VmRSS
before = status("VmRSS")
fit_4dgs(cap.views, cams, cap.times, FitConfig(iterations=4, sh_degree=sh, sh_increase_every=1, densify=densify),
         pts, cols)
print(status("VmHWM") - before + cap.views.numel() * 4)  # + the views, resident before (a GPU fit copies them)
"""
MEASURED = [(20000, 48, 80, 3), (2000, 192, 320, 1)]  # Gaussians dominate; the images dominate


@pytest.mark.slow  # two subprocesses, one fitting 20k Gaussians (~20 s)
@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux /proc/self/clear_refs "
                    "to reset the peak resident memory")
def test_the_memory_estimate_is_within_2x_of_a_measured_cpu_fit():
    """The bytes fit_bytes asks the host for, against the measured peak of a CPU fit with exactly that many
    Gaussians (a fresh process's peak resident memory during the fit above its resident memory before it, after
    a warm-up whose freed memory is trimmed back to the system, plus the views): within a factor 2 either way, for a
    fit whose memory is mostly its Gaussians (20k at SH degree 3) and one mostly its images (192x320). Measured
    1.1-1.2x on 2 shared cores; the estimate before issue 31 was 2.4-6.7x below the peak (activations of the
    deformation not counted)."""
    import json
    import subprocess
    import sys

    from comfyui_full4d.gaussians.memory import fit_bytes

    peaks = []
    for case in MEASURED:
        r = subprocess.run([sys.executable, "-c", _MEASURE, json.dumps(case)], capture_output=True, text=True,
                           timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert r.returncode == 0, r.stderr[-3000:]
        peaks.append(int(r.stdout.strip().splitlines()[-1]))
    ratios = [peak / fit_bytes(3, 2, H, W, n, sh) for peak, (n, H, W, sh) in zip(peaks, MEASURED)]
    print("measured peak / estimate:", [round(x, 2) for x in ratios])
    assert all(0.5 <= x <= 2.0 for x in ratios), ratios


@pytest.mark.slow  # the in-process host (~10-30 s on the shared CPU)
def test_the_node_fits_on_the_hosts_device_and_returns_on_its_intermediate_device(comfy_host, tiny, monkeypatch):
    import comfy.model_management as mm

    from comfyui_full4d.host import fitting as host_fitting

    cap = tiny[0]
    asked, room, seen = [], [], []
    monkeypatch.setattr(mm, "get_torch_device", lambda: asked.append("torch") or FIT_DEVICE)
    real_inter = mm.intermediate_device
    monkeypatch.setattr(mm, "intermediate_device", lambda: asked.append("intermediate") or real_inter())
    monkeypatch.setattr(host_fitting, "make_room", lambda n, d: room.append((n, d)))  # the node's path (host.fitting)
    real = pipeline.fit_4dgs
    monkeypatch.setattr(pipeline, "fit_4dgs", lambda *a, **k: seen.append(k.get("device")) or real(*a, **k))
    fit = comfy_host.node("Full4DFit4DGS")
    kw = dict(images=cap.view_major, rig=cap.rig, geometry=cap.geometry(), **WIDGETS, **RUN)
    rec = DeviceRecorder()
    with rec:
        scene, orbit, _ = fit.execute(**kw).result
    assert seen == [FIT_DEVICE] and "torch" in asked and "intermediate" in asked
    assert room == [(fit_bytes(3, 2, 24, 40, 600, 1), FIT_DEVICE)]  # VRAM asked for before the fit (no FMD)
    _check_recorded(rec)
    assert orbit.device == real_inter() and scene.device == real_inter()
    asked.clear()
    render = comfy_host.node("Full4DRender4DGS")
    with rec:
        (grid,) = render.execute(scene4d=scene, rig=cap.rig, mode="rig grid", num_frames=2, time_start=0.0,
                                 time_end=1.0).result
    assert asked[:1] == ["torch"] and "intermediate" in asked and grid.shape == (6, 24, 40, 3)
    _check_recorded(rec)


def test_make_room_asks_the_hosts_memory_manager_only_for_a_gpu(comfy_host, monkeypatch):
    import comfy.model_management as mm

    from comfyui_full4d.host.device import make_room

    calls = []
    monkeypatch.setattr(mm, "free_memory", lambda n, d, keep_loaded=[]: calls.append((n, d)))
    make_room(123, torch.device("cpu"))
    make_room(2**30, torch.device("cuda", 0))
    assert calls == [(2**30, torch.device("cuda", 0))]
