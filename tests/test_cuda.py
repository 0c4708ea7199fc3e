"""The pack's CUDA paths (issue 20), run by ``pytest -m cuda`` (``scripts/gpu_check.py`` part 1); skipped without
CUDA. The host-model tests need the in-process host on the GPU: ``FULL4D_TEST_HOST_DEVICE=gpu`` (gpu_check sets
it; the default test host runs ``--cpu``).

* the 4DGS fit on CUDA: every tensor the engine makes lives on the GPU (``fixtures.devices``), gsplat renders,
  the fit reaches the CPU fit's training PSNR; a fit interrupted on the GPU resumes on the CPU and back;
* the multi-view sampler and the training-free sampler with the tiny random Wan2.2 on CUDA give the CPU's latents;
* FMD with the teacher on the GPU: the fit on CUDA with the host's teacher and VAE stays finite, the teacher runs.
(Flex vs exact attention and gsplat vs the torch compositor: tests/test_attention.py, tests/test_rasterize.py.)
"""

from __future__ import annotations

import importlib
import os
from dataclasses import replace

import pytest
import torch

from comfyui_full4d.media.synthetic import make_capture
from fixtures.devices import DeviceRecorder
from test_fit_device import interrupted_at

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
GPU_HOST = pytest.mark.skipif(os.environ.get("FULL4D_TEST_HOST_DEVICE") != "gpu",
                              reason="the host runs --cpu; set FULL4D_TEST_HOST_DEVICE=gpu")
ONE_OFF_CPU = {"_fingerprint", "nn_scales", "save_tensors", "interpolate_rig"}  # as tests/test_fit_device.py
WIDGETS = dict(iterations=60, lr_means=1.6e-4, lr_planes=0.05, lambda_dssim=0.2, lambda_tv=2e-4, max_gaussians=2000,
               prune_opacity=0.015, sh_degree=1)
RUN = dict(checkpoint_every=25, resume=True, render_time=0.5, orbit_frames=3)


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = 2e-2) -> None:
    """a and b agree to ``rel`` of b's largest magnitude (CUDA and CPU kernels differ in the last bits)."""
    a, b = a.float().cpu(), b.float().cpu()
    assert torch.isfinite(a).all() and float((a - b).abs().max()) <= rel * float(b.abs().max()), \
        float((a - b).abs().max())


def test_the_fit_runs_on_cuda_with_gsplat(tmp_path, monkeypatch):
    from comfyui_full4d.gaussians import pipeline

    rmod = importlib.import_module("comfyui_full4d.gaussians.rasterize")  # (the package exports the function)
    cap = make_capture(3, 2, 48, 80)
    geometry = cap.geometry()
    calls = []
    real = rmod._rasterize_gsplat
    monkeypatch.setattr(rmod, "_rasterize_gsplat", lambda *a, **k: calls.append(1) or real(*a, **k))
    rec, cfg = DeviceRecorder(), pipeline.node_fit_config(**WIDGETS)
    with rec:
        scene, orbit, rep = pipeline.fit_from_grid(cap.view_major, cap.rig, cfg, geometry, device=torch.device("cuda"),
                                                   checkpoint_path=str(tmp_path / "g.safetensors"), **RUN)
    assert rec.factories == [] and {w for w in rec.to_cpu if w[1] not in ONE_OFF_CPU} == set()
    assert scene.device.type == "cuda" and orbit.device.type == "cuda" and len(calls) >= WIDGETS["iterations"]
    _, _, cpu_rep = pipeline.fit_from_grid(cap.view_major, cap.rig, cfg, geometry, device=torch.device("cpu"),
                                           checkpoint_path=str(tmp_path / "c.safetensors"), **RUN)
    assert rep.psnr > cpu_rep.psnr - 1.5, (rep.psnr, cpu_rep.psnr)


