"""fit_4dgs: input errors, interrupt -> resumable checkpoint, resume continues from its iteration (and matches
an uninterrupted fit), NaN keeps the last good checkpoint; slow: PSNR on training and held-out cameras."""

import os

import pytest
import torch

from comfyui_full4d.gaussians import DensifyConfig, FitConfig, HexPlaneConfig, backproject_views, fit_4dgs
from comfyui_full4d.gaussians import fit as fit_mod
from comfyui_full4d.synthetic import make_capture

# slow fit test (issue 6): 6 views x 9 frames at 96x160, a CI-affordable iteration budget, the FitConfig
# default learning rates; training-view PSNR must reach 28 dB (measured 29.7 dB; held-out 13.3 dB)
FIT_ITERS = 1000
FIT_MIN_PSNR = 28.0
HELD_OUT_SANITY_PSNR = 8.0  # held-out PSNR is reported; this floor only catches a broken (blank) render
SMALL_HEX = HexPlaneConfig(feature_dim=4, base_res=8, time_res=2, multires=(1,), hidden=16)


@pytest.fixture(scope="module")
def tiny():
    cap = make_capture(3, 2, 24, 40)
    cams = cap.metric_cameras
    pts, cols = backproject_views(cap.depth[:, 0], cap.views[:, 0], cams, max_points=400)
    return cap, cams, pts, cols


def _cfg(iters=12):
    return FitConfig(iterations=iters, sh_degree=1, sh_increase_every=5, hexplane=SMALL_HEX,
                     densify=DensifyConfig(start=4, stop=10, interval=4, grad_threshold=1e-6, max_gaussians=600))


def test_input_errors(tiny):
    cap, cams, pts, cols = tiny
    with pytest.raises(ValueError, match="rig has 2 cameras"):
        fit_4dgs(cap.views, cams[:2], cap.times, _cfg(), pts, cols)
    with pytest.raises(ValueError, match="empty"):
        fit_4dgs(cap.views, cams, cap.times, _cfg(), pts[:0], cols[:0])
    with pytest.raises(ValueError, match="views are 20x24"):
        fit_4dgs(cap.views[:, :, :, :20], cams, cap.times, _cfg(), pts, cols)
    with pytest.raises(ValueError, match="iterations"):
        FitConfig(iterations=0)


def test_interrupt_resume_matches_uninterrupted(tiny, tmp_path):
    cap, cams, pts, cols = tiny
    ref, ref_stats = fit_4dgs(cap.views, cams, cap.times, _cfg(), pts, cols)
    assert ref_stats.count > len(pts)  # densification ran (clone/split with a tiny threshold)
    ck = str(tmp_path / "fit.safetensors")

    def stop_at_7(done, total):
        if done == 7:
            raise KeyboardInterrupt("user cancel")

    with pytest.raises(KeyboardInterrupt):
        fit_4dgs(cap.views, cams, cap.times, _cfg(), pts, cols, on_step=stop_at_7, checkpoint_path=ck,
                 checkpoint_every=5)
    assert os.path.exists(ck) and not [p for p in os.listdir(tmp_path) if ".tmp" in p]
    seen = []
    scene, stats = fit_4dgs(cap.views, cams, cap.times, _cfg(), pts, cols, on_step=lambda d, t: seen.append(d),
                            checkpoint_path=ck, checkpoint_every=5)
    assert stats.resumed_from == 5 and seen[0] == 6 and seen[-1] == 12
    assert len(scene) == len(ref)
    for k, v in ref.gaussians.as_dict().items():
        torch.testing.assert_close(getattr(scene.gaussians, k), v, rtol=1e-4, atol=1e-5)
    # a finished checkpoint resumes to the end immediately; another fit's checkpoint is refused
    seen.clear()
    fit_4dgs(cap.views, cams, cap.times, _cfg(), pts, cols, on_step=lambda d, t: seen.append(d), checkpoint_path=ck)
    assert seen == []
    with pytest.raises(ValueError, match="another fit"):
        fit_4dgs(cap.views * 0.5, cams, cap.times, _cfg(), pts, cols, checkpoint_path=ck)


