"""Umeyama similarity (geometry/align.py, used by the DA3 alignment of SPEC 6): ``dst ~ s R src + t`` with
``s = trace(D S) / sigma_x^2``, where ``S`` is the reflection guard (``diag(1, 1, -1)`` when the SVD's best
orthogonal fit is a reflection) and ``sigma_x^2`` the variance of the source points.

References: a hand-worked reflected cloud (its best proper rotation is the identity, its scale 12/7, where
``trace(D) / sigma_x^2`` would give 2), and on random clouds SciPy's Kabsch fit (``Rotation.align_vectors``: the
best proper rotation, by its own SVD) followed by the closed-form least-squares scale for that rotation,
``s = sum_i y_i . R x_i / sum_i |x_i|^2`` over the centred points (no trace, no guard in it).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from comfyui_full4d.geometry.align import umeyama


def _kabsch_reference(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """SciPy's best proper rotation, then the least-squares scale and translation given it."""
    mx, my = src.mean(0), dst.mean(0)
    xc, yc = src - mx, dst - my
    rot, _ = Rotation.align_vectors(yc, xc)  # yc ~ R xc, R proper
    R = rot.as_matrix()
    s = float((yc * (xc @ R.T)).sum() / (xc**2).sum())
    return s, R, my - s * R @ mx


def test_reflected_cloud_hand_worked():
    """Axis points (+-3, 0, 0), (0, +-2, 0), (0, 0, +-1) mirrored in z and doubled: sum y.x = 2 (18 + 8 - 2) = 48
    with R = I (the best proper rotation: trace(R^T diag(36, 16, -4)) <= 36 + 16 - 4), sum |x|^2 = 28, so
    s = 48 / 28 = 12/7; the unguarded trace(D) / sigma_x^2 is 2 (the reflection's own scale)."""
    x = torch.tensor([[3.0, 0, 0], [-3, 0, 0], [0, 2, 0], [0, -2, 0], [0, 0, 1], [0, 0, -1]], dtype=torch.float64)
    shift = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    src = x + shift
    dst = 2.0 * x * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64) + torch.tensor([4.0, 0.0, -3.0],
                                                                                       dtype=torch.float64)
    s, R, t = umeyama(src, dst)
    assert s == pytest.approx(12 / 7, rel=1e-12)
    torch.testing.assert_close(R, torch.eye(3, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(t, torch.tensor([4.0, 0.0, -3.0], dtype=torch.float64) - 12 / 7 * shift,
                               rtol=0, atol=1e-12)
    assert abs(torch.det(R).item() - 1.0) < 1e-12


@pytest.mark.parametrize("reflect", [False, True], ids=["rotation", "reflection"])
@pytest.mark.parametrize("seed", range(4))
def test_matches_scipy_kabsch_on_random_clouds(seed, reflect):
    """Noisy similarities of random clouds; with ``reflect`` the target is mirrored, so the guard must act (the
    SVD's orthogonal fit has det -1) and the scale must follow it."""
    g = np.random.default_rng(seed)
    src = g.normal(size=(25, 3)) * np.array([3.0, 1.5, 0.5])  # anisotropic: the guard flips the smallest axis
    R0 = Rotation.random(random_state=seed).as_matrix()
    if reflect:
        R0 = R0 @ np.diag([1.0, 1.0, -1.0])
    s0, t0 = 0.5 + 3 * g.random(), g.normal(size=3)
    dst = s0 * src @ R0.T + t0 + 0.05 * g.normal(size=src.shape)
    s, R, t = umeyama(torch.from_numpy(src), torch.from_numpy(dst))
    s_ref, R_ref, t_ref = _kabsch_reference(src, dst)
    assert s == pytest.approx(s_ref, rel=1e-9)
    np.testing.assert_allclose(R.numpy(), R_ref, rtol=0, atol=1e-9)
    np.testing.assert_allclose(t.numpy(), t_ref, rtol=0, atol=1e-9)
    assert np.linalg.det(R.numpy()) == pytest.approx(1.0, abs=1e-12)
    if not reflect:
        assert s == pytest.approx(s0, rel=0.05)  # the noise is small: the true scale comes back
