"""Rig presets, validation and the App. B interpolation (SPEC 3, 7) against hand-written formulas."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from comfyui_full4d.geometry.cameras import Camera, Rig, intrinsics_from_fov
from comfyui_full4d.geometry.rig import (append_load3d, arc_rig, custom_rig, interpolate_rig, interpolate_rig_cameras,
                                paper6_rig, ring_rig, validate_rig)

W, H = 160, 96
K = intrinsics_from_fov(50.0, W, H)


def _azimuth(rig_or_C):
    C = rig_or_C.cameras.center.double() if isinstance(rig_or_C, Rig) else rig_or_C
    d = C - C.mean(0)
    return torch.atan2(d[:, 2], d[:, 0])


def _hand_periodic_spline(P: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Natural-form periodic cubic spline with uniform knots, solved by hand:
    M_{k-1} + 4 M_k + M_{k+1} = 6 / h^2 (P_{k+1} - 2 P_k + P_{k-1}) (indices mod V)."""
    V, h = len(P), 1.0 / len(P)
    A = np.zeros((V, V))
    for k in range(V):
        A[k, (k - 1) % V] += 1
        A[k, k] += 4
        A[k, (k + 1) % V] += 1
    rhs = 6 / h ** 2 * (np.roll(P, -1, 0) - 2 * P + np.roll(P, 1, 0))
    M = np.linalg.solve(A, rhs)
    k = np.minimum((s / h).astype(int), V - 1)
    a, b = k * h, (k + 1) * h
    P0, P1, M0, M1 = P[k], P[(k + 1) % V], M[k], M[(k + 1) % V]
    c = lambda x: x[:, None]  # noqa: E731
    return (M0 * c((b - s) ** 3) + M1 * c((s - a) ** 3)) / (6 * h) + (P0 / h - M0 * h / 6) * c(b - s) \
        + (P1 / h - M1 * h / 6) * c(s - a)


def _hand_slerp(R0: np.ndarray, R1: np.ndarray, u: float) -> np.ndarray:
    """R0 exp(u log(R0^T R1)) with Rodrigues' formula (the shortest-arc geodesic)."""
    D = R0.T @ R1
    ang = math.acos(max(-1.0, min(1.0, (np.trace(D) - 1) / 2)))
    if ang < 1e-12:
        return R0
    axis = np.array([D[2, 1] - D[1, 2], D[0, 2] - D[2, 0], D[1, 0] - D[0, 1]]) / (2 * math.sin(ang))
    Kx = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = u * ang
    return R0 @ (np.eye(3) + math.sin(a) * Kx + (1 - math.cos(a)) * Kx @ Kx)


def _irregular_rig():
    spec = [{"eye": [0.7, -0.1, 0.4]}, {"eye": [0.9, -0.3, 1.6]}, {"eye": [-0.2, 0.1, 2.1]},
            {"eye": [-0.8, -0.2, 0.9], "target": [0.0, 0.1, 1.1]}]
    return custom_rig(json.dumps(spec), K, W, H)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_interpolation_matches_hand_spline_and_slerp(dtype):
    rig = _irregular_rig()
    R, t = rig.cameras.R.to(dtype), rig.cameras.t.to(dtype)
    n = 50
    R_out, t_out = interpolate_rig(R, t, n)
    assert R_out.shape == (n, 3, 3) and t_out.shape == (n, 3) and R_out.dtype == dtype and t_out.dtype == dtype
    order = torch.argsort(_azimuth(rig))
    Rs = R.double()[order].numpy()
    C = -(R.double().transpose(1, 2) @ t.double()[..., None])[..., 0][order].numpy()
    V, s = len(order), np.arange(n) / n
    C_out = -(R_out.double().transpose(1, 2) @ t_out.double()[..., None])[..., 0].numpy()
    tol = 1e-5 if dtype == torch.float32 else 1e-7  # float32 keys are orthonormal to ~1e-8
    np.testing.assert_allclose(C_out, _hand_periodic_spline(C, s), atol=tol * 10)
    for i in range(n):
        k = min(int(s[i] * V), V - 1)
        expect = _hand_slerp(Rs[k], Rs[(k + 1) % V], s[i] * V - k)
        np.testing.assert_allclose(R_out[i].double().numpy(), expect, atol=tol * 10)
    # orthonormal, det 1
    eye = torch.eye(3, dtype=torch.float64).expand(n, 3, 3)
    torch.testing.assert_close(R_out.double() @ R_out.double().transpose(1, 2), eye, atol=tol, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R_out.double()), torch.ones(n, dtype=torch.float64), atol=tol, rtol=0)


