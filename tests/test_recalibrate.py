"""Re-calibration of the rig from DA3 (SPEC 6: "re-calibrate scale and pose by aligning DA3's estimates to the
rig"; ``view_depth.recalibrate``, node input ``recalibrate`` of Full4DFit4DGS).

Reference: views rendered by the synthetic scene from *perturbed* cameras (the generated views drifted from the
requested rig: moved, turned, one zoomed), and the stand-in DA3 (tests/fixtures/da3_standin.py) returning those
cameras' exact depth and poses in a random frame with a wrong common focal factor. The re-calibrated cameras
must be the perturbed ones, and a fit on them must explain the views better than a fit on the rig."""

from __future__ import annotations

import math

import pytest
import torch

from comfyui_full4d.geometry.cameras import Camera
from comfyui_full4d.geometry.depth import DA3Model
from comfyui_full4d.geometry.source import Geometry
from comfyui_full4d.gaussians.losses import psnr
from comfyui_full4d.media.synthetic import make_capture, make_scene, render
from comfyui_full4d.geometry.view_depth import AlignInfo, estimate_view_depth, recalibrate
from fixtures.da3_standin import StandInDA3

H, W = 28, 42  # DA3's input size at process_res=42 is the frame size


def _turn(deg: float, axis: int) -> torch.Tensor:
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    i, j = [k for k in range(3) if k != axis]
    R = torch.eye(3)
    R[i, i], R[i, j], R[j, i], R[j, j] = c, -s, s, c
    return R


def _angle(A: torch.Tensor, B: torch.Tensor) -> float:
    """Degrees between two rotations (3, 3)."""
    return float(((A @ B.T).diagonal().sum() - 1).div(2).clamp(-1, 1).arccos().rad2deg())


@pytest.fixture(scope="module")
def drift():
    """(capture of the rig, perturbed metric cameras, views and depth rendered from them)."""
    cap = make_capture(num_views=4, num_frames=1, height=H, width=W, seed=0)
    rig = cap.metric_cameras
    R, C, K = rig.R.clone(), rig.center.clone(), rig.K.expand(4, 3, 3).clone()
    R[1] = _turn(8.0, 1) @ R[1]
    C[1] += torch.tensor([0.1, -0.06, 0.04]) * cap.scale
    R[2] = _turn(-6.0, 0) @ R[2]
    C[2] += torch.tensor([-0.12, 0.0, 0.08]) * cap.scale
    K[2, 0, 0] *= 1.08
    K[2, 1, 1] *= 1.08
    R[3] = _turn(5.0, 2) @ R[3]
    true = Camera(K=K, R=R, t=-(R @ C[..., None])[..., 0], width=W, height=H)
    views, depth = render(make_scene(0), true, cap.times)
    return cap, true, views, depth


def _da3(views, depth, true):
    return DA3Model(StandInDA3(views, depth, true, scales=(0.37,)), process_res=max(H, W))


def test_recalibrated_cameras_are_the_cameras_that_took_the_views(drift):
    cap, true, views, depth = drift
    rig = cap.metric_cameras
    _, _, info = estimate_view_depth(_da3(views, depth, true), views, rig, (0,), reference_depth=depth[0, 0],
                                     scale_from_reference=True)
    cams, rec = recalibrate(rig, info)
    assert rec.refined == (False, True, True, True)
    for v in range(1, 4):
        before = float((rig.center[v] - true.center[v]).norm())
        after = float((cams.center[v] - true.center[v]).norm())
        assert after < 0.05 * before + 1e-4 * cap.scale, (v, before, after)
        assert _angle(rig.R[v], true.R[v]) > 2.0 and _angle(cams.R[v], true.R[v]) < 0.05
    torch.testing.assert_close(cams.K[2, 0, 0], true.K[2, 0, 0], rtol=1e-4, atol=0)  # DA3's 1.3x bias cancels
    torch.testing.assert_close(cams.K[1], true.K[1], rtol=1e-4, atol=0)
    assert torch.equal(cams.R[0], rig.R[0]) and torch.equal(cams.t[0], rig.t[0]) and torch.equal(cams.K[0], rig.K[0])
    assert "view 2" in rec.text() and "focal x1.08" in rec.text()