def test_nan_keeps_last_good_checkpoint(tiny, tmp_path, monkeypatch):
    cap, cams, pts, cols = tiny
    ck = str(tmp_path / "fit.safetensors")
    real, calls = fit_mod.photometric_loss, {"n": 0}

    def poisoned(*a, **k):
        calls["n"] += 1
        out = real(*a, **k)
        return out * float("nan") if calls["n"] == 8 else out

    monkeypatch.setattr(fit_mod, "photometric_loss", poisoned)
    with pytest.raises(RuntimeError, match="iteration 8.*last good checkpoint"):
        fit_4dgs(cap.views, cams, cap.times, _cfg(), pts, cols, checkpoint_path=ck, checkpoint_every=5)
    from safetensors import safe_open

    with safe_open(ck, "pt") as f:
        assert f.metadata()["iteration"] == "5"
        assert all(torch.isfinite(f.get_tensor(k)).all() for k in f.keys() if k.startswith("g."))
    monkeypatch.setattr(fit_mod, "photometric_loss", real)
    _, stats = fit_4dgs(cap.views, cams, cap.times, _cfg(), pts, cols, checkpoint_path=ck)
    assert stats.resumed_from == 5 and stats.iteration == 12


@pytest.mark.slow  # ~20-50 s on the shared CPU (host start + fit + renders)
def test_nodes_fit_render_save(comfy_host, tiny):
    cap, cams, pts, cols = tiny
    fit = comfy_host.node("Full4DFit4DGS")
    kw = dict(images=cap.view_major, rig=cap.rig, geometry=cap.geometry(), iterations=6, lr_means=1.6e-4,
              lr_planes=1.6e-3, lambda_dssim=0.2, lambda_tv=2e-4, max_gaussians=5000, prune_opacity=0.015,
              sh_degree=1, checkpoint_every=3, resume=True, render_time=0.5, orbit_frames=4)
    ckpt_dir = comfy_host.base / "temp" / "full4d_4dgs"
    before = set(ckpt_dir.glob("*.safetensors"))  # the session's host may hold other tests' checkpoints
    scene, orbit = fit.execute(**kw).result
    assert orbit.shape == (4, 24, 40, 3) and bool(torch.isfinite(orbit).all())
    assert scene.extras["scale"] == pytest.approx(cap.scale)
    assert len(set(ckpt_dir.glob("*.safetensors")) - before) == 1
    with pytest.raises(ValueError, match="view-major grid"):
        fit.execute(**{**kw, "images": cap.view_major[:-1]})
    # the rig grid render reproduces render_scene at the fitted cameras
    render = comfy_host.node("Full4DRender4DGS")
    (grid,) = render.execute(scene4d=scene, rig=cap.rig, mode="rig grid", num_frames=2, time_start=0.0,
                             time_end=1.0).result
    assert grid.shape == (3 * 2, 24, 40, 3)
    from comfyui_full4d.gaussians import render_scene

    ref, _, _ = render_scene(scene, cams[1], 1.0)
    torch.testing.assert_close(grid[3], ref.clamp(0, 1))
    save = comfy_host.node("Full4DSave4DGS")
    out = save.execute(scene4d=scene, filename_prefix="full4d/t", num_frames=3)
    files = out.ui.as_dict()["text"][0].split("\n")
    assert len(files) == 4 and files[-1].endswith("scene4d.safetensors")
    from comfyui_full4d.gaussians.export import load_scene4d

    back = load_scene4d(str(comfy_host.output_dir / files[-1]))
    assert torch.equal(back.gaussians.means, scene.gaussians.means) and back.extras["scale"] == scene.extras["scale"]
    with pytest.raises(ValueError, match="filename_prefix"):
        save.execute(scene4d=scene, filename_prefix="../escape", num_frames=1)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # ~4-7 min on 2 idle cores; the suite-wide 900 s is too tight on a loaded machine
