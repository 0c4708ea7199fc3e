"""Capture readers (comfyui_full4d.training.captures): fixtures in each real layout written from the
synthetic scene's known metric cameras (tests/fixtures/captures.py), read back and checked against

* the original cameras (to 1e-6) and their projections of known 3D points;
* each format's own loader as its public code defines it (4DGaussians' N3DV poses, ReCamMaster's
  relative poses, panoptic-toolbox's ``projectPoints``, Nerfies' ``Camera.project``), restated here;
* the pinhole renders (undistorted frames) and OpenCV's ``cv2.undistort``;

and the errors a user meets (unknown layout, missing cameras, unsynchronised frames, moving cameras).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from comfyui_full4d.training import captures as C
from comfyui_full4d.training.captures.load import (capture_rig, focus_depth, look_at_point, read_view, select,
                                          undistorter)
from comfyui_full4d.geometry.cameras import Camera
from comfyui_full4d.media.video import crop_intrinsics, resize_center_crop
from fixtures import captures as fx


@pytest.fixture(scope="module")
def cap():
    return fx.capture()


@pytest.fixture(scope="module")
def data(tmp_path_factory, cap):
    root = tmp_path_factory.mktemp("captures")
    fx.write_n3dv(root / "n3dv", cap)
    fx.write_recammaster(root / "f24_aperture5" / "scene1", cap)
    fx.write_panoptic(root / "panoptic", cap, seed=0)
    fx.write_dycheck(root / "dycheck", cap, seed=0)
    return root


def _points(cams: Camera, n: int = 64) -> torch.Tensor:
    """World points in front of every camera: around the rig's look-at point (0, 0, scale)."""
    g = torch.Generator().manual_seed(0)
    c = torch.tensor([0.0, 0.0, float(cams.center[0].norm() + 2.0)], dtype=torch.float64)
    return c + (torch.rand(n, 3, generator=g, dtype=torch.float64) - 0.5) * 0.8


def _same_cameras(read: C.View, ref: Camera, pts: torch.Tensor) -> None:
    cam = read.camera(0)
    assert (cam.width, cam.height) == (ref.width, ref.height)
    torch.testing.assert_close(cam.R, ref.R.double(), atol=1e-6, rtol=0)
    torch.testing.assert_close(cam.t, ref.t.double(), atol=1e-6, rtol=0)
    torch.testing.assert_close(cam.K, ref.K.double(), atol=1e-6 * float(ref.K[0, 0]), rtol=0)
    uv, z = cam.project(pts)
    uv_ref, z_ref = ref.to(torch.float64).project(pts)
    assert (z_ref > 0).all()
    torch.testing.assert_close(uv, uv_ref, atol=1e-4, rtol=0)  # pixels (float32 source cameras)


# ---- N3DV --------------------------------------------------------------------------------------------

def test_n3dv_cameras_roundtrip_and_match_4dgaussians_loader(data, cap):
    c = C.open_capture(data / "n3dv", label="n3dv")
    assert c.format == "n3dv" and c.names == ("cam00", "cam01", "cam02", "cam03") and c.held_out == ("cam00",)
    metric = cap.metric_cameras
    pts = _points(metric)
    for v, view in enumerate(c.views):
        _same_cameras(view, metric[v], pts)
        assert view.bounds is not None and view.bounds[0] < cap.scale < view.bounds[1]
    # 4DGaussians' N3DV loader: [down, right, back] -> [right, up, back]; R = -R; R[:, 0] = -R[:, 0];
    # T = -C . R; its cameras use world-to-view [R^T | T].
    arr = np.load(data / "n3dv" / "poses_bounds.npy")
    poses = arr[:, :15].reshape(-1, 3, 5)
    poses = np.concatenate([poses[..., 1:2], -poses[..., :1], poses[..., 2:4]], -1)
    for v, view in enumerate(c.views):
        R = -poses[v][:3, :3]
        R[:, 0] = -R[:, 0]
        T = -poses[v][:3, 3].dot(R)
        torch.testing.assert_close(view.w2c[0, :3, :3], torch.from_numpy(R.T), atol=1e-9, rtol=0)
        torch.testing.assert_close(view.w2c[0, :3, 3], torch.from_numpy(T), atol=1e-9, rtol=0)


