"""Method fidelity of the 4DGS fit (SPEC 6, 8; issue 22): each rule checked against an independent reference,
so that breaking it fails a test (``scripts/mutations.py`` breaks each one on purpose).

References: the SH / learning-rate schedules written out from their definitions (3DGS, 4D-GS) and read off
the running fit; HexPlane planes with known texel values sampled at the time range's ends; the NDC
gradient of a hand-written projection ``ndc = 2 (f X / Z + c) / W - 1``; ``interpolate_rig``'s poses; a
fit's plane TV with and without the regulariser."""

from __future__ import annotations

import math

import pytest
import torch

from comfyui_full4d.gaussians import DensifyConfig, FitConfig, HexPlaneConfig, fit_4dgs
from comfyui_full4d.gaussians import fit as fit_mod

SMALL_HEX = HexPlaneConfig(feature_dim=4, base_res=8, time_res=2, multires=(1,), hidden=16)
NO_DENSIFY = DensifyConfig(start=10**6, stop=10**6 + 1)


def _fit(tiny, **kw):
    cap, cams, pts, cols = tiny
    base = dict(iterations=6, sh_degree=1, hexplane=SMALL_HEX, densify=NO_DENSIFY)
    return fit_4dgs(cap.views, cams, cap.times, FitConfig(**{**base, **kw}), pts, cols)


def test_sh_degree_rises_every_sh_increase_every_iterations(tiny, monkeypatch):
    """3DGS: the SH degree used at iteration ``it`` (1-based) is ``min(sh_degree, (it - 1) // every)``."""
    seen = []
    real = fit_mod.render_scene

    def spy(scene, camera, time, background=None, sh_degree=None):
        seen.append(sh_degree)
        return real(scene, camera, time, background, sh_degree)

    monkeypatch.setattr(fit_mod, "render_scene", spy)
    _fit(tiny, iterations=10, sh_degree=2, sh_increase_every=3)
    assert seen == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]


def test_tv_regulariser_smooths_the_planes(tiny):
    """SPEC 6: the loss has a total-variation term on the planes; with a large weight the planes' TV falls
    well below the unregularised fit's (same seed, same steps)."""
    kw = dict(iterations=15, lr_planes=0.05)
    with_tv, _ = _fit(tiny, lambda_tv=1.0, **kw)
    without, _ = _fit(tiny, lambda_tv=0.0, **kw)
    a, b = float(with_tv.hexplane.tv_loss()), float(without.hexplane.tv_loss())
    assert a < 0.5 * b, (a, b)


def _planes_with_time_profile(scene, values: torch.Tensor) -> None:
    """Spatial planes 1; each time plane (a, t) holds ``values[j]`` in every texel of time row j."""
    with torch.no_grad():
        for p, (_, b) in zip(scene.hexplane.planes, [(0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3)]):
            p.fill_(1.0)
            if b == 3:
                p.copy_(values.view(1, 1, -1, 1).expand_as(p))


def test_time_range_ends_are_the_grid_edges(tiny):
    """4D-GS: HexPlane time coordinates are in [-1, 1] over the scene's time range, so rendering at the
    range's ends samples the planes' first and last time rows exactly (and the middle their average)."""
    cap, cams, pts, cols = tiny
    scene, _ = fit_4dgs(cap.views, cams, 2.0 + 3.0 * cap.times, FitConfig(iterations=1, hexplane=SMALL_HEX,
                                                                        densify=NO_DENSIFY), pts, cols)
    assert scene.time_range == (2.0, 5.0)  # the frames' own range
    vals = torch.tensor([0.3, 1.7])  # time_res = 2
    _planes_with_time_profile(scene, vals)
    xyz = torch.zeros(4, 3)
    for time, expect in ((2.0, vals[0] ** 3), (5.0, vals[1] ** 3), (3.5, vals.mean() ** 3)):
        xn, tn = scene.normalise(xyz, time)
        f = scene.hexplane.features(xn, tn)
        torch.testing.assert_close(f, torch.full_like(f, float(expect)), msg=f"time {time}")


def _projection_ndc(means: torch.Tensor, cam) -> torch.Tensor:
    """(N, 2) NDC of the pinhole projection, written out: ndc = 2 (f X / Z + c) / size - 1."""
    x = means @ cam.R.T + cam.t
    u = cam.K[0, 0] * x[:, 0] / x[:, 2] + cam.K[0, 2]
    v = cam.K[1, 1] * x[:, 1] / x[:, 2] + cam.K[1, 2]
    return torch.stack([2 * u / cam.width - 1, 2 * v / cam.height - 1], -1)