def test_fit_reaches_psnr_on_synthetic_capture():
    """6 views x 9 frames at 96x160, initialised from the ground-truth frame-0 depth of all views. Training-view
    PSNR must reach FIT_MIN_PSNR; held-out interpolated cameras (ray-cast ground truth) are reported, with a
    loose floor (the rig's 60-degree gaps leave parts of the scene unseen)."""
    from comfyui_full4d.cameras import Camera
    from comfyui_full4d.gaussians import render_scene
    from comfyui_full4d.metrics import psnr
    from comfyui_full4d.rig import interpolate_rig
    from comfyui_full4d.synthetic import make_scene, render

    torch.manual_seed(0)
    V, T, H, W = 6, 9, 96, 160
    cap = make_capture(V, T, H, W)
    cams = cap.metric_cameras
    pts, cols = backproject_views(cap.depth[:, 0], cap.views[:, 0], cams, max_points=30_000)
    cfg = FitConfig(iterations=FIT_ITERS, sh_degree=0, init_opacity=0.5,
                    densify=DensifyConfig(start=50, stop=FIT_ITERS // 2, interval=50, max_gaussians=30_000),
                    hexplane=HexPlaneConfig(feature_dim=8, base_res=32, time_res=T, multires=(1, 2), hidden=32))
    scene, stats = fit_4dgs(cap.views, cams, cap.times, cfg, pts, cols)
    with torch.no_grad():
        train = [psnr(render_scene(scene, cams[v], float(t))[0].clamp(0, 1), cap.views[v, f])
                 for v in range(V) for f, t in enumerate(cap.times)]
        R, tr = interpolate_rig(cams.R, cams.t, 12)
        held = Camera(K=cams.K[0].expand(3, 3, 3), R=R[[1, 5, 9]], t=tr[[1, 5, 9]], width=W, height=H)
        times = cap.times[[0, T // 2, T - 1]]
        gt, _ = render(make_scene(0), held, times)
        held_psnr = [psnr(render_scene(scene, held[b], float(t))[0].clamp(0, 1), gt[b, f])
                     for b in range(3) for f, t in enumerate(times)]
    mean_train, mean_held = sum(train) / len(train), sum(held_psnr) / len(held_psnr)
    print(f"4DGS fit: train PSNR {mean_train:.2f} dB, held-out PSNR {mean_held:.2f} dB, {stats.count} Gaussians")
    assert stats.count <= 30_000
    assert mean_train >= FIT_MIN_PSNR
    assert mean_held >= HELD_OUT_SANITY_PSNR


def test_fit_with_fmd_uses_interpolated_cameras(tiny):
    from comfyui_full4d.gaussians import FMDConfig
    from comfyui_full4d.gaussians.fmd import pool_encoder
    from comfyui_full4d.rig import interpolate_rig

    cap, cams, pts, cols = tiny
    seen = []

    def teacher(z_tau, tau, cam):
        seen.append((z_tau.shape, cam.t.clone()))
        return torch.zeros_like(z_tau)

    fmd = FMDConfig(encode_fn=pool_encoder(8), velocity_fn=teacher, every=2)
    cfg = FitConfig(**{**_cfg(4).__dict__, "lambda_fmd": 0.5})
    fit_4dgs(cap.views, cams, cap.times, cfg, pts, cols, fmd=fmd)
    assert len(seen) == 2  # iterations 2 and 4
    _, t = interpolate_rig(cams.R, cams.t, 120)
    for shape, cam_t in seen:
        assert shape == (2, 3, 3, 5)  # (T, C, H/8, W/8)
        assert float((t - cam_t).norm(dim=-1).min()) < 1e-5
    with pytest.raises(ValueError, match="lambda_fmd"):
        fit_4dgs(cap.views, cams, cap.times, _cfg(2), pts, cols, fmd=fmd)
