"""Point-cloud projection (SPEC 3) against the pinhole formula, the per-frame reference and the
ground-truth renders of the synthetic scene."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from comfyui_full4d.geometry.cameras import intrinsics_from_fov, look_at
from comfyui_full4d.geometry.source import Geometry
from comfyui_full4d.geometry.projection import project_rig, project_to_cameras, project_to_cameras_reference


def _w2c(R, t):
    M = torch.eye(4, dtype=torch.float64)
    M[:3, :3], M[:3, 3] = torch.as_tensor(R, dtype=torch.float64), torch.as_tensor(t, dtype=torch.float64)
    return M.float()


def random_scene(V=3, T=2, H=12, W=16, seed=0, moving=False):
    g = torch.Generator().manual_seed(seed)
    K = intrinsics_from_fov(55.0, W, H)
    images = torch.rand(T, H, W, 3, generator=g)
    depth = 1.0 + torch.rand(T, H, W, generator=g)
    eye = torch.stack([torch.sin(torch.rand(V, generator=g)) * 0.6, -0.2 * torch.rand(V, generator=g),
                       -0.3 * torch.rand(V, generator=g)], -1).double()
    R, t = look_at(eye, torch.tensor([0.0, 0.0, 1.5], dtype=torch.float64).expand_as(eye))
    w2c_dst = torch.stack([_w2c(R[v], t[v]) for v in range(V)])
    K_dst = K.expand(V, 3, 3).clone()
    w2c_src = torch.eye(4)
    if moving:
        w2c_src = torch.stack([_w2c(torch.eye(3), torch.tensor([0.05 * i, 0.0, 0.0])) for i in range(T)])
    return images, depth, K, w2c_src, K_dst, w2c_dst


@pytest.mark.parametrize("V,T,radius,moving,size", [(1, 1, 0, False, None), (3, 2, 0, True, None),
                                                    (2, 3, 1, False, None), (2, 2, 2, False, (9, 20))])
def test_matches_reference_exactly(V, T, radius, moving, size):
    scene = random_scene(V, T, seed=V + T, moving=moving)
    conf = torch.rand(scene[1].shape, generator=torch.Generator().manual_seed(1))
    kw = dict(size=size, conf=conf, conf_threshold=0.2, point_radius=radius)
    a, b = project_to_cameras(*scene, **kw), project_to_cameras_reference(*scene, **kw)
    assert a[1].any() and not a[1].all()
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)
    assert torch.equal(a[1], b[1])


def test_winners_obey_pinhole_formula():
    """Each hit pixel holds the colour of a source point that the pinhole formula (numpy, written
    out here) puts inside that pixel, and that point is the nearest of those landing there."""
    images, depth, K, w2c_src, K_dst, w2c_dst = random_scene(V=2, T=1, seed=3)
    H, W = depth.shape[1:]
    ids = torch.arange(H * W, dtype=torch.float64)
    code = torch.stack([ids % 256, ids // 256, torch.zeros_like(ids)], -1).reshape(1, H, W, 3).float()
    renders, masks = project_to_cameras(code, depth, K, w2c_src, K_dst, w2c_dst)
    Kn, d = K.double().numpy(), depth[0].double().numpy()
    jj, ii = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    X = np.stack([(jj - Kn[0, 2]) / Kn[0, 0] * d, (ii - Kn[1, 2]) / Kn[1, 1] * d, d], -1).reshape(-1, 3)
    for v in range(2):
        M = w2c_dst[v].double().numpy()
        c = X @ M[:3, :3].T + M[:3, 3]
        u = Kn[0, 0] * c[:, 0] / c[:, 2] + Kn[0, 2]
        w = Kn[1, 1] * c[:, 1] / c[:, 2] + Kn[1, 2]
        land = np.full((H, W), -1)
        best = np.full((H, W), np.inf)
        for n in range(H * W):
            x, y = int(np.floor(u[n])), int(np.floor(w[n]))
            if c[n, 2] > 0 and 0 <= x < W and 0 <= y < H and c[n, 2] < best[y, x] - 1e-6:
                best[y, x], land[y, x] = c[n, 2], n
        got = (renders[v, 0, ..., 0] + 256 * renders[v, 0, ..., 1]).round().long().numpy()
        assert np.array_equal(masks[v, 0].numpy(), land >= 0)
        assert np.array_equal(got[land >= 0], land[land >= 0])


def test_fronto_parallel_plane_shifts_by_disparity():
    """A plane at depth z seen by a camera moved by b along x shifts by fx * b / z pixels."""
    H, W, z = 10, 20, 2.0
    K = intrinsics_from_fov(60.0, W, H)
    b = 3 * z / float(K[0, 0])  # a 3-pixel disparity
    images = torch.rand(1, H, W, 3, generator=torch.Generator().manual_seed(0))
    renders, masks = project_to_cameras(images, torch.full((1, H, W), z), K, torch.eye(4), K[None],
                                        _w2c(torch.eye(3), [-b, 0.0, 0.0])[None])
    assert torch.equal(renders[0, 0, :, : W - 3], images[0, :, 3:])
    assert masks[0, 0, :, : W - 3].all() and not masks[0, 0, :, W - 3:].any()
    assert (renders[0, 0, :, W - 3:] == 0).all()


def test_nearer_point_wins_and_splat_radius():
    H, W = 8, 8
    K = intrinsics_from_fov(60.0, W, H)
    depth = torch.full((1, H, W), 4.0)
    depth[0, 3, 3] = 1.0  # one near point in front of the far plane, same pixel in the source
    images = torch.zeros(1, H, W, 3)
    images[0, 3, 3] = 1.0
    r, m = project_to_cameras(images, depth, K, torch.eye(4), K[None], torch.eye(4)[None], point_radius=1)
    assert m.all()
    assert (r[0, 0, 2:5, 2:5] == 1).all()  # the near point's 3x3 footprint beats the far plane
    assert r[0, 0].sum() == 9 * 3


def test_invalid_depth_masked_and_warned():
    images, depth, K, w2c_src, K_dst, w2c_dst = random_scene(V=1, T=1)
    depth = depth.clone()
    depth[0, :, :] = float("nan")
    depth[0, 0, 0] = 1.5
    with pytest.warns(UserWarning, match="NaN/inf"):
        _, m = project_to_cameras(images, depth, K, torch.eye(4), K[None], torch.eye(4)[None])
    assert m.sum() == 1 and m[0, 0, 0, 0]


def test_errors_name_the_input():
    images, depth, K, w2c_src, K_dst, w2c_dst = random_scene(V=2, T=2)
    with pytest.raises(ValueError, match="depth must be"):
        project_to_cameras(images, depth[:, :-1], K, w2c_src, K_dst, w2c_dst)
    with pytest.raises(ValueError, match="w2c_dst must be"):
        project_to_cameras(images, depth, K, w2c_src, K_dst, w2c_dst[:1])
    with pytest.raises(ValueError, match="images must be"):
        project_to_cameras(images[..., :2], depth, K, w2c_src, K_dst, w2c_dst)
    behind = w2c_dst.clone()
    behind[1] = _w2c(torch.diag(torch.tensor([-1.0, 1.0, -1.0])), [0.0, 0.0, 0.0])  # looks away
    with pytest.raises(ValueError, match=r"camera\(s\) \[1\].*behind"):
        project_to_cameras(images, depth, K, w2c_src, K_dst, behind)


@pytest.fixture(scope="module")
def capture():
    from comfyui_full4d.media.synthetic import make_capture
    return make_capture(num_views=6, num_frames=2)


def test_synthetic_ring_matches_ground_truth(capture):
    """Done-when check (SPEC 3): the source projected into each ring camera equals the GT render
    on covered pixels whose projected point is the surface GT sees there (depth within 2 %)."""
    g, cams = capture.geometry(), capture.metric_cameras
    renders, masks = project_rig(capture.source, g, capture.rig)
    # render the world coordinates of the winning points to get their depth in each target
    T, H, W = g.depth.shape
    K = g.K.double()
    jj, ii = torch.meshgrid(torch.arange(W) + 0.5, torch.arange(H) + 0.5, indexing="xy")
    d = g.depth.double()
    X = torch.stack([(jj - K[0, 2]) / K[0, 0] * d, (ii - K[1, 2]) / K[1, 1] * d, d], -1)
    xyz, _ = project_to_cameras(X, g.depth, g.K, torch.eye(4), cams.K, cams.viewmat)
    assert torch.equal(renders[0], capture.source) and masks[0].all()
    for v in range(1, capture.rig.num_views):
        Rv, tv = cams.R[v].double(), cams.t[v].double()
        z = (xyz[v] @ Rv.T + tv)[..., 2]
        ok = masks[v] & ((z - capture.depth[v]).abs() <= 0.02 * capture.depth[v])
        mse = ((renders[v] - capture.views[v])[ok] ** 2).mean()
        psnr = float(-10 * torch.log10(mse))
        print(f"view {v}: coverage {masks[v].float().mean():.3f}, non-disoccluded {ok.float().mean():.3f}, "
              f"PSNR {psnr:.1f} dB")
        assert ok.float().mean() > 0.03 and psnr >= 30.0


def test_projection_into_source_camera_reproduces_image(capture):
    g = capture.geometry()
    r, m = project_to_cameras(capture.source, g.depth, g.K, torch.eye(4), g.K[None], torch.eye(4)[None])
    assert m.all() and torch.equal(r[0], capture.source)


def test_pixels_below_the_confidence_threshold_are_not_projected():
    """SPEC 3: only pixels with confidence above the threshold become points. Projected back into the source
    camera, every point lands on its own pixel: the mask is exactly the confident pixels."""
    images, depth, K, _, _, _ = random_scene(T=1)
    conf = torch.rand(depth.shape, generator=torch.Generator().manual_seed(2))
    r, m = project_to_cameras(images, depth, K, torch.eye(4), K[None], torch.eye(4)[None], conf=conf,
                              conf_threshold=0.5)
    assert torch.equal(m[0], conf > 0.5)
    assert torch.equal(r[0][m[0]], images[m[0]]) and not r[0][~m[0]].any()


def test_view0_is_the_source_frame_itself(capture):
    """SPEC 3: the render for view 0 is the source frame (all valid), also where its own points would leave
    holes (low-confidence pixels) or be covered by a neighbour's splat."""
    g = capture.geometry()
    conf = torch.rand(g.depth.shape, generator=torch.Generator().manual_seed(0))
    g = Geometry(depth=g.depth, K=g.K, w2c=g.w2c, scale=g.scale, conf=conf)
    r, m = project_rig(capture.source, g, capture.rig, conf_threshold=0.5, point_radius=1)
    assert torch.equal(r[0], capture.source) and bool(m[0].all())
    assert not bool(m[1:].all())  # the other views do have holes


