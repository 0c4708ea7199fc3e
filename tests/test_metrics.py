"""Metrics against independent computations: analytic noise levels, a hand-written SSIM,
analytic ray-cast depth of a known scene, analytic flicker of synthetic videos."""

import math

import pytest
import torch
import torch.nn.functional as F

from comfyui_full4d.media import metrics
from comfyui_full4d.geometry.cameras import Camera, intrinsics_from_fov, look_at


def test_psnr_of_known_noise_level():
    g = torch.Generator().manual_seed(0)
    target = 0.2 + 0.6 * torch.rand(4, 64, 64, 3, generator=g)
    sigma = 0.01
    pred = target + sigma * torch.randn(target.shape, generator=g)
    assert metrics.psnr(pred, target) == pytest.approx(-20 * math.log10(sigma), abs=0.1)
    assert metrics.psnr(target, target) == metrics.PSNR_CAP
    import kornia
    ref = sum(float(kornia.metrics.psnr(p, t, 1.0)) for p, t in zip(pred, target)) / 4
    assert metrics.psnr(pred, target) == pytest.approx(ref, rel=1e-5)


def _ssim_reference(a, b, win=11, sigma=1.5):
    """Wang et al. 2004 with a Gaussian window, reflect-padded borders, (B, H, W, 3) inputs."""
    x = torch.arange(win, dtype=torch.float64) - win // 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    w = (g[:, None] * g[None, :])[None, None].repeat(3, 1, 1, 1)
    a, b = a.permute(0, 3, 1, 2).double(), b.permute(0, 3, 1, 2).double()

    def blur(z):
        return F.conv2d(F.pad(z, [win // 2] * 4, mode="reflect"), w, groups=3)

    mu_a, mu_b = blur(a), blur(b)
    s_aa, s_bb, s_ab = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2, blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    m = ((2 * mu_a * mu_b + c1) * (2 * s_ab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (s_aa + s_bb + c2))
    return float(m.mean())


def test_ssim_identical_is_one_and_matches_reference():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(2, 32, 40, 3, generator=g)
    assert metrics.ssim(a, a) == pytest.approx(1.0, abs=1e-6)
    b = (a + 0.1 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    val = metrics.ssim(b, a)
    assert 0.0 < val < 0.95
    assert val == pytest.approx(_ssim_reference(b, a), abs=1e-4)
    with pytest.raises(ValueError, match="shape"):
        metrics.ssim(a, a[:, :10])


def _textured(H=96, W=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = F.interpolate(torch.rand(1, 3, H // 8, W // 8, generator=g), size=(H, W), mode="bicubic")
    return img[0].permute(1, 2, 0).clamp(0, 1)


def test_feature_matches_identical_vs_unrelated():
    pytest.importorskip("cv2")
    a = torch.stack([_textured(seed=s) for s in range(2)])
    same = metrics.feature_matches(a, a)
    other = metrics.feature_matches(a, torch.stack([_textured(seed=s) for s in (5, 6)]))
    assert same >= 10
    assert other < 0.3 * same
    # per-view input: (V, T, H, W, 3) with one exact copy and one unrelated view averages the two
    both = metrics.feature_matches(a, torch.stack([a, torch.stack([_textured(seed=s) for s in (5, 6)])]))
    assert both == pytest.approx((same + other) / 2)


def _raycast_depth(cam: Camera):
    """Analytic z-depth (H, W) of a sphere (centre (0,0,3), r 0.8) in front of the plane z = 5."""
    H, W = cam.height, cam.width
    ii, jj = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    pix = torch.stack([jj + 0.5, ii + 0.5, torch.ones(H, W)], -1).double()
    d_cam = pix @ torch.linalg.inv(cam.K.double()).T  # camera rays with z = 1
    d = d_cam @ cam.R.double()  # world directions (not normalised)
    o = cam.center.double()
    c = torch.tensor([0.0, 0.0, 3.0], dtype=torch.float64)
    oc = o - c
    A, B, C = (d * d).sum(-1), 2 * (d * oc).sum(-1), (oc * oc).sum() - 0.8 ** 2
    disc = B * B - 4 * A * C
    s_sphere = torch.where(disc > 0, (-B - disc.clamp(min=0).sqrt()) / (2 * A), torch.full_like(A, float("inf")))
    s_plane = (5.0 - o[2]) / d[..., 2]
    s = torch.minimum(s_sphere, s_plane)  # the ray parameter equals the camera z (camera rays have z = 1)
    X = o + s[..., None] * d  # world points: colour them by position (the same in every view)
    rgb = 0.5 + 0.4 * torch.stack([torch.sin(7 * X[..., 0]), torch.sin(6 * X[..., 1] + 1),
                                   torch.sin(5 * X[..., 2] + 2 * X[..., 0])], -1)
    return s.float(), rgb.float()


def _ring(angles_deg, R_jitter_deg=0.0):
    K = intrinsics_from_fov(50.0, 64, 48)
    eyes = torch.tensor([[3 * math.sin(math.radians(a)), 0.0, 3 - 3 * math.cos(math.radians(a))] for a in angles_deg])
    R, t = look_at(eyes, torch.tensor([0.0, 0.0, 3.0]).expand_as(eyes))
    return Camera(K=K.expand(len(angles_deg), 3, 3), R=R.float(), t=t.float(), width=64, height=48)


def test_reprojection_error_zero_for_consistent_views_and_positive_after_perturbation():
    cams = _ring([0.0, 12.0, -10.0])
    depth, rgb = map(torch.stack, zip(*[_raycast_depth(cams[i]) for i in range(3)]))
    ok = metrics.reprojection_error(depth, cams, images=rgb)
    assert ok["median_px"] < 0.02
    assert ok["valid_fraction"] > 0.5
    assert ok["photometric_l1"] < 0.02
    # depth of view 1 scaled by 10%: inconsistent geometry
    scaled = depth.clone()
    scaled[1] *= 1.1
    assert metrics.reprojection_error(scaled, cams, occlusion_tol=0.5)["median_px"] > 0.3
    # rotate camera 1 by 2 degrees about y but keep the depth it saw: the views now disagree
    a = math.radians(2.0)
    Ry = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    R = cams.R.clone()
    R[1] = Ry @ R[1]
    bad = Camera(K=cams.K, R=R, t=cams.t, width=64, height=48)
    err = metrics.reprojection_error(depth, bad, images=rgb, occlusion_tol=0.5)
    assert err["median_px"] > ok["median_px"]
    assert err["photometric_l1"] > 3 * ok["photometric_l1"] + 0.02
    with pytest.raises(ValueError, match="cameras"):
        metrics.reprojection_error(depth[:2], cams)


def test_photometric_reprojection_error():
    f = torch.full((2, 4, 4, 3), 0.5)
    r = f.clone()
    r[0, 0, 0] = 0.8
    m = torch.ones(2, 4, 4, dtype=torch.bool)
    assert metrics.photometric_reprojection_error(f, r, m) == pytest.approx(0.3 / 32)
    m[0, 0, 0] = False
    assert metrics.photometric_reprojection_error(f, r, m) == pytest.approx(0.0)
    assert math.isnan(metrics.photometric_reprojection_error(f, r, torch.zeros_like(m)))


def test_temporal_flicker_analytic():
    T, a = 6, 0.05
    base = torch.full((T, 8, 8, 3), 0.5)
    ramp = base + 0.02 * torch.arange(T, dtype=torch.float32)[:, None, None, None]
    assert metrics.temporal_flicker(ramp) == pytest.approx(0.0, abs=1e-6)
    alt = base + a * (-1.0) ** torch.arange(T, dtype=torch.float32)[:, None, None, None]
    assert metrics.temporal_flicker(alt) == pytest.approx(4 * a, rel=1e-5)
    assert metrics.temporal_flicker(alt, reference=ramp) == pytest.approx(4 * a, rel=1e-5)
    with pytest.raises(ValueError, match="T>=3"):
        metrics.temporal_flicker(base[:2])


def test_table_image_and_json_roundtrip():
    import json
    rows = [{"method": "full", "PSNR": 30.123, "SSIM": 0.9}, {"method": "no cam", "PSNR": 25.0, "SSIM": 0.8}]
    txt = metrics.format_table(rows)
    assert "30.123" in txt and "no cam" in txt
    img = metrics.table_image(rows)
    assert img.dim() == 4 and img.shape[0] == 1 and img.shape[-1] == 3
    assert img.min() < 0.5 < img.max()  # text drawn on white
    wider = metrics.table_image(rows + [{"method": "a much longer method name here", "PSNR": 1.0}])
    assert wider.shape[2] > img.shape[2] and wider.shape[1] > img.shape[1]
    assert json.loads(json.dumps(rows)) == rows


def _video(T=4, seed=0):
    return torch.stack([_textured(48, 64, seed + t) for t in range(T)])


def test_evaluate_views_and_report():
    import json
    src = _video(seed=0)
    gt = torch.stack([_video(seed=10), _video(seed=20)])
    noisy = (gt + 0.05 * torch.randn(gt.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    masks = torch.ones(gt.shape[:-1], dtype=torch.bool)
    res = metrics.evaluate_views(src, noisy, gt, renders=gt, masks=masks)
    assert res["psnr"] == pytest.approx(metrics.psnr(noisy, gt))
    assert res["ssim"] == pytest.approx(metrics.ssim(noisy, gt))
    assert res["reproj_l1"] == pytest.approx(float((noisy - gt).abs().mean()), rel=1e-5)
    assert res["flicker_excess"] > 0  # added per-frame noise is flicker the ground truth does not have
    same = metrics.evaluate_views(src, gt, gt)
    assert same["psnr"] == metrics.PSNR_CAP and same["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert same["flicker_excess"] == pytest.approx(0.0, abs=1e-7)
    assert "psnr" not in metrics.evaluate_views(src, gt)
    img, text = metrics.evaluation_report(src, noisy.reshape(-1, 48, 64, 3), gt.reshape(-1, 48, 64, 3), label="x")
    assert img.shape[0] == 1 and json.loads(text)["psnr"] == pytest.approx(res["psnr"])
    with pytest.raises(ValueError, match="whole number of views"):
        metrics.evaluation_report(src, noisy.reshape(-1, 48, 64, 3)[:5])


def test_evaluate_node(comfy_host):
    import importlib.util
    import json
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "nodes" / "evaluate.py"
    spec = importlib.util.spec_from_file_location("full4d_nodes_evaluate", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cls = mod.NODES[0]
    schema = cls.define_schema()
    assert schema.node_id == "Full4DEvaluate" and all(i.tooltip for i in schema.inputs)
    src, gt = _video(seed=0), _video(seed=10)
    out = cls.execute(source=src, views=gt, label="gt", ground_truth=gt).result
    assert out[0].dim() == 4 and json.loads(out[1])["psnr"] == metrics.PSNR_CAP


def test_evaluation_report_skip_source_view_scores_the_target_views_only():
    """With skip_source_view the first T frames of every batch (view 0, the source's) are left out: the same row
    as the sliced batches; a batch of the source view alone is refused naming the switch."""
    import json

    from comfyui_full4d.media.metrics import evaluation_report

    g = torch.Generator().manual_seed(3)
    T, H, W = 3, 16, 20
    src = torch.rand(T, H, W, 3, generator=g)
    views, truth, renders = (torch.rand(3 * T, H, W, 3, generator=g) for _ in range(3))
    views[:T] = truth[:T]  # a perfect source view would lift the PSNR if it were scored
    masks = (torch.rand(3 * T, H, W, generator=g) > 0.5).float()
    _, whole = evaluation_report(src, views, truth, renders, masks, "x", skip_source_view=True)
    _, sliced = evaluation_report(src, views[T:], truth[T:], renders[T:], masks[T:], "x")
    assert json.loads(whole) == json.loads(sliced)
    _, unskipped = evaluation_report(src, views, truth, renders, masks, "x")
    assert json.loads(unskipped)["psnr"] > json.loads(whole)["psnr"]
    with pytest.raises(ValueError, match="skip_source_view"):
        evaluation_report(src, views[:T], truth[:T], skip_source_view=True)