def test_views_whose_da3_pose_disagrees_keep_the_rig(drift):
    """A DA3 estimate far from the rig (here: the anchored poses of a hand-made AlignInfo moved by half the
    rig's size for view 2) is not trusted; the rest are taken; view 0 never moves."""
    cap, true, views, depth = drift
    rig = cap.metric_cameras
    poses = torch.cat([true.R, true.t[..., None]], -1).double()[None].clone()
    spread = float((rig.center - rig.center.mean(0)).pow(2).sum(-1).mean().sqrt())
    poses[0, 2, :, 3] -= poses[0, 2, :, :3] @ torch.tensor([0.5 * spread, 0.0, 0.0], dtype=torch.float64)
    info = AlignInfo(scale=torch.ones(1, 1), rotation=torch.eye(3)[None, None], translation=torch.zeros(1, 1, 3),
                     residual=torch.zeros(1, 1), modes=(("similarity",),), chunks=((0, 1, 2, 3),), poses=poses,
                     focal_ratio=torch.ones(1, 4, 2, dtype=torch.float64))
    cams, rec = recalibrate(rig, info)
    assert rec.refined == (False, True, False, True) and rec.residual[2] > 0.2
    torch.testing.assert_close(cams.t[2], rig.t[2], rtol=0, atol=0)
    torch.testing.assert_close(cams.t[0], rig.t[0], rtol=0, atol=0)
    torch.testing.assert_close(cams.t[1], true.t[1], rtol=1e-5, atol=1e-5)
    assert "kept the rig for view 2" in rec.text()


def _fit_psnr(drift, recalibrate_on: bool, iterations: int = 12) -> tuple[float, float]:
    """Mean PSNR over all views of a fit initialised and trained on the DA3 init's cameras (recalibrated or the
    rig), rendered from the cameras that really took the views."""
    from comfyui_full4d.gaussians import DensifyConfig, FitConfig, HexPlaneConfig, fit_4dgs, render_scene
    from comfyui_full4d.gaussians.pipeline import INIT_VIEWS_DA3, init_points

    cap, true, views, depth = drift
    geo = Geometry.static(depth[0].clone(), true.K[0].clone())
    init = init_points(views, cap.rig, geo, cap.scale, INIT_VIEWS_DA3, _da3(views, depth, true), max_points=2000,
                       recalibrate=recalibrate_on)
    cfg = FitConfig(iterations=iterations, sh_degree=0, background=(0.0, 0.0, 0.0), init_opacity=0.9,
                    hexplane=HexPlaneConfig(feature_dim=4, base_res=8, time_res=2, multires=(1,), hidden=16),
                    densify=DensifyConfig(start=10**6, stop=10**6 + 1))
    on_depth = []  # fraction of the init points within 1% of the true depth where they land in each true view
    for v in range(4):
        x = init.points @ true.R[v].T + true.t[v]
        uv = x @ true.K[v].T
        u, w = (uv[:, 0] / uv[:, 2]).floor().long(), (uv[:, 1] / uv[:, 2]).floor().long()
        ok = (x[:, 2] > 0) & (u >= 0) & (u < W) & (w >= 0) & (w < H)
        d = depth[v, 0][w[ok], u[ok]]
        on_depth.append(float(((x[ok, 2] - d).abs() < 0.01 * d).float().mean()))
    scene, _ = fit_4dgs(views, init.cameras, cap.times, cfg, init.points, init.colours)
    score = sum(psnr(render_scene(scene, true[v], float(t))[0], views[v, f])
                for v in range(4) for f, t in enumerate(cap.times)) / (4 * len(cap.times))
    return min(on_depth), score


def test_refined_fit_beats_the_rig_fit(drift):
    """Views that drifted from the rig: on the re-calibrated cameras the fused init lies on the true surfaces
    (seen from the cameras that took the views) and the fit explains the views better than the rig's."""
    (geo_on, psnr_on), (geo_off, psnr_off) = _fit_psnr(drift, True), _fit_psnr(drift, False)
    print(f"init points on the true surface: {geo_on:.2f} vs {geo_off:.2f}; PSNR {psnr_on:.2f} vs {psnr_off:.2f} dB")
    assert geo_on > 0.3 and geo_off < 0.2 and psnr_on > psnr_off + 0.3, (geo_on, geo_off, psnr_on, psnr_off)


def test_node_option_reports_what_changed(drift, comfy_host):
    """Full4DFit4DGS ``recalibrate`` (default on): the node text lists the re-calibrated views; off: the rig."""
    cap, true, views, depth = drift
    geo = Geometry.static(depth[0].clone(), true.K[0].clone())
    fit = comfy_host.node("Full4DFit4DGS")
    kw = dict(images=views.reshape(-1, H, W, 3), rig=cap.rig, geometry=geo, init="views: DA3 depth", iterations=1,
              lr_means=1.6e-4, lr_planes=0.05, lambda_dssim=0.2, lambda_tv=2e-4, max_gaussians=1000,
              prune_opacity=0.015, sh_degree=0, checkpoint_every=1000, resume=False, render_time=0.0, orbit_frames=1)
    texts = {}
    for on in (None, True, False):
        extra = {} if on is None else {"recalibrate": on}
        texts[on] = fit.execute(**kw, da3_model=_da3(views, depth, true), **extra).ui.as_dict()["text"][0]
    assert "re-calibrated from DA3: view 1 (moved" in texts[True] and "view 2" in texts[True]
    assert texts[None] == texts[True] and "re-calibrated" not in texts[False]


