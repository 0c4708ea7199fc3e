"""fit_4dgs: input errors, interrupt -> resumable checkpoint, resume continues from its iteration (and matches
an uninterrupted fit), guard rails (a non-finite step is skipped, a diverged parameter rolled back, persistent
NaN stops with the last good checkpoint). The fit's quality is judged on the node's own path in
tests/test_fit_node.py."""

import os

import pytest
import torch

from comfyui_full4d.gaussians import DensifyConfig, FitConfig, HexPlaneConfig, fit_4dgs
from comfyui_full4d.gaussians import fit as fit_mod
from comfyui_full4d.media.synthetic import make_capture

SMALL_HEX = HexPlaneConfig(feature_dim=4, base_res=8, time_res=2, multires=(1,), hidden=16)


def _cfg(iters=12):
    return FitConfig(iterations=iters, sh_degree=1, sh_increase_every=5, hexplane=SMALL_HEX,
                     densify=DensifyConfig(start=4, stop=10, interval=4, grad_threshold=1e-6, max_gaussians=600))


@pytest.mark.parametrize("mode, all_covered", [("auto", True), ("source: depth of frame 0", False)])
def test_auto_init_fuses_every_views_points(mode, all_covered):
    """SPEC 6: the node's default init fuses the point clouds of all views, so every pixel of every training
    view starts covered (the source view's depth alone leaves most of the other views empty)."""
    from comfyui_full4d.gaussians.pipeline import INIT_VIEWS_GT, init_points

    V, H, W = 4, 24, 32
    cap = make_capture(V, 3, H, W)
    pts, _, used, _, _ = init_points(cap.view_major.reshape(V, 3, H, W, 3), cap.rig, cap.geometry(), cap.scale, mode)
    assert (used == INIT_VIEWS_GT) == all_covered
    cams = cap.rig.metric(cap.scale)
    for v in range(V):
        x = pts @ cams.R[v].T + cams.t[v]
        uv = x @ cams.K[v].T
        u, w = (uv[:, 0] / uv[:, 2]).floor().long(), (uv[:, 1] / uv[:, 2]).floor().long()
        ok = (x[:, 2] > 0) & (u >= 0) & (u < W) & (w >= 0) & (w < H)
        covered = len(torch.unique(w[ok] * W + u[ok])) / (H * W)
        assert (covered > 0.99) == (all_covered or v == 0), (v, covered)


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


def _poison_loss(monkeypatch, bad_calls):
    real, calls = fit_mod.photometric_loss, {"n": 0}

    def poisoned(*a, **k):
        calls["n"] += 1
        out = real(*a, **k)
        return out * float("nan") if bad_calls(calls["n"]) else out

    monkeypatch.setattr(fit_mod, "photometric_loss", poisoned)
    return real


def _all_finite(scene) -> bool:
    tensors = list(scene.gaussians.as_dict().values()) + list(scene.hexplane.parameters())
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def test_a_non_finite_step_is_skipped(tiny, monkeypatch):
    cap, cams, pts, cols = tiny
    _poison_loss(monkeypatch, lambda n: n == 8)
    scene, stats = fit_4dgs(cap.views, cams, cap.times, _cfg(), pts, cols)
    assert stats.skipped == 1 and stats.iteration == 12 and _all_finite(scene)


def test_persistent_nan_stops_and_keeps_the_last_good_checkpoint(tiny, tmp_path, monkeypatch):
    cap, cams, pts, cols = tiny
    ck = str(tmp_path / "fit.safetensors")
    real = _poison_loss(monkeypatch, lambda n: n >= 8)
    cfg = FitConfig(**{**_cfg().__dict__, "max_bad_steps": 3})
    with pytest.raises(RuntimeError, match="3 steps in a row.*iteration 10.*last good checkpoint"):
        fit_4dgs(cap.views, cams, cap.times, cfg, pts, cols, checkpoint_path=ck, checkpoint_every=5)
    from safetensors import safe_open

    with safe_open(ck, "pt") as f:
        assert f.metadata()["iteration"] == "5"
        assert all(torch.isfinite(f.get_tensor(k)).all() for k in f.keys() if k.startswith("g."))
    monkeypatch.setattr(fit_mod, "photometric_loss", real)
    _, stats = fit_4dgs(cap.views, cams, cap.times, cfg, pts, cols, checkpoint_path=ck)
    assert stats.resumed_from == 5 and stats.iteration == 12


