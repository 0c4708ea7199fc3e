"""Camera conversions at the edge: LOAD3D_CAMERA (three.js), OpenGL/Blender c2w, relative poses."""

from __future__ import annotations

import math

import pytest
import torch

from comfyui_full4d.geometry.cameras import (Camera, camera_from_load3d, camera_to_load3d, intrinsics_from_fov, look_at,
                                    opengl_c2w_to_w2c, relative_to, w2c_to_opengl_c2w)
from comfyui_full4d.geometry.rig import append_load3d, ring_rig

W, H = 64, 40
K = intrinsics_from_fov(50.0, W, H)


def _info(p, q, zoom=1):
    return {"position": dict(zip("xyz", p)), "target": dict(zip("xyz", q)), "zoom": zoom, "cameraType": "perspective"}


def test_load3d_axes_by_hand():
    """A three.js camera at (2, 1, 3) looking at (0, 1, 3) looks along three.js -x; in our world
    it sits at (2, -1, -3) and looks along -x, with three.js up (+y) at the top of the image."""
    cam = camera_from_load3d(_info((2.0, 1.0, 3.0), (0.0, 1.0, 3.0)), K, W, H)
    torch.testing.assert_close(cam.center, torch.tensor([2.0, -1.0, -3.0]))
    torch.testing.assert_close(cam.R[2], torch.tensor([-1.0, 0.0, 0.0]))  # forward
    above = cam.R @ torch.tensor([0.0, -2.0, -3.0]) + cam.t  # a point above the target (three.js y = 2)
    assert above[1] < 0


def test_load3d_round_trip_and_zoom():
    infos = [_info((0.3, 0.2, 1.5), (0.0, 0.0, -1.0)), _info((-1.0, 0.5, -0.5), (0.1, -0.2, -1.0), zoom=2)]
    for info in infos:
        cam = camera_from_load3d(info, K, W, H)
        target = torch.tensor([info["target"][a] for a in "xyz"]) * torch.tensor([1, -1, -1])  # our world
        back = camera_to_load3d(cam, target=target)
        for key in ("position", "target"):
            for a in "xyz":
                assert math.isclose(back[key][a], info[key][a], abs_tol=1e-5)
        again = camera_from_load3d({**back, "zoom": info["zoom"]}, K, W, H)
        torch.testing.assert_close(again.R, cam.R, atol=1e-6, rtol=0)
        torch.testing.assert_close(again.t, cam.t, atol=1e-6, rtol=0)
    zoomed = camera_from_load3d(infos[1], K, W, H)
    torch.testing.assert_close(zoomed.K[0, 0], 2 * K[0, 0])
    torch.testing.assert_close(zoomed.K[:2, 2], K[:2, 2])


def test_load3d_errors():
    with pytest.raises(ValueError, match="cameraType"):
        camera_from_load3d({**_info((0, 0, 1), (0, 0, 0)), "cameraType": "orthographic"}, K, W, H)
    with pytest.raises(ValueError, match="position"):
        camera_from_load3d({"target": {"x": 0, "y": 0, "z": 0}}, K, W, H)
    with pytest.raises(ValueError, match="equals target"):
        camera_from_load3d(_info((0, 0, 1), (0, 0, 1)), K, W, H)


def test_load3d_rig_round_trip_gives_the_same_projection():
    """Ring cameras exported to LOAD3D_CAMERA dicts and appended back project identically."""
    from comfyui_full4d.geometry.projection import project_to_cameras
    rig = ring_rig(4, K, W, H)
    infos = [camera_to_load3d(rig.cameras[v], target=rig.center) for v in range(1, 4)]
    back = append_load3d(ring_rig(2, K, W, H), infos)
    torch.testing.assert_close(back.cameras.R[2:], rig.cameras.R[1:], atol=1e-6, rtol=0)
    g = torch.Generator().manual_seed(0)
    images, depth = torch.rand(1, H, W, 3, generator=g), 0.8 + 0.4 * torch.rand(1, H, W, generator=g)
    a = project_to_cameras(images, depth, K, torch.eye(4), rig.cameras.K[1:], rig.cameras.viewmat[1:])
    b = project_to_cameras(images, depth, K, torch.eye(4), back.cameras.K[2:], back.cameras.viewmat[2:])
    diff = (a[1] != b[1]).float().mean()
    assert diff < 0.005  # only pixels whose point sits on a pixel border within float32 noise may flip
    same = a[1] & b[1]
    assert (a[0][same] == b[0][same]).all(-1).float().mean() > 0.99


def test_opengl_conversion():
    """An OpenGL camera at (1, 2, 3) with identity c2w looks down world -z with +y up: in OpenCV
    axes its forward is -z and its down is -y."""
    c2w = torch.eye(4, dtype=torch.float64)
    c2w[:3, 3] = torch.tensor([1.0, 2.0, 3.0])
    w2c = opengl_c2w_to_w2c(c2w)
    cam = Camera.from_viewmat(w2c, K.double(), W, H)
    torch.testing.assert_close(cam.center, torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    torch.testing.assert_close(cam.R[2], torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64))
    torch.testing.assert_close(cam.R[1], torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64))
    R, t = look_at(torch.tensor([[0.5, -0.2, 0.1]]), torch.tensor([[0.0, 0.0, 1.0]]))
    M = Camera(K=K, R=R, t=t, width=W, height=H).viewmat
    torch.testing.assert_close(opengl_c2w_to_w2c(w2c_to_opengl_c2w(M)), M, atol=1e-6, rtol=0)


def test_relative_to_reference():
    rig = ring_rig(4, K, W, H)
    M = rig.cameras.viewmat.double()
    rel = relative_to(M, M[2])
    torch.testing.assert_close(rel[2], torch.eye(4, dtype=torch.float64), atol=1e-12, rtol=0)
    X = torch.tensor([0.3, -0.1, 1.2, 1.0], dtype=torch.float64)  # a world point, in ref-camera coords:
    Xr = M[2] @ X
    torch.testing.assert_close(rel[1] @ Xr, M[1] @ X)
