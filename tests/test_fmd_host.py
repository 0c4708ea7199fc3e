"""FMD with the host's models (SPEC 8): tiny Wan2.2 VAE as the encoder, the patched tiny WanModel
as the frozen teacher through predict_x0. The gradient must reach the Gaussians."""

from __future__ import annotations

import pytest
import torch

from fixtures.wan import load_tiny_wan, tiny_wan_vae

pytestmark = pytest.mark.server


def test_host_fmd_gradient_reaches_gaussians(comfy_host):
    from comfyui_full4d.gaussians import rasterize
    from comfyui_full4d.gaussians.fmd import fmd_loss
    from comfyui_full4d.gaussians.init import backproject_views
    from comfyui_full4d.host.fmd import host_fmd
    from comfyui_full4d.host.patch import load_full4d
    from comfyui_full4d.synthetic import make_capture

    cap = make_capture(num_views=3, num_frames=5, height=32, width=48)
    vae = tiny_wan_vae()
    model = load_full4d(load_tiny_wan(), "none (zero-init)")
    g = torch.Generator().manual_seed(0)
    positive = [[torch.randn(1, 7, 4096, generator=g), {}]]
    src_lat = vae.encode(cap.source)
    cfg = host_fmd(model, vae, positive, src_lat, cap.source, cap.geometry(), cap.rig.cameras[0])

    cams = cap.metric_cameras
    pts, cols = backproject_views(cap.depth[:, 0], cap.views[:, 0], cams, max_points=1500)
    means = pts.clone().requires_grad_(True)
    colors = cols.clone().requires_grad_(True)
    n = means.shape[0]
    quats = torch.tensor([1.0, 0, 0, 0]).expand(n, 4)
    scales = torch.full((n, 3), 0.02 * cap.scale)
    opac = torch.full((n,), 0.8)

    def render_all(camera):
        rgb, _ = rasterize(means, quats, scales, opac, colors, camera.viewmat, camera.K, camera.width, camera.height)
        return rgb[None].expand(5, -1, -1, -1)  # a static scene: the same frame at every time

    calls = []
    velocity = cfg.velocity_fn

    def counting_velocity(z_tau, tau, camera):
        calls.append((tuple(z_tau.shape), tau))
        return velocity(z_tau, tau, camera)

    loss, info = fmd_loss(render_all, cfg.encode_fn, counting_velocity, cams[1], g)
    loss.backward()
    assert calls and calls[0][0] == tuple(src_lat.shape)
    assert torch.isfinite(loss) and float(loss) > 0
    assert means.grad is not None and torch.isfinite(means.grad).all() and means.grad.abs().sum() > 0
    assert colors.grad is not None and colors.grad.abs().sum() > 0