def test_a_diverged_parameter_is_rolled_back(tiny, monkeypatch):
    """A step that leaves a non-finite parameter (here: an Adam step that writes inf into the log-scales and
    NaN into a plane) returns the fit to its last finite snapshot; every render sees finite parameters."""
    cap, cams, pts, cols = tiny
    real_render, real_step, seen = fit_mod.render_scene, torch.optim.Adam.step, {"renders": 0, "steps": 0}

    def checked_render(scene, *a, **k):
        seen["renders"] += 1
        assert _all_finite(scene), f"render {seen['renders']} saw a non-finite parameter"
        return real_render(scene, *a, **k)

    def diverging_step(self, *a, **k):
        out = real_step(self, *a, **k)
        seen["steps"] += 1
        if 60 <= seen["steps"] < 62:  # iteration 9 (7 Adam steps per iteration)
            for group in self.param_groups:
                for p in group["params"]:
                    p.data.view(-1)[0] = float("inf") if p.dim() == 2 and p.shape[-1] == 3 else float("nan")
        return out

    monkeypatch.setattr(fit_mod, "render_scene", checked_render)
    monkeypatch.setattr(torch.optim.Adam, "step", diverging_step)
    scene, stats = fit_4dgs(cap.views, cams, cap.times, _cfg(), pts, cols)
    assert stats.restored >= 1 and stats.iteration == 12 and _all_finite(scene)


def test_absurd_learning_rates_never_give_non_finite_parameters(tiny, monkeypatch):
    """Learning rates 10^3-10^4 times the defaults: every render sees finite parameters and the log-scales stay
    within the guard's bounds; the fit either finishes or stops with the clear RuntimeError."""
    from comfyui_full4d.gaussians.guard import scale_bounds

    cap, cams, pts, cols = tiny
    real_render, worst = fit_mod.render_scene, {"log_scale": -1e9}

    def checked_render(scene, *a, **k):
        assert _all_finite(scene)
        worst["log_scale"] = max(worst["log_scale"], float(scene.gaussians.log_scales.detach().max()))
        return real_render(scene, *a, **k)

    monkeypatch.setattr(fit_mod, "render_scene", checked_render)
    cfg = FitConfig(**{**_cfg(30).__dict__, "lr_scales": 50.0, "lr_opacity": 50.0, "lr_means": 1.0, "lr_sh": 10.0,
                       "lr_planes": 50.0, "lr_mlp": 10.0})
    try:
        scene, _ = fit_4dgs(cap.views, cams, cap.times, cfg, pts, cols)
        assert _all_finite(scene)
    except RuntimeError as e:
        assert "steps in a row" in str(e)
    assert worst["log_scale"] <= scale_bounds(pts, fit_mod.camera_extent(cams))[1] + 1e-6


@pytest.mark.slow  # ~20-50 s on the shared CPU (host start + fit + renders)
def test_nodes_fit_render_save(comfy_host, tiny):
    cap, cams, pts, cols = tiny
    fit = comfy_host.node("Full4DFit4DGS")
    kw = dict(images=cap.view_major, rig=cap.rig, geometry=cap.geometry(), iterations=6, lr_means=1.6e-4,
              lr_planes=1.6e-3, lambda_dssim=0.2, lambda_tv=2e-4, max_gaussians=5000, prune_opacity=0.015,
              sh_degree=1, checkpoint_every=3, resume=True, render_time=0.5, orbit_frames=4)
    ckpt_dir = comfy_host.base / "temp" / "full4d_4dgs"
    before = set(ckpt_dir.glob("*.safetensors"))  # the session's host may hold other tests' checkpoints
    scene, orbit, node_psnr = fit.execute(**kw).result
    assert node_psnr == node_psnr  # a number (the fit reports its training-view PSNR)
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


def test_fit_with_fmd_uses_interpolated_cameras(tiny):
    from comfyui_full4d.gaussians import FMDConfig
    from comfyui_full4d.gaussians.fmd import pool_encoder
    from comfyui_full4d.geometry.rig import interpolate_rig

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