def test_view_space_gradient_is_the_ndc_gradient(tiny):
    """3DGS densifies on ``||dL/d ndc||``: for L = sum a_i ndc_x,i + b_i ndc_y,i the fit's view-space gradient
    must be ``sqrt(a_i^2 + b_i^2)`` for every visible Gaussian (pixel or camera-space units differ)."""
    cap, cams, pts, _ = tiny
    cam = cams[1]
    g = torch.Generator().manual_seed(0)
    means = pts[torch.randperm(len(pts), generator=g)[:40]].clone().requires_grad_(True)
    ab = torch.randn(40, 2, generator=g) * 1e-3
    (_projection_ndc(means, cam) * ab).sum().backward()
    gn, vis = fit_mod._view_grad(means, cam)
    assert int(vis.sum()) > 10
    torch.testing.assert_close(gn[vis], ab.norm(dim=-1)[vis], rtol=1e-4, atol=1e-9)


def test_default_threshold_densifies_above_0_0002_ndc():
    """3DGS: clone / split where the mean NDC gradient exceeds 0.0002."""
    from comfyui_full4d.gaussians.densify import DensifyState, densify_step
    from comfyui_full4d.gaussians.init import init_gaussians

    pts = torch.randn(6, 3)
    g = init_gaussians(pts, torch.rand(6, 3), 0, 0.5)
    st = DensifyState(6)
    st.accumulate(torch.tensor([1.9e-4, 2.1e-4, 0.0, 1e-3, 1.5e-4, 3e-4]), torch.ones(6, dtype=torch.bool))
    _, counts = densify_step(g, {}, st, DensifyConfig(), extent=1e6)
    assert counts["cloned"] + counts["split"] == 3 and counts["count"] == 9


def test_fmd_taus_stay_inside_the_range():
    """SPEC 8: tau ~ U[tau_min, tau_max]; over many draws every tau is inside and they fill it."""
    from comfyui_full4d.gaussians import FMDConfig, fmd_loss

    cfg = FMDConfig(encode_fn=lambda f: f, velocity_fn=lambda z, t, c: z)
    assert (cfg.tau_min, cfg.tau_max) == (0.02, 0.98)
    g = torch.Generator().manual_seed(0)
    z = torch.zeros(1, 2)
    taus = [fmd_loss(lambda c: z, lambda f: f, lambda zt, t, c: zt, None, g, tau_range=(0.3, 0.4))[1]["tau"]
            for _ in range(2000)]
    assert 0.3 <= min(taus) < 0.302 and 0.398 < max(taus) <= 0.4


def _fmd_run(tiny, fmd_kw: dict, iterations: int):
    from comfyui_full4d.gaussians import FMDConfig
    from comfyui_full4d.gaussians.fmd import pool_encoder

    cap, cams, pts, cols = tiny
    seen = []

    def teacher(z_tau, tau, cam):
        seen.append((tau, cam))
        return torch.zeros_like(z_tau)

    fmd = FMDConfig(encode_fn=pool_encoder(8), velocity_fn=teacher, **fmd_kw)
    fit_4dgs(cap.views, cams, cap.times, FitConfig(iterations=iterations, sh_degree=1, hexplane=SMALL_HEX,
                                                   densify=NO_DENSIFY, lambda_fmd=0.5), pts, cols, fmd=fmd)
    return seen


def test_fit_draws_fmd_taus_from_the_configured_range(tiny):
    seen = _fmd_run(tiny, dict(tau_min=0.3, tau_max=0.35), 6)
    assert len(seen) == 6 and all(0.3 <= t <= 0.35 for t, _ in seen)


def test_fmd_cameras_are_the_app_b_interpolated_poses(tiny):
    """SPEC 8 / App. B: FMD renders from ``interpolate_rig``'s 120 poses (with the rig's K), not the
    training cameras (only 3 of the 120 are training cameras)."""
    from comfyui_full4d.geometry.rig import interpolate_rig

    cap, cams, _, _ = tiny
    R, t = interpolate_rig(cams.R, cams.t, 120)
    seen = _fmd_run(tiny, {}, 8)
    hits = []
    for _, cam in seen:
        i = int((t - cam.t).norm(dim=-1).argmin())
        torch.testing.assert_close(cam.t, t[i], rtol=0, atol=1e-5)
        torch.testing.assert_close(cam.R, R[i], rtol=0, atol=1e-5)
        torch.testing.assert_close(cam.K, cams.K[0], rtol=0, atol=0)
        hits.append(i)
    training = {int((t - ct).norm(dim=-1).argmin()) for ct in cams.t}
    assert len(set(hits) - training) >= 4, hits