def test_llff_conversion_inverts():
    g = torch.Generator().manual_seed(1)
    R = torch.linalg.qr(torch.randn(3, 3, 3, generator=g, dtype=torch.float64))[0]
    R = R * torch.sign(torch.linalg.det(R))[:, None, None]
    w2c = torch.eye(4, dtype=torch.float64).repeat(3, 1, 1)
    w2c[:, :3, :3], w2c[:, :3, 3] = R, torch.randn(3, 3, generator=g, dtype=torch.float64)
    hwf = torch.tensor([[64.0, 96.0, 80.0]]).repeat(3, 1)
    back, hwf2 = C.n3dv.llff_to_w2c(C.n3dv.w2c_to_llff(w2c, hwf))
    torch.testing.assert_close(back, w2c)
    torch.testing.assert_close(hwf2, hwf.double())


# ---- ReCamMaster -------------------------------------------------------------------------------------

def _recammaster_relative(path, names):
    """ReCamMaster's train_recammaster.py: parse, transpose, columns [1, 2, 0, 3], negate column 1,
    cm -> m; relative pose of camera i to camera 0 = inv(c2w_0) @ c2w_i."""
    data = json.loads(path.read_text())
    c2ws = []
    for n in names:
        m = np.array([[float(x) for x in r.replace("[", "").replace("]", "").split()]
                      for r in data["frame0"][n].strip().split("] [")]).T
        m = m[:, [1, 2, 0, 3]]
        m[:3, 1] *= -1.0
        m[:3, 3] /= 100
        c2ws.append(m)
    return [np.linalg.inv(c2ws[0]) @ c for c in c2ws]


def test_recammaster_cameras_roundtrip_and_match_its_relative_poses(data, cap):
    root = data / "f24_aperture5" / "scene1"
    c = C.open_capture(root, label="scene1")
    assert c.format == "recammaster" and c.units == "metres" and c.names == ("cam01", "cam02", "cam03", "cam04")
    metric = cap.metric_cameras
    pts = _points(metric)
    for v, view in enumerate(c.views):
        _same_cameras(view, metric[v], pts)
    theirs = _recammaster_relative(root / "cameras" / "camera_extrinsics.json", c.names)
    w2c0 = c.views[0].w2c[0]
    for view, rel in zip(c.views, theirs):
        ours = view.w2c[0] @ torch.linalg.inv(w2c0)  # camera 0 -> camera i
        torch.testing.assert_close(torch.linalg.inv(ours), torch.from_numpy(rel), atol=1e-6, rtol=0)


# three cameras of SynCamMaster's example_test_data/cameras/camera_extrinsics.json (frame0)
SYNCAM_EXAMPLE = {
    "cam01": "[0.866025 -0.5 0 0] [0.5 0.866025 -0 0] [0 0 1 0] [12960.2 1250 -570 1] ",
    "cam03": "[1 0 0 0] [-0 1 0 0] [0 -0 1 0] [12920 1100 -570 1] ",
    "cam08": "[0.866025 0 -0.5 0] [-0 1 0 0] [0.5 0 0.866025 0] [12920 1100 -396.795 1] ",
}


def test_recammaster_axes_on_the_public_example():
    """On real SynCamVideo numbers: the cameras aim at one point ahead (the character), the raised
    camera cam08 sits higher (smaller y: world up is -y) and looks down (+y optical axis), and image
    rows run downwards in the world (camera y axis has a +y world component)."""
    M = torch.stack([C.recammaster.parse_matrix(s) for s in SYNCAM_EXAMPLE.values()])
    w2c = C.recammaster.unreal_to_w2c(M)
    cams = Camera(K=torch.eye(3, dtype=torch.float64), R=w2c[:, :3, :3], t=w2c[:, :3, 3], width=64, height=64)
    p = look_at_point(cams)
    assert p is not None
    dist = (cams.center - p).norm(dim=-1)
    assert torch.allclose(dist[:2], torch.tensor([3.0, 3.0], dtype=torch.float64), atol=0.01)  # 3 m ahead
    assert float(cams.center[2, 1]) < float(cams.center[1, 1]) - 1.5  # 1.73 m higher than cam03
    assert float(cams.R[2, 2, 1]) > 0.4  # looks down at the character
    assert (cams.R[:, 1, 1] > 0.8).all()  # image down = world down
    assert torch.allclose(torch.linalg.det(cams.R), torch.ones(3, dtype=torch.float64))


