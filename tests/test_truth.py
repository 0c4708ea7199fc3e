"""Ground truth for scoring (issue 30): ``render_truth`` uses exactly the cameras and times of a fitted scene's
render (``geometry.rig.render_jobs``), masked PSNR / SSIM, and the side-by-side video layout."""

from __future__ import annotations

import math

import pytest
import torch

from comfyui_full4d.media.grid import stack_videos
from comfyui_full4d.media.metrics import psnr, psnr_masked, ssim, ssim_masked
from comfyui_full4d.media.synthetic import make_capture, render_truth


@pytest.fixture(scope="module")
def cap():
    return make_capture(4, 3, 24, 40, seed=5)


def test_truth_of_the_rig_grid_is_the_capture(cap):
    """The capture's own rig at its own times: render_truth reproduces the rendered views exactly."""
    grid = render_truth(cap.truth, cap.rig, orbit=False, num_frames=3)
    torch.testing.assert_close(grid, cap.view_major, rtol=0, atol=0)


def test_truth_orbit_uses_the_fit_renders_cameras(cap):
    """Orbit sample 0 is the first rig camera in azimuth order at time_start: the source here (azimuth order of
    a ring about its centre starts at the source), and a frozen moment renders that camera at that time."""
    from comfyui_full4d.geometry.rig import interpolate_rig_cameras, render_jobs

    jobs = render_jobs(cap.rig, cap.scale, True, 8, 0.5, 0.5)
    orbit = interpolate_rig_cameras(cap.rig, 8).metric(cap.scale)
    for i, (cam, t) in enumerate(jobs):
        torch.testing.assert_close(cam.R, orbit.R[i])
        torch.testing.assert_close(cam.t, orbit.t[i])
        assert t == pytest.approx(0.5)
    frames = render_truth(cap.truth, cap.rig, orbit=True, num_frames=8, time_start=0.0, time_end=0.0)
    first = render_truth(cap.truth, cap.rig, orbit=False, num_frames=1, time_start=0.0, time_end=0.0)
    k = int(torch.argmin(torch.stack([(cap.rig.metric(cap.scale).center[v] - orbit.center[0]).norm()
                                      for v in range(4)])))
    torch.testing.assert_close(frames[0], first[k], rtol=0, atol=1e-6)


def test_masked_psnr_and_ssim_against_hand_computation():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 16, 20, 3, generator=g), torch.rand(2, 16, 20, 3, generator=g)
    m = torch.zeros(2, 16, 20, dtype=torch.bool)
    m[0, :8] = True  # image 1 has no masked pixel: left out of the mean
    mse = float(((a[0, :8] - b[0, :8]) ** 2).mean())
    assert psnr_masked(a, b, m) == pytest.approx(-10 * math.log10(mse), rel=1e-6)
    full = torch.ones_like(m)
    assert psnr_masked(a, b, full) == pytest.approx(psnr(a, b), rel=1e-12)
    assert ssim_masked(a, b, full) == pytest.approx(ssim(a, b), rel=1e-6)
    assert math.isnan(psnr_masked(a, b, torch.zeros_like(m)))
    b2 = b.clone()
    b2[~m] = a[~m]  # outside the mask the images agree: the masked PSNR must not see it
    assert psnr_masked(a, b2, m) == pytest.approx(psnr_masked(a, b, m))


def test_stack_videos_layout_loops_and_labels():
    a = torch.full((3, 10, 20, 3), 0.2)
    b = torch.full((5, 6, 30, 3), 0.8)
    out = stack_videos([a, b], gap=2)
    assert out.shape == (5, 10 + 2 + 6, 30, 3)
    torch.testing.assert_close(out[4, :10, 5:25], a[1])  # frame 4 of the 3-frame panel is its frame 1; centred
    assert float(out[0, :10, :5].abs().max()) == 0  # the padding is black
    torch.testing.assert_close(out[:, 12:], b)
    side = stack_videos([a, b], ["first", "second"], vertical=False, gap=0)
    assert side.shape == (5, 14 + 10, 50, 3)  # label strips (14 px) above both panels, the taller sets the height
    assert float(side[0, :14, :20].max()) > 0.9  # white label text above panel 1
    with pytest.raises(ValueError, match="panel 2"):
        stack_videos([a, torch.zeros(3, 4)])
