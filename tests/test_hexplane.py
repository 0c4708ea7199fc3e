"""HexPlane: zero-init heads = identity deformation; features = product over planes of bilinear samples;
TV finite, zero for constant planes, equal to a hand-computed value otherwise; Umeyama; init; losses."""

import math

import pytest
import torch

from comfyui_full4d.gaussians import Gaussians, HexPlane, HexPlaneConfig, Scene4D
from comfyui_full4d.geometry.align import umeyama
from comfyui_full4d.gaussians.init import backproject_views, init_gaussians, nn_scales
from comfyui_full4d.gaussians.losses import photometric_loss, ssim, ssim_map
from comfyui_full4d.geometry.cameras import Camera, intrinsics_from_fov

CFG = HexPlaneConfig(feature_dim=4, base_res=8, time_res=5, multires=(1, 2), hidden=16)


def _gaussians(n=30):
    g = torch.Generator().manual_seed(1)
    return Gaussians(means=torch.rand(n, 3, generator=g), quats=torch.randn(n, 4, generator=g),
                     log_scales=torch.randn(n, 3, generator=g), opacity_logits=torch.randn(n, generator=g),
                     sh_dc=torch.randn(n, 1, 3, generator=g), sh_rest=torch.zeros(n, 3, 3))


def test_zero_init_is_identity():
    g = _gaussians()
    s = Scene4D(g, HexPlane(CFG), (0.0, 2.0), torch.tensor([[0.0, 0, 0], [1, 1, 1]]), 1)
    for t in (0.0, 0.7, 2.0):
        m, q, sc, o, sh = s.at(t)
        assert torch.equal(m, g.means)
        torch.testing.assert_close(q, g.quats / g.quats.norm(dim=-1, keepdim=True))
        torch.testing.assert_close(sc, torch.exp(g.log_scales))
        torch.testing.assert_close(o, torch.sigmoid(g.opacity_logits))


def _bilinear(plane, u, v):
    """Reference bilinear lookup, align_corners=True: plane (C, H, W), u along W, v along H in [-1, 1]."""
    C, H, W = plane.shape
    x, y = (u + 1) / 2 * (W - 1), (v + 1) / 2 * (H - 1)
    x0, y0 = min(int(math.floor(x)), W - 2), min(int(math.floor(y)), H - 2)
    fx, fy = x - x0, y - y0
    return ((1 - fx) * (1 - fy) * plane[:, y0, x0] + fx * (1 - fy) * plane[:, y0, x0 + 1]
            + (1 - fx) * fy * plane[:, y0 + 1, x0] + fx * fy * plane[:, y0 + 1, x0 + 1])


def test_features_match_reference_product():
    hp = HexPlane(CFG)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in hp.planes:
            p.uniform_(0.5, 1.5)
    xyz, t = torch.rand(5, 3) * 2 - 1, torch.rand(5, 1) * 2 - 1
    f = hp.features(xyz, t)
    assert f.shape == (5, 8)
    c = torch.cat([xyz, t], -1)
    pairs = [(0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3)]
    for i in range(5):
        ref = []
        for r in range(2):
            prod = torch.ones(4)
            for p, (a, b) in enumerate(pairs):
                prod = prod * _bilinear(hp.planes[r * 6 + p][0].detach(), float(c[i, a]), float(c[i, b]))
            ref.append(prod)
        torch.testing.assert_close(f[i], torch.cat(ref), rtol=1e-5, atol=1e-6)


def test_tv():
    hp = HexPlane(CFG)
    with torch.no_grad():
        for p in hp.planes:
            p.fill_(0.3)
    assert float(hp.tv_loss().detach()) == 0.0
    with torch.no_grad():
        hp.planes[0][0, 0, :, :] = torch.arange(hp.planes[0].shape[-1]).float()  # ramp along width, slope 1
    n = len(hp.planes)
    C, H, W = hp.planes[0].shape[1:]
    expected = (1.0 * C ** -1 * (W - 1) * H / (H * (W - 1))) / n  # one of C channels has squared diff 1
    tv = hp.tv_loss().detach()
    assert math.isfinite(float(tv))
    assert abs(float(tv) - expected) < 1e-6


def test_deformation_gradients_reach_planes_and_heads():
    g = _gaussians()
    s = Scene4D(g, HexPlane(CFG), (0.0, 1.0), torch.tensor([[0.0, 0, 0], [1, 1, 1]]), 1)
    m, q, sc, _, _ = s.at(0.5)
    (m.sum() + q.sum() + sc.sum()).backward()
    assert s.hexplane.head_mean.weight.grad.abs().sum() > 0
    assert s.hexplane.head_mean.bias.grad.abs().sum() > 0


def test_umeyama_recovers_similarity():
    torch.manual_seed(0)
    src = torch.randn(100, 3, dtype=torch.float64)
    ang = 0.7
    ax = torch.tensor([1.0, 2.0, -0.5], dtype=torch.float64)
    ax = ax / ax.norm()
    Kx = torch.tensor([[0, -ax[2], ax[1]], [ax[2], 0, -ax[0]], [-ax[1], ax[0], 0]])
    R = torch.eye(3, dtype=torch.float64) + math.sin(ang) * Kx + (1 - math.cos(ang)) * Kx @ Kx  # Rodrigues
    s, t = 2.5, torch.tensor([0.3, -1.0, 4.0], dtype=torch.float64)
    dst = s * src @ R.T + t
    s2, R2, t2 = umeyama(src, dst)
    assert abs(s2 - s) < 1e-9
    torch.testing.assert_close(R2, R)
    torch.testing.assert_close(t2, t)
    s3, R3, _ = umeyama(src, src @ R.T + t, with_scale=False)
    assert s3 == 1.0 and torch.allclose(R3, R)
    with pytest.raises(ValueError, match="umeyama"):
        umeyama(src[:2], dst[:2])