def test_project_rig_checks_and_scale(capture):
    g = capture.geometry()
    with pytest.raises(ValueError, match="do not match the geometry"):
        project_rig(capture.source[:, :-1], g, capture.rig)
    # a rig in scene units projects identically to its metric cameras
    cams = capture.metric_cameras
    a, ma = project_rig(capture.source, g, capture.rig, size=(48, 80))
    small = cams.resized(80, 48)
    b, mb = project_to_cameras(capture.source, g.depth, g.K, torch.eye(4), small.K, small.viewmat, size=(48, 80))
    assert torch.equal(a[1:], b[1:]) and torch.equal(ma[1:], mb[1:])
    g2 = Geometry(depth=g.depth, K=g.K, w2c=g.w2c, scale=g.scale * 2.0)
    c, _ = project_rig(capture.source, g2, capture.rig)
    assert not torch.equal(c[1], project_rig(capture.source, g, capture.rig)[0][1])


def test_node_project_to_cameras(comfy_host, capture):
    cls = comfy_host.node("Full4DProjectToCameras")
    g = capture.geometry()
    out = cls.execute(source=capture.source, geometry=g, rig=capture.rig, width=0, height=0,
                      conf_threshold=0.0, point_radius=0).result
    renders, masks, sheet = out
    V, T = capture.rig.num_views, capture.source.shape[0]
    ref, ref_m = project_rig(capture.source, g, capture.rig)
    assert renders.shape == (V * T, *capture.source.shape[1:]) and masks.shape == (V * T, *g.size)
    assert torch.equal(renders, ref.reshape(V * T, *ref.shape[2:]))  # view-major
    assert torch.equal(masks.bool(), ref_m.reshape(V * T, *g.size))
    assert sheet.dim() == 4 and sheet.shape[0] == 1 and sheet.shape[-1] == 3
    assert cls.validate_inputs(width=64, height=0) is not True
    small = cls.execute(source=capture.source, geometry=g, rig=capture.rig, width=80, height=48,
                        conf_threshold=0.0, point_radius=1).result
    assert small[0].shape == (V * T, 48, 80, 3)