def test_learning_rate_schedules(tiny, monkeypatch):
    """3DGS: means LR ``extent * lr0 * (lr_final / lr0)^(it / N)``; sh_rest at lr_sh / 20; 4D-GS style decay
    of the planes and the MLP to 0.1x over the fit."""
    cap, cams, _, _ = tiny
    seen = []
    real = fit_mod._set_lrs

    def spy(opts, hopt, cfg, extent, it):
        real(opts, hopt, cfg, extent, it)
        seen.append((it, opts["means"].param_groups[0]["lr"], opts["sh_rest"].param_groups[0]["lr"],
                     hopt.param_groups[0]["lr"], hopt.param_groups[1]["lr"]))

    monkeypatch.setattr(fit_mod, "_set_lrs", spy)
    N = 8
    _fit(tiny, iterations=N, lr_means=1e-3, lr_means_final=1e-5, lr_sh=4e-3, lr_planes=0.02, lr_mlp=2e-3)
    c = cams.center
    extent = 1.1 * float((c - c.mean(0)).norm(dim=-1).max())
    assert [s[0] for s in seen] == list(range(1, N + 1))
    for it, lr_m, lr_rest, lr_p, lr_mlp in seen:
        f = it / N
        assert lr_m == pytest.approx(extent * 1e-3 * math.exp(f * math.log(1e-2)), rel=1e-6)
        assert lr_rest == pytest.approx(4e-3 / 20)
        assert lr_p == pytest.approx(0.02 * 0.1**f, rel=1e-6) and lr_mlp == pytest.approx(2e-3 * 0.1**f, rel=1e-6)


def test_node_path_budget(tiny, comfy_host, monkeypatch):
    """Full4DFit4DGS (SPEC 6 budget on the node path): init points at most 60% of max_gaussians, prune at
    prune_opacity above 2/3 of max_gaussians, never above max_gaussians, densification over the first 2/3 of
    the iterations. Read off the config and points the node hands to the fit."""
    from comfyui_full4d.gaussians import pipeline

    cap = tiny[0]
    seen = {}

    class Stop(Exception):
        pass

    def spy(views, cameras, times, config, points, colours, **kw):
        seen.update(config=config, points=points)
        raise Stop

    monkeypatch.setattr(pipeline, "fit_4dgs", spy)
    kw = dict(images=cap.view_major, rig=cap.rig, geometry=cap.geometry(), iterations=300, lr_means=1.6e-4,
              lr_planes=0.05, lambda_dssim=0.2, lambda_tv=2e-4, max_gaussians=900, prune_opacity=0.02, sh_degree=1,
              checkpoint_every=1000, resume=False, render_time=0.0, orbit_frames=1)
    with pytest.raises(Stop):
        comfy_host.node("Full4DFit4DGS").execute(**kw)
    d = seen["config"].densify
    assert (d.max_gaussians, d.prune_above, d.prune_opacity, d.stop) == (900, 600, 0.02, 200)
    assert 0.5 * 540 < len(seen["points"]) <= 540


def test_orbit_render_is_the_app_b_trajectory(tiny, monkeypatch):
    """render_rig(orbit): frame i is ``interpolate_rig``'s pose i of the rig (metric by the scene's scale) at
    time ``t0 + s_i (t1 - t0)`` with s sweeping time_start -> time_end."""
    from comfyui_full4d.gaussians import pipeline
    from comfyui_full4d.geometry.rig import interpolate_rig

    cap, cams, _, _ = tiny
    scene, _ = fit_4dgs(cap.views, cams, 2.0 + 3.0 * cap.times, FitConfig(iterations=1, hexplane=SMALL_HEX,
                                                                        densify=NO_DENSIFY), *tiny[2:])
    scene.extras["scale"] = cap.scale
    seen = []
    monkeypatch.setattr(pipeline, "render_scene", lambda sc, cam, t: (seen.append((cam, t)) or torch.zeros(1, 1, 3),))
    pipeline.render_rig(scene, cap.rig, True, 5, 0.25, 0.75)
    R, t = interpolate_rig(cap.rig.cameras.R, cap.rig.cameras.t, 5)
    assert len(seen) == 5
    for i, (cam, time) in enumerate(seen):
        torch.testing.assert_close(cam.R, R[i], rtol=0, atol=1e-5)
        torch.testing.assert_close(cam.t, t[i] * cap.scale, rtol=0, atol=1e-5 * cap.scale)
        assert time == pytest.approx(2.0 + 3.0 * (0.25 + 0.5 * i / 4))