def test_backproject_reprojects_to_pixels():
    K = intrinsics_from_fov(50, 8, 6)
    cams = Camera(K=K.expand(2, 3, 3), R=torch.stack([torch.eye(3), torch.eye(3)]),
                  t=torch.tensor([[0.0, 0, 0], [0.5, 0, 0]]), width=8, height=6)
    depth = torch.rand(2, 6, 8) + 1
    depth[0, 0, 0] = float("nan")
    pts, cols = backproject_views(depth, torch.rand(2, 6, 8, 3), cams)
    assert len(pts) == 2 * 48 - 1
    uv, z = cams[1].project(pts[47:])
    v, u = torch.meshgrid(torch.arange(6) + 0.5, torch.arange(8) + 0.5, indexing="ij")
    torch.testing.assert_close(uv, torch.stack([u, v], -1).reshape(-1, 2).float(), atol=1e-4, rtol=0)
    torch.testing.assert_close(z, depth[1].reshape(-1), atol=1e-5, rtol=0)


def test_init_scales_are_brute_force_knn():
    pts = torch.randn(60, 3)
    d = torch.cdist(pts.double(), pts.double())
    ref = d.sort(-1).values[:, 1:4].mean(-1).float()
    torch.testing.assert_close(nn_scales(pts), ref)
    g = init_gaussians(pts, torch.rand(60, 3), 2)
    assert g.sh_rest.shape == (60, 8, 3) and g.sh_degree == 2
    with pytest.raises(ValueError, match="non-empty"):
        init_gaussians(torch.zeros(0, 3), torch.zeros(0, 3))


def test_ssim_matches_kornia():
    kornia = pytest.importorskip("kornia")
    torch.manual_seed(0)
    a, b = torch.rand(20, 24, 3), torch.rand(20, 24, 3)
    b = 0.6 * a + 0.4 * b
    ref = kornia.metrics.ssim(a.permute(2, 0, 1)[None], b.permute(2, 0, 1)[None], 11, padding="valid")
    # away from the border (where 3DGS zero-pads) the maps agree
    torch.testing.assert_close(ssim_map(a, b)[..., 5:-5, 5:-5], ref, atol=1e-5, rtol=0)
    assert abs(float(ssim(a, a)) - 1) < 1e-6
    assert float(photometric_loss(a, a)) < 1e-6


def test_photometric_loss_is_l1_plus_0_2_dssim():
    """SPEC 6: ``L1 + 0.2 * D-SSIM`` with D-SSIM = 1 - SSIM (the L1 term unweighted)."""
    torch.manual_seed(1)
    a, b = torch.rand(16, 20, 3), torch.rand(16, 20, 3)
    l1 = float((a - b).abs().mean())
    torch.testing.assert_close(float(photometric_loss(a, b)), l1 + 0.2 * (1 - float(ssim(a, b))), rtol=1e-6, atol=0)


def test_contract_inner_box_linear_outside_compressed_and_continuous():
    from comfyui_full4d.gaussians.model import contract

    box = torch.tensor([[-1.0, 0.0, 2.0], [3.0, 1.0, 4.0]])
    inner = box[0] + torch.rand(200, 3) * (box[1] - box[0])
    u = 2 * (inner - box[0]) / (box[1] - box[0]) - 1  # analytic: linear onto [-1/2, 1/2]
    assert torch.allclose(contract(inner, box), u / 2, atol=1e-6)
    far = torch.randn(500, 3) * 1e3
    cf = contract(far, box)
    assert cf.abs().amax(-1).min() > 0.5 and cf.abs().amax() <= 1.0
    # continuous across the box surface, and monotone along a ray leaving the box
    d = torch.tensor([0.3, -0.2, 1.0])
    ray = box.mean(0) + torch.linspace(0, 50, 2001)[:, None] * d
    c = contract(ray, box)
    step = (c[1:] - c[:-1]).norm(dim=-1)
    assert step.max() < 2 * step[:10].mean()  # no jump at the box surface (steps only shrink outside)
    assert (c[1:, 2] - c[:-1, 2] >= -1e-7).all()


def test_scene_aabb_with_cameras_keeps_the_subject_and_drops_the_backdrop():
    from comfyui_full4d.gaussians.fit import scene_aabb
    from comfyui_full4d.geometry.rig import ring_rig

    rig = ring_rig(6, intrinsics_from_fov(50.0, 64, 48), 64, 48, radius=1.0, center=(0.0, 0.0, 1.0))
    cams = rig.metric(2.0)
    subject = torch.randn(300, 3) * 0.2 + torch.tensor([0.0, 0.0, 2.0])
    d = torch.nn.functional.normalize(torch.randn(300, 3), dim=-1)
    backdrop = 40.0 * d + torch.tensor([0.0, 0.0, 2.0])  # a far sky dome around everything
    box = scene_aabb(torch.cat([subject, backdrop]), cams)
    assert ((subject >= box[0]) & (subject <= box[1])).all()  # the subject is inside the inner box
    assert float((box[1] - box[0]).max()) < 10.0  # which is not stretched to the 80 m dome
    all_box = scene_aabb(torch.cat([subject, backdrop]))
    assert float((all_box[1] - all_box[0]).min()) > 80.0