def test_passes_through_keys_sample0_first_sorted_and_order_free():
    rig = ring_rig(6, K, W, H, radius=1.3, elevation_deg=20)
    V, per = 6, 7
    R_out, t_out = interpolate_rig(rig.cameras.R, rig.cameras.t, V * per)
    order = torch.argsort(_azimuth(rig))
    assert torch.equal(R_out[::per], rig.cameras.R[order]) and torch.equal(t_out[::per], rig.cameras.t[order])
    perm = torch.tensor([3, 1, 5, 0, 2, 4])
    R2, t2 = interpolate_rig(rig.cameras.R[perm], rig.cameras.t[perm], V * per)
    assert torch.equal(R_out, R2) and torch.equal(t_out, t2)


def test_closed_and_c2_numerically():
    """Finite differences of the centres: value, first and second derivative continuous at every
    knot and across the closing knot (s = 1 -> 0)."""
    rig = _irregular_rig()
    V, per = rig.num_views, 400
    n = V * per
    R_out, t_out = interpolate_rig(rig.cameras.R.double(), rig.cameras.t.double(), n)
    C = -(R_out.transpose(1, 2) @ t_out[..., None])[..., 0]
    h = 1.0 / n
    for k in range(V):
        i = k * per
        left, mid, right = C[(i - 2) % n], C[i], C[(i + 2) % n]
        l1, r1 = C[(i - 1) % n], C[(i + 1) % n]
        d1_left, d1_right = (mid - l1) / h, (r1 - mid) / h
        d2_left, d2_right = (mid - 2 * l1 + left) / h ** 2, (right - 2 * r1 + mid) / h ** 2
        scale1, scale2 = d1_left.norm() + 1, d2_left.norm() + 1
        assert (d1_left - d1_right).norm() < 0.05 * scale1  # C1 up to O(h * C'')
        assert (d2_left - d2_right).norm() < 0.05 * scale2  # C2 up to O(h * C''')
    assert (C[-1] - C[0]).norm() < 1e-2  # closed: the last sample is one step before the first


def test_interpolate_errors_and_rig_helper():
    rig = ring_rig(4, K, W, H)
    with pytest.raises(ValueError, match="R must be"):
        interpolate_rig(rig.cameras.R[0], rig.cameras.t)
    with pytest.raises(ValueError, match="t must be"):
        interpolate_rig(rig.cameras.R, rig.cameras.t[:2])
    with pytest.raises(ValueError, match="at least 2"):
        interpolate_rig(rig.cameras.R[:1], rig.cameras.t[:1])
    orbit = interpolate_rig_cameras(rig, 16)
    assert orbit.num_views == 16 and orbit.cameras.K.shape == (16, 3, 3)
    order = torch.argsort(_azimuth(rig))
    assert torch.equal(orbit.cameras.R[0], rig.cameras.R[order[0]])


def test_presets_geometry():
    p6 = validate_rig(paper6_rig(K, W, H))
    az = torch.sort(_azimuth(p6)).values
    torch.testing.assert_close(torch.diff(az), torch.full((5,), math.pi / 3, dtype=torch.float64), atol=1e-5, rtol=0)
    arc = validate_rig(arc_rig(4, 90.0, K, W, H, radius=1.0))
    d = arc.cameras.center - arc.center  # azimuth from the source direction (0, 0, -1), towards +x
    phi = torch.rad2deg(torch.atan2(d[:, 0], -d[:, 2]))
    torch.testing.assert_close(phi, torch.tensor([0.0, 30.0, 60.0, 90.0]), atol=1e-4, rtol=0)
    assert torch.equal(arc.cameras.R[0], torch.eye(3))


def test_custom_schema_and_errors():
    spec = [{"eye": [1, 0, 1], "name": "right", "fov_y_deg": 30}, {"eye": [0, -1, 1], "target": [0, 0, 1.2]}]
    rig = custom_rig(json.dumps(spec), K, W, H)
    assert rig.names == ("source", "right", "custom2") and rig.num_views == 3
    torch.testing.assert_close(rig.cameras.K[1], intrinsics_from_fov(30.0, W, H))
    torch.testing.assert_close(rig.cameras.center[1], torch.tensor([1.0, 0.0, 1.0]))
    fwd = torch.tensor([0.0, 1.0, 0.2]) / math.sqrt(1.04)
    torch.testing.assert_close(rig.cameras.R[2, 2], fwd)
    for bad, msg in [("[", "does not parse"), ("[]", "non-empty"), ('[{"target": [0,0,1]}]', "entry 0"),
                     ('[{"eye": [1, 0]}]', "list of 3"), ('[{"eye": [0, 0, 1]}]', "eye equals target"),
                     ('[{"eye": [1, 0, 1], "fov_y_deg": 200}]', "fov_y_deg")]:
        with pytest.raises(ValueError, match=msg):
            custom_rig(bad, K, W, H)


