"""FMD with the host's models (SPEC 8): a tiny VAE as the encoder, the patched tiny WanModel as the frozen
teacher through predict_x0, for both model classes (Wan2.2-TI2V-5B: WAN22 + the Wan2.2 VAE; Wan2.1 class:
WAN21 + the Wan2.1 VAE). The gradient must reach the Gaussians."""

from __future__ import annotations

import pytest
import torch

from fixtures.wan import KINDS, load_tiny_wan, tiny_vae

pytestmark = pytest.mark.server


@pytest.mark.parametrize("kind", list(KINDS))
def test_host_fmd_gradient_reaches_gaussians(comfy_host, kind):
    from comfyui_full4d.gaussians import rasterize
    from comfyui_full4d.gaussians.fmd import fmd_loss
    from comfyui_full4d.gaussians.init import backproject_views
    from comfyui_full4d.host.fmd import host_fmd
    from comfyui_full4d.host.patch import load_full4d
    from comfyui_full4d.media.synthetic import make_capture

    cap = make_capture(num_views=3, num_frames=5, height=32, width=48)
    vae = tiny_vae(kind)
    model = load_full4d(load_tiny_wan(kind=kind), "none (zero-init)")
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


@pytest.mark.parametrize("kind", list(KINDS))
def test_host_fmd_runs_in_the_models_latent_space(comfy_host, monkeypatch, kind):
    """SPEC 8 in the space the model's flow lives in (SPEC 5; training noises process_latent_in(VAE latent)):
    noise, teacher call and loss all in the normalised latent. Reference recomputed here with the host's own
    ``process_latent_in`` and the base WanModel (a zero-init adapter is the base model, SPEC 4), the source
    projected into view 1 with the rig's scene-unit cameras; same generator draws (tau, then eps). The teacher
    gets the camera numbers of (source, camera 1) in scene units (SPEC 4; they matter once the adapter is trained)."""
    import comfyui_full4d.host.fmd as host_fmd_module
    from comfyui_full4d.diffusion.adapter import camera_features
    from comfyui_full4d.geometry.cameras import Rig
    from comfyui_full4d.gaussians.fmd import fmd_loss
    from comfyui_full4d.host.fmd import host_fmd
    from comfyui_full4d.host.patch import load_full4d
    from comfyui_full4d.geometry.projection import project_rig
    from comfyui_full4d.media.synthetic import make_capture

    cap = make_capture(num_views=3, num_frames=5, height=32, width=48)
    vae, base = tiny_vae(kind), load_tiny_wan(kind=kind)
    ctx = torch.randn(1, 7, 4096, generator=torch.Generator().manual_seed(0))
    src_lat = vae.encode(cap.source)
    cfg = host_fmd(load_full4d(base, "none (zero-init)"), vae, [[ctx, {}]], src_lat, cap.source, cap.geometry(),
                   cap.rig.cameras[0])
    seen = {}
    orig_predict = host_fmd_module.predict_x0

    def predict_spy(*args, **kw):
        seen["cams"] = args[4]
        return orig_predict(*args, **kw)

    monkeypatch.setattr(host_fmd_module, "predict_x0", predict_spy)
    frames = cap.views[1]  # (T, H, W, 3): what a perfect 4DGS renders from camera 1
    loss, info = fmd_loss(lambda c: frames, cfg.encode_fn, cfg.velocity_fn, cap.metric_cameras[1],
                          torch.Generator().manual_seed(4))

    g = torch.Generator().manual_seed(4)
    tau = float(0.02 + 0.96 * torch.rand((), generator=g))
    bm = base.model
    z = bm.process_latent_in(vae.encode(frames))  # the model's space
    z_tau = (1 - tau) * z + tau * torch.randn(z.shape, generator=g)
    pair = cap.rig.cameras[[0, 1]]
    renders, _ = project_rig(cap.source, cap.geometry(), Rig(cameras=pair), size=(32, 48))
    cond = bm.process_latent_in(torch.cat([src_lat, vae.encode(renders[1])]))
    x = torch.cat([bm.process_latent_in(src_lat), z_tau])
    Tl = z.shape[2]
    ts = torch.zeros(2, 2 * Tl)
    ts[1, :Tl] = tau * 1000  # condition half and the source view clean (SPEC 5)
    with torch.no_grad():
        v = bm.diffusion_model(x, ts, ctx.expand(2, -1, -1), time_dim_concat=cond)[1:]
    ref = ((z_tau - tau * v) - z).pow(2).mean()
    assert info["tau"] == tau
    torch.testing.assert_close(seen["cams"], camera_features(pair.R, pair.t), rtol=0, atol=1e-5)
    torch.testing.assert_close(loss.detach(), ref, rtol=1e-4, atol=1e-6)
