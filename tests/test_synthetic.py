"""Synthetic 4D scene: ray casting vs analytic formulas, capture conventions, argument checks."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from comfyui_full4d.geometry.cameras import Camera, intrinsics_from_fov, look_at
from comfyui_full4d.media.synthetic import (BOX, ELLIPSOID, SceneSpec, cast, make_capture, make_scene,
                                      object_states, render)

F64 = torch.float64


def _empty_scene(**planes) -> SceneSpec:
    """The default scene stripped of its backdrop and objects (and with the given planes)."""
    s = make_scene(0)
    none = s.obj_kind[:0]
    empty = dict(obj_kind=none, **{f: getattr(s, f)[:0] for f in (
        "obj_center", "obj_amp", "obj_freq", "obj_phase", "obj_axis", "obj_spin", "obj_angle", "obj_size",
        "obj_size_amp", "obj_size_phase", "obj_color", "obj_tex", "obj_tex_phase")})
    return replace(s, backdrop_radius=math.inf, **empty, **planes)


def _rot(w: tuple[float, float, float]) -> torch.Tensor:
    """Rotation matrix exp([w]_x) (independent of the module's Rodrigues helper)."""
    x, y, z = w
    S = torch.tensor([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]], dtype=F64)
    return torch.linalg.matrix_exp(S).float()


def _pixel_centres(H: int, W: int) -> torch.Tensor:
    i, j = torch.meshgrid(torch.arange(H, dtype=F64) + 0.5, torch.arange(W, dtype=F64) + 0.5, indexing="ij")
    return torch.stack([j, i, torch.ones_like(i)], dim=-1)  # (H, W, 3)


@pytest.mark.parametrize("cam_idx", [0, 1])
def test_plane_depth_matches_pinhole_formula(cam_idx):
    # plane n.X = d in world; in camera coords n_c = R n, d_c = d + n_c.t; z = d_c / (n_c . K^-1 (u, v, 1))
    n = torch.nn.functional.normalize(torch.tensor([0.2, 0.3, -1.0], dtype=F64), dim=0)
    d = -3.0
    scene = _empty_scene(plane_n=n[None], plane_d=torch.tensor([d], dtype=F64))
    H, W = 21, 30
    K = intrinsics_from_fov(60.0, W, H)
    Rs = [torch.eye(3), _rot((0.1, -0.3, 0.05))]
    ts = [torch.zeros(3), torch.tensor([0.4, -0.2, 0.3])]
    cam = Camera(K=K, R=Rs[cam_idx], t=ts[cam_idx], width=W, height=H)
    _, depth = render(scene, cam, torch.zeros(1))
    n_c = Rs[cam_idx].double() @ n
    d_c = d + n_c @ ts[cam_idx].double()
    ray = _pixel_centres(H, W) @ torch.linalg.inv(K.double()).T
    z_ref = d_c / (ray @ n_c)
    hit = z_ref > 0
    assert hit.float().mean() > 0.5
    torch.testing.assert_close(depth[0][hit].double(), z_ref[hit], rtol=1e-5, atol=0)
    assert torch.isinf(depth[0][~hit]).all()
    # unprojected hits lie on the plane and project back onto their pixel centres
    Xc = (ray * depth[0].double()[..., None])[hit]
    Xw = (Xc - ts[cam_idx].double()) @ Rs[cam_idx].double()
    torch.testing.assert_close(Xw @ n, torch.full_like(Xw[:, 0], d), rtol=0, atol=1e-4)
    uv, _ = cam.project(Xw.float())
    torch.testing.assert_close(uv.double(), _pixel_centres(H, W)[hit][:, :2], rtol=0, atol=1e-3)


def test_plane_seen_by_two_cameras_lands_at_the_same_point():
    # a fronto-parallel plane z = 4 in the source frame; a second camera shifted by b along x sees
    # the same depth and the disparity f * b / z (pinhole stereo)
    scene = _empty_scene(plane_n=torch.tensor([[0.0, 0.0, 1.0]], dtype=F64), plane_d=torch.tensor([4.0], dtype=F64))
    H, W, b = 16, 24, 0.5
    K = intrinsics_from_fov(50.0, W, H)
    cams = Camera(K=K, R=torch.eye(3).expand(2, 3, 3), t=torch.tensor([[0.0, 0, 0], [-b, 0, 0]]), width=W, height=H)
    _, depth = render(scene, cams, torch.zeros(1))
    torch.testing.assert_close(depth, torch.full_like(depth, 4.0), rtol=1e-6, atol=0)
    X = torch.tensor([[0.3, -0.2, 4.0]])
    uv0, _ = cams[0].project(X)
    uv1, _ = cams[1].project(X)
    torch.testing.assert_close(uv0[0, 0] - uv1[0, 0], K[0, 0] * b / 4.0)