@pytest.mark.parametrize("first, second", [("cuda", "cpu"), ("cpu", "cuda")])
def test_a_fit_interrupted_on_one_device_resumes_on_the_other(first, second, tmp_path):
    from comfyui_full4d.gaussians import DensifyConfig, FitConfig, backproject_views, fit_4dgs

    cap = make_capture(3, 2, 24, 40)
    cams = cap.metric_cameras
    pts, cols = backproject_views(cap.depth[:, 0], cap.views[:, 0], cams, max_points=400)
    cfg = FitConfig(iterations=12, sh_degree=1, densify=DensifyConfig(start=4, stop=10, interval=4, max_gaussians=600))
    ck, args = str(tmp_path / "fit.safetensors"), (cap.views, cams, cap.times, cfg, pts, cols)
    with pytest.raises(KeyboardInterrupt):
        fit_4dgs(*args, on_step=interrupted_at(7), checkpoint_path=ck, checkpoint_every=5, device=first)
    scene, stats = fit_4dgs(*args, checkpoint_path=ck, checkpoint_every=5, device=second)
    assert stats.resumed_from == 5 and scene.device.type == second
    assert all(bool(torch.isfinite(v).all()) for v in scene.gaussians.as_dict().values())


def _load_wan_on(device: str, monkeypatch):
    import comfy.model_management as mm

    from fixtures.wan import load_tiny_wan

    with monkeypatch.context() as m:
        m.setattr(mm, "get_torch_device", lambda: torch.device(device))
        return load_tiny_wan()


@GPU_HOST
def test_the_sampler_on_cuda_gives_the_cpu_latents(comfy_host, monkeypatch):
    from comfyui_full4d.host.patch import load_full4d
    from comfyui_full4d.host.sampling import sample_rig
    from fixtures.wan import random_rig_inputs

    rig, src, proj, pos, neg, _ = random_rig_inputs(3, 2, 4, 6)
    args = dict(seed=7, steps=3, cfg=5.0, shift=5.0, sampler_name="euler", scheduler="simple")
    out = {}
    for dev in ("cuda", "cpu"):
        model = load_full4d(_load_wan_on(dev, monkeypatch), "none (zero-init)")
        assert model.load_device.type == dev
        out[dev] = sample_rig(model, pos, neg, {"samples": src}, {"samples": proj}, rig, **args)["samples"]
    _close(out["cuda"], out["cpu"])


@GPU_HOST
def test_the_training_free_sampler_on_cuda_gives_the_cpu_latents(comfy_host, monkeypatch):
    from comfyui_full4d.host.training_free import sample_training_free
    from comfyui_full4d.diffusion.training_free import TrainingFreeConfig
    from fixtures.wan import random_rig_inputs

    rig, src, proj, pos, neg, g = random_rig_inputs(3, 2, 4, 6)
    known = torch.rand(2, 1, 2, 4, 6, generator=g)
    args = dict(seed=7, steps=3, cfg=5.0, shift=5.0, sampler_name="euler", scheduler="simple",
                config=TrainingFreeConfig(cross_view=True))
    out = {dev: sample_training_free(_load_wan_on(dev, monkeypatch), pos, neg, src, proj, known, **args)
           for dev in ("cuda", "cpu")}
    _close(out["cuda"], out["cpu"])


@GPU_HOST
def test_fmd_with_the_teacher_on_the_gpu(comfy_host, monkeypatch):
    from comfyui_full4d.gaussians import FitConfig, backproject_views, fit_4dgs
    from comfyui_full4d.host.fmd import host_fmd
    from comfyui_full4d.host.patch import load_full4d
    from fixtures.wan import tiny_wan_vae

    cap = make_capture(num_views=3, num_frames=5, height=32, width=48)
    vae, model = tiny_wan_vae(), load_full4d(_load_wan_on("cuda", monkeypatch), "none (zero-init)")
    positive = [[torch.randn(1, 7, 4096, generator=torch.Generator().manual_seed(0)), {}]]
    cfg = host_fmd(model, vae, positive, vae.encode(cap.source), cap.source, cap.geometry(), cap.rig.cameras[0],
                   device="cuda", every=2)
    calls = []
    velocity = cfg.velocity_fn
    cfg = replace(cfg, velocity_fn=lambda z, tau, cam: calls.append(z.device) or velocity(z, tau, cam))
    cams = cap.metric_cameras
    pts, cols = backproject_views(cap.depth[:, 0], cap.views[:, 0], cams, max_points=800)
    scene, stats = fit_4dgs(cap.views, cams, cap.times, FitConfig(iterations=4, sh_degree=0, lambda_fmd=0.5), pts,
                            cols, fmd=cfg, device="cuda")
    assert len(calls) == 2 and scene.device.type == "cuda" and model.load_device.type == "cuda"
    assert stats.skipped == 0 and all(bool(torch.isfinite(v).all()) for v in scene.gaussians.as_dict().values())