@pytest.mark.server
def test_nodes_run_in_a_host_prompt(comfy_host):
    """Synthetic scene -> rig (plot) -> orbit -> projection through the host's executor."""
    prompt = {
        "1": {"class_type": "Full4DSyntheticScene",
              "inputs": {"seed": 0, "num_views": 3, "num_frames": 2, "width": 40, "height": 24,
                         "radius": 1.0, "elevation": 0.0, "fov": 50.0}},
        "2": {"class_type": "Full4DCameraRig",
              "inputs": {"preset": "arc", "num_views": 3, "radius": 1.0, "elevation": 10.0, "arc_span": 60.0,
                         "custom_json": "", "width": 64, "height": 64, "fov": 50.0,
                         "geometry": ["1", 3], "source": ["1", 0]}},
        "3": {"class_type": "Full4DProjectToCameras",
              "inputs": {"source": ["1", 0], "geometry": ["1", 3], "rig": ["2", 0], "width": 0, "height": 0,
                         "conf_threshold": 0.0, "point_radius": 1}},
        "4": {"class_type": "Full4DInterpolateRig", "inputs": {"rig": ["2", 0], "n": 8}},
        "5": {"class_type": "Full4DProjectToCameras",
              "inputs": {"source": ["1", 0], "geometry": ["1", 3], "rig": ["4", 0], "width": 0, "height": 0,
                         "conf_threshold": 0.0, "point_radius": 0}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["3", 2], "filename_prefix": "proj_sheet"}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["2", 1], "filename_prefix": "rig_plot"}},
        "8": {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}},
    }
    out = comfy_host.run(prompt)
    assert len(out["6"]["images"]) == 1 and len(out["7"]["images"]) == 1
    assert len(out["8"]["images"]) == 8 * 2
    renders = comfy_host.outputs("3")[0][0]
    assert renders.shape == (3 * 2, 24, 40, 3)


@pytest.mark.parametrize("budget", [50, 12 * 16 * 2 * 9])
def test_chunking_over_frames_and_views_changes_nothing(monkeypatch, budget):
    import comfyui_full4d.geometry.projection as P
    scene = random_scene(V=3, T=3, seed=5)
    full = project_to_cameras(*scene, point_radius=1)
    monkeypatch.setattr(P, "_CHUNK_ELEMS", budget)  # 1 view x 1 frame, then 2 views x 1 frame per chunk
    steps = []
    small = project_to_cameras(*scene, point_radius=1, on_step=lambda d, t: steps.append((d, t)))
    assert torch.equal(full[0], small[0]) and torch.equal(full[1], small[1])
    assert steps == [(1, 3), (2, 3), (3, 3)]