def test_sphere_nearest_point_depth_is_distance_minus_radius():
    c, r = torch.tensor([0.7, -0.4, 3.0], dtype=F64), 0.5
    s0 = make_scene(0)
    scene = replace(_empty_scene(plane_n=s0.plane_n[:0], plane_d=s0.plane_d[:0]),
                    **{f: getattr(s0, f)[:1] for f in ("obj_kind", "obj_freq", "obj_axis", "obj_spin", "obj_angle",
                                                      "obj_color", "obj_tex", "obj_tex_phase")},
                    obj_center=c[None], obj_amp=torch.zeros(1, 3, dtype=F64), obj_phase=torch.zeros(1, 3, dtype=F64),
                    obj_size=torch.full((1, 3), r, dtype=F64), obj_size_amp=torch.zeros(1, 3, dtype=F64),
                    obj_size_phase=torch.zeros(1, 3, dtype=F64))
    assert int(scene.obj_kind[0]) == ELLIPSOID
    H = W = 33  # odd: the centre pixel's ray is the optical axis
    K = intrinsics_from_fov(40.0, W, H)
    eye = torch.tensor([0.1, 0.2, -0.5])
    R, t = look_at(eye, c.float())
    _, depth = render(scene, Camera(K=K, R=R, t=t, width=W, height=H), torch.zeros(1))
    assert depth[0, H // 2, W // 2].item() == pytest.approx((c.float() - eye).norm().item() - r, rel=1e-5)
    assert depth[0, H // 2, W // 2] == depth[0][torch.isfinite(depth[0])].min()
    assert torch.isinf(depth[0, 0, 0])  # the corner misses the sphere


def test_hits_lie_on_the_object_surfaces():
    scene = make_scene(3)
    W, H, time = 48, 32, 0.37
    K = intrinsics_from_fov(50.0, W, H)
    R, t = look_at(torch.tensor([1.5, -0.6, 0.5]), scene.center.float())
    cam = Camera(K=K, R=R, t=t, width=W, height=H)
    ray = (_pixel_centres(H, W) @ torch.linalg.inv(K.double()).T) @ R.double()
    z, sid, rgb = cast(scene, cam.center.double(), ray.reshape(-1, 3), time)
    X = cam.center.double() + z[:, None] * ray.reshape(-1, 3)
    cen, rot, size = object_states(scene, torch.tensor([time]))
    P = scene.plane_n.shape[0]
    seen = set()
    for k in range(scene.num_objects):
        m = sid == P + 1 + k
        if not bool(m.any()):
            continue
        seen.add(int(scene.obj_kind[k]))
        q = ((X[m] - cen[0, k]) @ rot[0, k]) / size[0, k]
        res = q.norm(dim=-1) if int(scene.obj_kind[k]) == ELLIPSOID else q.abs().max(dim=-1).values
        torch.testing.assert_close(res, torch.ones_like(res), rtol=0, atol=1e-6)
    assert seen == {ELLIPSOID, BOX}
    ground = sid == 0
    torch.testing.assert_close(X[ground, 1], torch.full_like(X[ground, 1], float(scene.plane_d[0])), rtol=0, atol=1e-6)
    back = sid == P
    dist = (X[back] - scene.center).norm(dim=-1)
    torch.testing.assert_close(dist, torch.full_like(dist, scene.backdrop_radius))
    assert bool((sid >= 0).all()) and float(rgb.min()) >= 0 and float(rgb.max()) <= 1


@pytest.fixture(scope="module")
def capture():
    return make_capture(num_views=3, num_frames=3, height=24, width=40, seed=0)


def test_capture_shapes_ranges_and_conventions(capture):
    V, T, H, W = 3, 3, 24, 40
    assert capture.views.shape == (V, T, H, W, 3) and capture.views.dtype == torch.float32
    assert capture.depth.shape == (V, T, H, W) and capture.depth.dtype == torch.float32
    assert float(capture.views.min()) >= 0 and float(capture.views.max()) <= 1
    assert bool(torch.isfinite(capture.depth).all()) and float(capture.depth.min()) > 0
    assert capture.times.tolist() == pytest.approx([0.0, 0.5, 1.0])
    assert capture.source.shape == (T, H, W, 3) and capture.source_depth.shape == (T, H, W)
    assert capture.scale == pytest.approx(float(capture.depth[0, 0].median()))
    torch.testing.assert_close(capture.rig.cameras.R[0], torch.eye(3))
    torch.testing.assert_close(capture.rig.cameras.t[0], torch.zeros(3))
    geo = capture.geometry()
    assert geo.scale == pytest.approx(capture.scale)
    torch.testing.assert_close(geo.depth, capture.depth[0])
    torch.testing.assert_close(geo.K, intrinsics_from_fov(50.0, W, H))
    # the layout's look-at point sits near the rig centre (0, 0, s): the scale is stable
    assert 0.8 < capture.scale / float(make_scene(0).center[2]) < 1.25


def test_view0_is_the_identity_camera_render(capture):
    K = capture.rig.cameras.K[0]
    rgb, depth = render(make_scene(0), Camera(K=K, R=torch.eye(3), t=torch.zeros(3), width=40, height=24),
                        capture.times)
    torch.testing.assert_close(rgb, capture.views[0], rtol=0, atol=0)
    torch.testing.assert_close(depth, capture.depth[0], rtol=0, atol=0)


def test_ring_views_render_their_rig_cameras(capture):
    rgb, depth = render(make_scene(0), capture.metric_cameras[2], capture.times[1:2])
    torch.testing.assert_close(rgb[0], capture.views[2, 1], rtol=0, atol=1e-5)  # batched vs single matmuls
    torch.testing.assert_close(depth[0], capture.depth[2, 1], rtol=1e-6, atol=0)


def test_every_view_is_upright_ground_below_backdrop_above(capture):
    # world up is -y: the bottom image row of each ring camera sees the ground plane y = +h
    cams = capture.rig.metric(capture.scale)
    h = float(make_scene(0).plane_d[0])
    for v in range(3):
        for i, on_ground in ((23, True), (0, False)):
            ray = torch.linalg.inv(cams.K[v].double()) @ torch.tensor([20.0, i + 0.5, 1.0], dtype=F64)
            X = (ray * float(capture.depth[v, 0, i, 20]) - cams.t[v].double()) @ cams.R[v].double()
            assert (abs(float(X[1]) - h) < 1e-4) == on_ground


def test_objects_move_and_the_background_does_not(capture):
    for v in range(3):
        assert float((capture.views[v, 0] - capture.views[v, -1]).abs().mean()) > 1e-3
    # where frames 0 and 2 both see the (static) ground or backdrop, depth is unchanged
    scene = make_scene(0)
    cam = Camera(K=capture.rig.cameras.K[0], R=torch.eye(3), t=torch.zeros(3), width=40, height=24)
    ray = (_pixel_centres(24, 40) @ torch.linalg.inv(cam.K.double()).T).reshape(-1, 3)
    o = torch.zeros(3, dtype=F64)
    sid0, sid1 = cast(scene, o, ray, 0.0)[1], cast(scene, o, ray, 1.0)[1]
    P = scene.plane_n.shape[0]
    static = ((sid0 <= P) & (sid1 <= P)).reshape(24, 40)
    moved = ((sid0 > P) != (sid1 > P)).reshape(24, 40)
    assert static.any() and moved.any()
    torch.testing.assert_close(capture.depth[0, 0][static], capture.depth[0, -1][static], rtol=0, atol=0)


def test_deterministic_from_seed():
    a, b, c = make_scene(5), make_scene(5), make_scene(6)
    assert torch.equal(a.obj_center, b.obj_center) and torch.equal(a.obj_color, b.obj_color)
    assert not torch.equal(a.obj_center, c.obj_center)
    x = make_capture(num_views=2, num_frames=2, height=12, width=20, seed=5)
    y = make_capture(num_views=2, num_frames=2, height=12, width=20, seed=5)
    assert torch.equal(x.views, y.views) and torch.equal(x.depth, y.depth) and x.scale == y.scale


def test_supersampling_keeps_centre_depth_and_smooths_colour():
    a = make_capture(num_views=2, num_frames=1, height=12, width=20, seed=1)
    b = make_capture(num_views=2, num_frames=1, height=12, width=20, seed=1, supersample=3)
    torch.testing.assert_close(a.depth, b.depth, rtol=0, atol=0)
    assert 0 < float((a.views - b.views).abs().mean()) < 0.05


def _forward_warp(cap, src: int, dst: int, frame: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest-point z-buffer warp of view ``src`` into view ``dst``: rgb (H, W, 3), depth (H, W) (inf = hole)."""
    _, _, H, W, _ = cap.views.shape
    cams = cap.rig.metric(cap.scale)
    ray = _pixel_centres(H, W).reshape(-1, 3) @ torch.linalg.inv(cams.K[src].double()).T
    Xw = (ray * cap.depth[src, frame].double().reshape(-1, 1) - cams.t[src].double()) @ cams.R[src].double()
    Xc = Xw @ cams.R[dst].double().T + cams.t[dst].double()
    uv = (Xc @ cams.K[dst].double().T)[:, :2] / Xc[:, 2:]
    j, i = uv[:, 0].floor().long(), uv[:, 1].floor().long()
    ok = (Xc[:, 2] > 0) & (j >= 0) & (j < W) & (i >= 0) & (i < H)
    idx, z, col = i[ok] * W + j[ok], Xc[ok, 2], cap.views[src, frame].reshape(-1, 3)[ok]
    zbuf = torch.full((H * W,), math.inf, dtype=F64).scatter_reduce(0, idx, z, "amin")
    win = z <= zbuf[idx]
    rgb = torch.zeros(H * W, 3)
    rgb[idx[win]] = col[win]
    return rgb.reshape(H, W, 3), zbuf.reshape(H, W)


def test_textures_are_bandlimited_reprojection_psnr():
    # colours are view-independent and smooth at 96 x 160: wherever the warped source point is the
    # surface the target sees (depth agrees), nearest-pixel reprojection is within 30 dB PSNR
    cap = make_capture(num_views=6, num_frames=2, height=96, width=160, seed=0, elevation_deg=10.0)
    for dst, frame in ((1, 0), (3, 1), (5, 1)):
        rgb, z = _forward_warp(cap, 0, dst, frame)
        gt_z = cap.depth[dst, frame].double()
        same = torch.isfinite(z) & ((z - gt_z).abs() < 0.01 * gt_z)
        assert same.float().mean() > 0.05
        mse = ((rgb - cap.views[dst, frame]) ** 2)[same].mean()
        assert float(10 * torch.log10(1 / mse)) > 30.0


@pytest.mark.parametrize("kwargs,name", [
    (dict(num_views=1), "num_views"), (dict(num_frames=0), "num_frames"), (dict(height=0), "height"),
    (dict(width=-3), "width"), (dict(radius=0.0), "radius"), (dict(radius=0.5), "radius"), (dict(radius=9.0), "radius"),
        (dict(elevation_deg=-60.0), "elevation_deg"), (dict(fps=0.0), "fps"), (dict(supersample=0), "supersample"),
    (dict(fov_y_deg=190.0), "fov_y_deg"), (dict(fov_y_deg=90.0), "fov_y_deg"),
])
def test_bad_arguments_raise_value_error_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        make_capture(**{**dict(num_views=2, num_frames=1, height=8, width=8), **kwargs})


@pytest.mark.server
def test_node_outputs_match_the_engine(comfy_host):
    cls = comfy_host.node("Full4DSyntheticScene")
    out = cls.execute(seed=2, num_views=3, num_frames=5, width=32, height=24, radius=1.0, elevation=10.0,
                      fov=50.0).result
    source, views, rig, geometry, fps, source_geometry, truth = out
    cap = make_capture(num_views=3, num_frames=5, height=24, width=32, seed=2, elevation_deg=10.0)
    assert source.shape == (5, 24, 32, 3) and views.shape == (15, 24, 32, 3)
    torch.testing.assert_close(views[5:10], cap.views[1])  # view-major
    torch.testing.assert_close(source, views[:5])
    torch.testing.assert_close(rig.cameras.R, cap.rig.cameras.R)
    torch.testing.assert_close(geometry.depth, cap.depth[0])
    assert geometry.scale == pytest.approx(cap.scale) and fps == pytest.approx(16.0)
    # the source-only geometry has the source's depth and scale and nothing of the other views
    torch.testing.assert_close(source_geometry.depth, cap.depth[0])
    assert source_geometry.views_depth is None and geometry.views_depth is not None
    assert source_geometry.scale == pytest.approx(cap.scale)
    assert truth.scale == pytest.approx(cap.scale) and truth.time_range == (0.0, 1.0)


@pytest.mark.server
def test_node_runs_in_a_host_prompt(comfy_host):
    prompt = {
        "1": {"class_type": "Full4DSyntheticScene",
              "inputs": {"seed": 0, "num_views": 2, "num_frames": 1, "width": 24, "height": 16,
                         "radius": 1.0, "elevation": 0.0, "fov": 50.0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 1], "filename_prefix": "synthetic_test"}},
    }
    out = comfy_host.run(prompt)
    assert len(out["2"]["images"]) == 2