def _mixed_lens_rig() -> Camera:
    """Five metric cameras on a ring about (0, 0, 2) with different lenses: focal 50 (source), 50, 80 (a tele:
    1.6x view 0's), 40, 40 px; each keeps its own principal point."""
    from comfyui_full4d.geometry.cameras import intrinsics_from_fov
    from comfyui_full4d.geometry.rig import ring_rig

    rig = ring_rig(5, intrinsics_from_fov(50, W, H), W, H, radius=1.0, center=(0.0, 0.0, 2.0)).metric(1.0)
    K = torch.zeros(5, 3, 3, dtype=torch.float64)
    for v, (f, cx, cy) in enumerate([(50, 21, 14), (50, 21, 14), (80, 20, 15), (40, 22, 13), (40, 21, 14)]):
        K[v] = torch.tensor([[f, 0, cx], [0, f * 1.02, cy], [0, 0, 1]], dtype=torch.float64)
    return Camera(K=K.float(), R=rig.R, t=rig.t, width=W, height=H)


def test_mixed_lens_rig_focal_from_view0_and_the_20_degree_limit():
    """DA3's anchored estimate (a hand-made AlignInfo) of a rig whose lenses differ: views 1, 2, 4 turned 10 degrees
    about their own centres, view 3 turned 30 degrees. Views within 20 degrees take DA3's pose and a focal of view
    0's rig focal times DA3's ratio to view 0 (fx and fy each by their own ratio; principal point their own): view 2
    (a 1.6x tele that DA3 sees at 1.68x view 0) becomes 84 px, view 4 (DA3: 0.85x) 42.5 px, not the view's own rig
    focal times the ratio (134.4, 34). View 3 (30 degrees) keeps the rig."""
    rig = _mixed_lens_rig()
    R, C = rig.R.double(), rig.center.double()
    turns = {1: (10.0, 1), 2: (10.0, 0), 3: (30.0, 1), 4: (10.0, 2)}  # degrees about an axis of the camera
    R_da3 = R.clone()
    for v, (deg, axis) in turns.items():
        R_da3[v] = _turn(deg, axis).double() @ R[v]
    t_da3 = -(R_da3 @ C[..., None])[..., 0]
    ratio = torch.tensor([[1.0, 1.0], [1.1, 1.08], [1.68, 1.66], [0.8, 0.8], [0.85, 0.86]], dtype=torch.float64)
    info = AlignInfo(scale=torch.ones(1, 1), rotation=torch.eye(3)[None, None], translation=torch.zeros(1, 1, 3),
                     residual=torch.zeros(1, 1), modes=(("similarity",),), chunks=((0, 1, 2, 3, 4),),
                     poses=torch.cat([R_da3, t_da3[..., None]], -1)[None], focal_ratio=ratio[None])
    cams, rec = recalibrate(rig, info)
    assert rec.turned == pytest.approx([0.0, 10.0, 10.0, 30.0, 10.0], abs=1e-4)
    assert rec.refined == (False, True, True, False, True)
    fx0, fy0 = float(rig.K[0, 0, 0]), float(rig.K[0, 1, 1])
    for v in (1, 2, 4):
        assert float(cams.K[v, 0, 0]) == pytest.approx(fx0 * float(ratio[v, 0]), rel=1e-6), v
        assert float(cams.K[v, 1, 1]) == pytest.approx(fy0 * float(ratio[v, 1]), rel=1e-6), v
        torch.testing.assert_close(cams.K[v, :2, 2], rig.K[v, :2, 2], rtol=0, atol=0)
        torch.testing.assert_close(cams.R[v].double(), R_da3[v], rtol=0, atol=1e-6)
        torch.testing.assert_close(cams.center[v].double(), C[v], rtol=0, atol=1e-5)
    assert float(cams.K[2, 0, 0]) == pytest.approx(84.0, rel=1e-6) and rec.focal[2] == pytest.approx(1.05, rel=1e-6)
    for v in (0, 3):
        assert torch.equal(cams.K[v], rig.K[v]) and torch.equal(cams.R[v], rig.R[v])
        assert torch.equal(cams.t[v], rig.t[v])
    assert "kept the rig for view 3" in rec.text()