def test_recammaster_conversion_inverts_and_focal_comes_from_the_folder(data, tmp_path):
    g = torch.Generator().manual_seed(2)
    R = torch.linalg.qr(torch.randn(2, 3, 3, generator=g, dtype=torch.float64))[0]
    R = R * torch.sign(torch.linalg.det(R))[:, None, None]
    w2c = torch.eye(4, dtype=torch.float64).repeat(2, 1, 1)
    w2c[:, :3, :3], w2c[:, :3, 3] = R, torch.randn(2, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(C.recammaster.unreal_to_w2c(C.recammaster.w2c_to_unreal(w2c)), w2c)
    moved = tmp_path / "scene9"
    shutil.copytree(data / "f24_aperture5" / "scene1", moved)
    with pytest.raises(C.CaptureError, match=r"scene9: the focal length is unknown.*f24_aperture5"):
        C.open_capture(moved, label="scene9")
    c = C.open_capture(moved, label="scene9", focal_mm=35.0)
    assert float(c.views[0].K[0, 0]) == pytest.approx(35.0 * 64 / 23.76)


# ---- Panoptic ----------------------------------------------------------------------------------------

def _panutils_project(X_cm, K, R, t, Kd):
    """panoptic-toolbox panutils.projectPoints: x = R X + t, normalise, distort, apply K (OpenCV pixels)."""
    x = R @ X_cm + t
    x[0:2] = x[0:2] / x[2]
    r = x[0] * x[0] + x[1] * x[1]
    radial = 1 + Kd[0] * r + Kd[1] * r * r + Kd[4] * r * r * r
    x0 = x[0] * radial + 2 * Kd[2] * x[0] * x[1] + Kd[3] * (r + 2 * x[0] * x[0])
    x1 = x[1] * radial + 2 * Kd[3] * x[0] * x[1] + Kd[2] * (r + 2 * x[1] * x[1])
    return np.stack([K[0, 0] * x0 + K[0, 1] * x1 + K[0, 2], K[1, 0] * x0 + K[1, 1] * x1 + K[1, 2]])


def _opencv_distorted(view: C.View, pts: torch.Tensor) -> np.ndarray:
    """Pixels (ours, centres +0.5) of world points through a view's lens, by cv2.projectPoints."""
    import cv2

    K_cv = view.K.numpy().copy()
    K_cv[:2, 2] -= 0.5
    rvec = cv2.Rodrigues(view.w2c[0, :3, :3].numpy())[0]
    uv, _ = cv2.projectPoints(pts.numpy(), rvec, view.w2c[0, :3, 3].numpy(), K_cv, view.dist.numpy())
    return uv[:, 0] + 0.5


def test_panoptic_calibration_roundtrip_and_projection(data, cap):
    c = C.open_capture(data / "panoptic", label="panoptic")
    assert c.format == "panoptic" and c.units == "metres"
    assert c.names == ("00_00", "00_01", "00_02", "00_03")  # the VGA camera has no video: not a view
    metric = cap.metric_cameras
    pts = _points(metric)
    calib = json.loads(next((data / "panoptic").glob("calibration_*.json")).read_text())["cameras"]
    for v, view in enumerate(c.views):
        _same_cameras(view, metric[v], pts)
        torch.testing.assert_close(view.dist, torch.tensor(fx.DIST, dtype=torch.float64))
        cam = calib[v]
        theirs = _panutils_project(pts.numpy().T * 100.0, np.array(cam["K"]), np.array(cam["R"]),
                                   np.array(cam["t"]), cam["distCoef"]).T
        np.testing.assert_allclose(theirs + 0.5, _opencv_distorted(view, pts), atol=1e-6)


# ---- DyCheck / Nerfies ------------------------------------------------------------------------------

def _nerfies_project(cam: dict, X: np.ndarray) -> np.ndarray:
    """google/nerfies camera.py Camera.project (pixel centres at +0.5, as ours)."""
    R, pos = np.array(cam["orientation"]), np.array(cam["position"])
    local = (R @ (X - pos).T).T
    x, y = local[:, 0] / local[:, 2], local[:, 1] / local[:, 2]
    r2 = x ** 2 + y ** 2
    k, p = cam["radial_distortion"], cam["tangential_distortion"]
    d = 1.0 + r2 * (k[0] + r2 * (k[1] + k[2] * r2))
    xy = x * y
    xd = x * d + 2.0 * p[0] * xy + p[1] * (r2 + 2.0 * x ** 2)
    yd = y * d + 2.0 * p[1] * xy + p[0] * (r2 + 2.0 * y ** 2)
    f, par = cam["focal_length"], cam["pixel_aspect_ratio"]
    return np.stack([f * xd + cam["skew"] * yd + cam["principal_point"][0],
                     f * par * yd + cam["principal_point"][1]], -1)


def test_dycheck_cameras_roundtrip_and_match_nerfies_projection(data, cap):
    c = C.open_capture(data / "dycheck", label="dycheck")
    assert c.format == "dycheck" and c.units == "metres" and c.fps == 30.0
    assert c.names == ("cam0", "cam1", "cam2", "cam3")
    assert c.default == ("cam1", "cam2", "cam3")  # the hand-held camera 0 moves
    metric = cap.metric_cameras
    pts = _points(metric)
    for v, view in list(enumerate(c.views))[1:]:
        _same_cameras(view, metric[v], pts)
        cam = json.loads((data / "dycheck" / "camera" / f"{v}_00002.json").read_text())
        np.testing.assert_allclose(_nerfies_project(cam, pts.numpy()), _opencv_distorted(view, pts), atol=1e-6)
    # the hand-held camera keeps one pose per frame
    moving = fx.hand_held_poses(metric, cap.views.shape[1])
    torch.testing.assert_close(torch.linalg.inv(c.views[0].w2c), moving, atol=1e-6, rtol=0)
    lo, hi = c.bounds
    assert lo <= float(cap.depth[0].min()) * 1.0001 and hi >= float(cap.depth[0].max()) * 0.9999


def test_dycheck_reads_a_downscaled_folder_with_scaled_intrinsics(data, tmp_path, cap):
    root = tmp_path / "dy2"
    shutil.copytree(data / "dycheck", root)
    shutil.rmtree(root / "rgb" / "1x")
    c = C.open_capture(root)
    view = c.view("cam2")
    assert (view.width, view.height) == (32, 32)
    torch.testing.assert_close(view.K, crop_intrinsics(cap.metric_cameras.K[2].double(), (64, 64), (32, 32)))
    assert next(view.frames.read([0])).shape == (32, 32, 3)


# ---- undistortion ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["panoptic", "dycheck"])
def test_undistorted_frames_match_the_pinhole_render_and_opencv(data, cap, name):
    import cv2

    c = C.open_capture(data / name)
    sel = select(c, "-cam0" if name == "dycheck" else "", num_frames=5)
    for view in sel.views:
        v = int(view.name.split("_")[-1]) if name == "panoptic" else int(view.name[3:])
        raw = torch.stack(list(view.frames.read(sel.indices)))
        und = torch.stack(list(read_view(view, sel.indices)))
        gt = cap.views[v]
        K_cv = view.K.numpy().copy()
        K_cv[:2, 2] -= 0.5
        ref = torch.stack([torch.from_numpy(cv2.undistort((f.numpy() * 255).round().astype(np.uint8), K_cv,
                                                          view.dist.numpy())).float() / 255 for f in raw])
        assert float((und - ref).abs().mean()) < 1.5e-3  # same maps, OpenCV interpolates in fixed point
        assert float((und - ref)[:, 1:-1, 1:-1].abs().max()) < 0.03
        err_raw, err_und = float((raw - gt).abs().mean()), float((und - gt).abs().mean())
        assert err_und < 0.6 * err_raw and err_und < 0.008, (err_raw, err_und)


def test_undistorter_refuses_skew_with_distortion(data):
    view = C.open_capture(data / "panoptic").views[0]
    K = view.K.clone()
    K[0, 1] = 0.5
    from dataclasses import replace

    with pytest.raises(C.CaptureError, match="skewed K"):
        undistorter(replace(view, K=K))
    assert undistorter(replace(view, dist=None)) is None


# ---- rig in scene units, frames ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["n3dv", "f24_aperture5/scene1", "panoptic", "dycheck"])
def test_load_multiview_rig_in_scene_units_and_frames(data, cap, name):
    """The raised, rolled camera 3 as the source: the rig is every camera relative to it, in units of
    its depth of the ring's look-at point (the synthetic scene's own centre)."""
    order = [3, 1, 2] if name == "dycheck" else [3, 0, 1, 2]  # DyCheck's camera 0 is the hand-held one
    names = C.open_capture(data / name).names
    mv = C.load_multiview(data / name, views=",".join(names[v] for v in order), num_frames=5, size=(32, 64),
                          label=name)
    V = mv.rig.num_views
    assert mv.frames.shape == (V, 5, 32, 64, 3) and mv.fps == pytest.approx(30.0 if name == "dycheck" else 16.0)
    metric = cap.metric_cameras
    # the ring looks at the synthetic centre (0, 0, 1) scene units = (0, 0, s) metres: the look-at point,
    # whose depth in the selection's source camera is the scale
    src = order[0]
    q = metric.R[src].double() @ torch.tensor([0.0, 0.0, cap.scale], dtype=torch.float64) + metric.t[src].double()
    assert mv.scale == pytest.approx(float(q[2]), rel=1e-5)
    torch.testing.assert_close(mv.rig.center.double(), q / q[2], atol=1e-5, rtol=0)
    assert mv.rig.names == tuple(names[v] for v in order)
    torch.testing.assert_close(mv.rig.cameras.R[0], torch.eye(3), atol=1e-6, rtol=0)
    rel = metric.viewmat.double()[order] @ torch.linalg.inv(metric.viewmat.double()[src])
    torch.testing.assert_close(mv.rig.cameras.R, rel[:, :3, :3].float(), atol=1e-5, rtol=0)
    torch.testing.assert_close(mv.rig.cameras.t * mv.scale, rel[:, :3, 3].float(), atol=1e-5, rtol=0)
    torch.testing.assert_close(mv.rig.cameras.K, crop_intrinsics(metric.K[order].double(), (64, 64), (32, 64)).float())
    gt = torch.stack([resize_center_crop(cap.views[v], (32, 64)) for v in order])
    tol = 0.002 if name in ("n3dv", "f24_aperture5/scene1") else 0.01  # lossless copies / undistorted renders
    assert float((mv.frames - gt).abs().mean()) < tol


def test_crop_intrinsics_follow_resize_center_crop():
    """A ramp image whose value is its own x (or y) pixel coordinate: after resize + centre crop, each
    pixel centre holds the source coordinate that crop_intrinsics maps it to (bilinear keeps ramps)."""
    H, W = 48, 80
    K = torch.tensor([[70.0, 0, 41.0], [0, 66.0, 23.5], [0, 0, 1]], dtype=torch.float64)
    ramp_x = (torch.arange(W, dtype=torch.float64) + 0.5).expand(H, W)
    ramp_y = (torch.arange(H, dtype=torch.float64) + 0.5)[:, None].expand(H, W)
    img = torch.stack([ramp_x / W, ramp_y / H, ramp_x / W], -1)[None].float()  # in [0, 1]: frames are clamped
    for size in [(32, 64), (64, 64), (96, 160)]:
        out = resize_center_crop(img, size)[0].double() * torch.tensor([W, H, W], dtype=torch.float64)
        K2 = crop_intrinsics(K, (H, W), size)
        u = torch.arange(size[1], dtype=torch.float64) + 0.5
        v = torch.arange(size[0], dtype=torch.float64) + 0.5
        x_src = (u - K2[0, 2]) / K2[0, 0] * K[0, 0] + K[0, 2]  # same ray, source pixel coordinate
        y_src = (v - K2[1, 2]) / K2[1, 1] * K[1, 1] + K[1, 2]
        inner = slice(2, -2)
        # exact when upscaling; the antialiased downscale filter wobbles by < 0.1 px, without bias
        ex, ey = out[size[0] // 2, inner, 0] - x_src[inner], out[inner, size[1] // 2, 1] - y_src[inner]
        for e in (ex, ey):
            assert float(e.abs().max()) < 0.1 and abs(float(e.mean())) < 0.005, (size, e)


def test_scale_falls_back_to_bounds_for_parallel_cameras():
    """Forward-facing rigs (parallel axes) have no look-at point: the LLFF focus depth of the bounds."""
    K = torch.eye(3, dtype=torch.float64)
    R = torch.eye(3, dtype=torch.float64).repeat(3, 1, 1)
    t = torch.tensor([[0.0, 0, 0], [-0.3, 0, 0], [0.3, 0, 0]], dtype=torch.float64)
    cams = Camera(K=K.expand(3, 3, 3), R=R, t=t, width=64, height=64)
    assert look_at_point(cams) is None
    rig, s = capture_rig(cams, ("a", "b", "c"), bounds=(1.5, 40.0))
    assert s == pytest.approx(focus_depth(1.5, 40.0)) and s == pytest.approx(1 / (0.25 / 1.35 + 0.75 / 200))
    torch.testing.assert_close(rig.center, torch.tensor([0.0, 0.0, 1.0]))
    torch.testing.assert_close(rig.cameras.t[1], torch.tensor([-0.3 / s, 0.0, 0.0]).float())
    with pytest.raises(C.CaptureError, match="optical axes do not meet"):
        capture_rig(cams, ("a", "b", "c"), bounds=None)


# ---- errors ------------------------------------------------------------------------------------------

def test_unknown_layout_and_wrong_format(data, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "clip.mp4").write_bytes(b"")
    with pytest.raises(C.CaptureError, match=r"my/empty: not a known multi-view capture layout.*poses_bounds"):
        C.open_capture(tmp_path / "empty", label="my/empty")
    with pytest.raises(C.CaptureError, match=r"n3dv: not a panoptic capture.*calibration_<seq>.json"):
        C.open_capture(data / "n3dv", "panoptic", label="n3dv")
    with pytest.raises(C.CaptureError, match="format='colmap'"):
        C.open_capture(data / "n3dv", "colmap")


def test_missing_cameras(data, tmp_path):
    n3 = tmp_path / "n3"
    shutil.copytree(data / "n3dv", n3)
    (n3 / "cam02.mp4").unlink()
    with pytest.raises(C.CaptureError, match=r"n3/poses_bounds.npy: 4 camera rows but 3 camXX.mp4 videos"):
        C.open_capture(n3, label="n3")
    rc = tmp_path / "f24_x" / "sc"
    shutil.copytree(data / "f24_aperture5" / "scene1", rc)
    (rc / "videos" / "cam03.mp4").unlink()
    with pytest.raises(C.CaptureError, match=r"camera 'cam03' has no video videos/cam03.mp4"):
        C.open_capture(rc, label="sc")
    pn = tmp_path / "pn"
    shutil.copytree(data / "panoptic", pn)
    shutil.rmtree(pn / "hdVideos")
    (pn / "hdVideos").mkdir()
    with pytest.raises(C.CaptureError, match=r"pn: none of the 5 cameras in calibration_.*has a video"):
        C.open_capture(pn, label="pn")
    with pytest.raises(C.CaptureError, match=r"no view named 'cam9'.*\['cam00', 'cam01'"):
        select(C.open_capture(data / "n3dv"), "cam00,cam9")
    with pytest.raises(C.CaptureError, match=r"1 view\(s\) selected"):
        select(C.open_capture(data / "n3dv"), "cam01")


def test_unsynchronised_frame_counts(data, tmp_path, cap):
    n3 = tmp_path / "n3"
    shutil.copytree(data / "n3dv", n3)
    fx._video(n3 / "cam01.mp4", cap.views[1][:3], cap.fps)
    c = C.open_capture(n3, label="n3")
    with pytest.raises(C.CaptureError, match=r"n3: the views have unequal frame counts \(.*'cam01': 3.*set num_frames"):
        select(c, "", num_frames=0)
    with pytest.raises(C.CaptureError, match=r"hold 3 frames \(cam01 has 3\) but num_frames=5 was asked; "
                                              r"set num_frames <= 1"):
        select(c, "", num_frames=5)
    assert select(c, "-cam01", num_frames=0).indices == (0, 1, 2, 3, 4)  # the others are in sync
    dy = tmp_path / "dy"
    shutil.copytree(data / "dycheck", dy)
    meta = json.loads((dy / "dataset.json").read_text())
    meta["ids"].remove("2_00003")
    (dy / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(C.CaptureError, match=r"dy: view cam2 has no frame at index 3.*frames at 0..2, 4..4"):
        select(C.open_capture(dy, label="dy"), "cam1,cam2", num_frames=5)


def test_moving_cameras_are_refused_or_dropped(data):
    c = C.open_capture(data / "dycheck", label="dy")
    with pytest.raises(C.CaptureError, match=r"dy: camera\(s\) move during the selected frames \(cam0: 0.00 deg, "
                                              r"0.2 m\).*views='cam1,cam2'"):
        select(c, "cam0,cam1,cam2", num_frames=5)
    with pytest.warns(UserWarning, match="leaving out moving camera"):
        sel = select(c, "cam0,cam1,cam2", num_frames=5, moving="drop")
    assert sel.names == ("cam1", "cam2")
    assert select(c, "cam0,cam1", num_frames=1).names == ("cam0", "cam1")  # one frame: nothing moves


def test_mixed_frame_rates_are_refused(data, tmp_path, cap):
    pn = tmp_path / "pn"
    shutil.copytree(data / "panoptic", pn)
    (pn / "vgaVideos").mkdir()
    fx._video(pn / "vgaVideos" / "vga_01_01.mp4", torch.zeros(5, 48, 64, 3), 25.0)
    c = C.open_capture(pn, label="pn")
    assert c.default == ("00_00", "00_01", "00_02", "00_03")
    with pytest.raises(C.CaptureError, match=r"different frame rates.*'01_01': 25.0"):
        select(c, "00_00,01_01", num_frames=5)


def test_own_scene_format_reads_back(tmp_path, cap):
    """A folder in this pack's training format (your own calibrated rig, or convert's output) is a capture."""
    from comfyui_full4d.training import dataset as ds

    ds.write_synthetic_scene(tmp_path / "own", cap, depth=False)
    c = C.open_capture(tmp_path / "own", label="own")
    assert c.format == "full4d" and c.names == ("cam00", "cam01", "cam02", "cam03")
    metric = cap.metric_cameras
    pts = _points(metric)
    for v, view in enumerate(c.views):
        _same_cameras(view, metric[v], pts)
    mv = C.load_multiview(tmp_path / "own", views="cam03,cam00", num_frames=5, size=(64, 64))
    rel = metric.viewmat.double()[[3, 0]] @ torch.linalg.inv(metric.viewmat.double()[3])
    torch.testing.assert_close(mv.rig.cameras.t * mv.scale, rel[:, :3, 3].float(), atol=1e-5, rtol=0)
    assert float((mv.frames - cap.views[[3, 0]]).abs().max()) <= 0.5 / 255 + 1e-6
    (tmp_path / "own" / "cam01.mp4").unlink()
    with pytest.raises(C.CaptureError, match=r"own/cameras.json: cameras\[1\].video: camera 'cam01'"):
        C.open_capture(tmp_path / "own", label="own")


@pytest.mark.parametrize("name", ["n3dv", "dycheck"])
def test_frames_are_read_by_index_from_videos_and_images(data, cap, name):
    """Frames 2 and 4 only (a video seeks to the keyframe before frame 2; images are read by index)."""
    c = C.open_capture(data / name)
    view = c.views[1]
    frames = torch.stack(list(view.frames.read([2, 4])))
    tol = 0.5 / 255 + 1e-6 if name == "n3dv" else 0.02  # lossless video / distorted PNG vs pinhole render
    assert float((frames - cap.views[1, [2, 4]]).abs().mean()) < tol
    with pytest.raises(C.CaptureError, match="end.? before frame 7"):
        list(view.frames.read([3, 7]))