def test_validation_errors():
    with pytest.raises(ValueError, match="at least 2"):
        validate_rig(Rig(cameras=Camera(K=K[None], R=torch.eye(3)[None], t=torch.zeros(1, 3), width=W, height=H)))
    with pytest.raises(ValueError, match="coincide"):
        validate_rig(custom_rig('[{"eye": [1, 0, 1]}, {"eye": [1, 0, 1]}]', K, W, H))
    with pytest.raises(ValueError, match="behind"):
        validate_rig(custom_rig('[{"eye": [1, 0, 1], "target": [2, 0, 1]}]', K, W, H))
    r = ring_rig(3, K, W, H)
    R = r.cameras.R.clone()
    R[1] *= 1.1
    with pytest.raises(ValueError, match="orthonormal"):
        validate_rig(Rig(cameras=Camera(K=r.cameras.K, R=R, t=r.cameras.t, width=W, height=H)))
    R = r.cameras.R.clone()
    R[2] = -R[2]
    with pytest.raises(ValueError, match="det"):
        validate_rig(Rig(cameras=Camera(K=r.cameras.K, R=R, t=r.cameras.t, width=W, height=H)))


def test_append_load3d_places_camera():
    info = {"position": {"x": 0.0, "y": 0.0, "z": 1.0}, "target": {"x": 0.0, "y": 0.0, "z": -1.0},
            "zoom": 1, "cameraType": "perspective"}
    rig = append_load3d(ring_rig(3, K, W, H), [info])
    assert rig.num_views == 4 and rig.names[-1] == "load3d1"
    # three.js z = +1 is behind the source (our z = -1), looking at our z = +1: forward = +z
    torch.testing.assert_close(rig.cameras.center[3], torch.tensor([0.0, 0.0, -1.0]))
    torch.testing.assert_close(rig.cameras.R[3], torch.eye(3))
    validate_rig(rig)


def test_node_camera_rig_and_interpolate(comfy_host, artifacts):
    from comfyui_full4d.media.synthetic import make_capture
    cap = make_capture(num_views=4, num_frames=1, height=48, width=80)
    cls = comfy_host.node("Full4DCameraRig")
    base = dict(preset="ring", num_views=6, radius=1.0, elevation=15.0, arc_span=90.0, custom_json="",
                width=160, height=96, fov=50.0)
    info = {"position": {"x": 0.5, "y": 0.3, "z": 0.2}, "target": {"x": 0.0, "y": 0.0, "z": -1.0},
            "zoom": 1, "cameraType": "perspective"}
    rig, plot = cls.execute(**base, geometry=cap.geometry(), source=cap.source, camera_1=info).result
    assert rig.num_views == 7 and rig.cameras.width == 80  # geometry's size and K win
    torch.testing.assert_close(rig.cameras.K[0], cap.geometry().K)
    ref = ring_rig(6, cap.geometry().K, 80, 48, 1.0, 15.0)
    assert torch.equal(rig.cameras.R[:6], ref.cameras.R)
    assert plot.shape[0] == 1 and plot.shape[-1] == 3 and plot.std() > 0.01
    from PIL import Image
    Image.fromarray((plot[0].numpy() * 255).astype("uint8")).save(artifacts / "rig_plot.png")
    rig2, _ = cls.execute(**{**base, "preset": "arc", "num_views": 3}).result
    assert rig2.num_views == 3 and rig2.cameras.width == 160
    with pytest.raises(ValueError, match="custom rig"):
        cls.execute(**{**base, "preset": "custom", "custom_json": "[]"})
    orbit = comfy_host.node("Full4DInterpolateRig").execute(rig=rig, n=30).result[0]
    assert orbit.num_views == 30
    R, t = interpolate_rig(rig.cameras.R, rig.cameras.t, 30)
    assert torch.equal(orbit.cameras.R, R) and torch.equal(orbit.cameras.t, t)


def test_plot_axes():
    """Top-down panel: +z (towards the scene) is up, so the source (white) sits below the scene
    centre (yellow); side panel: +z is right, so the source sits left of it. A ring camera at
    elevation 40 is above the centre in the side panel (world up = -y is up)."""
    from comfyui_full4d.geometry.rig_plot import plot_rig
    rig = custom_rig('[{"eye": [0.0, -0.64, 1.77]}]', K, W, H)  # behind the centre, above it
    img = plot_rig(rig, size=128)[0]
    top, side = img[:, :128], img[:, 130:]

    def where(panel, rgb):
        m = ((panel - torch.tensor(rgb)).abs() < 0.02).all(-1)
        ij = m.nonzero().float()
        assert len(ij), f"colour {rgb} not drawn"
        return ij.mean(0)  # (row, col)

    white, yellow = [1.0, 1.0, 1.0], [1.0, 1.0, 0.2]
    assert where(top, white)[0] > where(top, yellow)[0] + 10
    assert where(side, white)[1] < where(side, yellow)[1] - 10
    cam1 = ((side - side[0, 0]).abs().sum(-1) > 0.1) & ~((side - torch.tensor(white)).abs() < 0.02).all(-1)
    rows = cam1.nonzero()[:, 0].float()
    assert rows.min() < where(side, yellow)[0] - 10  # something (camera 1) drawn above the centre
