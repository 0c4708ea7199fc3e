"""FMD (SPEC 8): loss formula against a hand computation, gradients reach the Gaussians through the encoder
and the renderer, none reach the teacher's output (stop-grad on z0_hat)."""

import torch

from comfyui_full4d.geometry.cameras import Camera, intrinsics_from_fov
from comfyui_full4d.gaussians import FMDConfig, fmd_loss
from comfyui_full4d.gaussians.fmd import StandInVelocity, pool_encoder
from comfyui_full4d.gaussians.rasterize import rasterize


def _camera():
    return Camera(K=intrinsics_from_fov(50, 16, 12), R=torch.eye(3), t=torch.zeros(3), width=16, height=12)


def test_formula_matches_hand_computation():
    z = torch.randn(2, 3, 4, 4)
    vel = torch.randn_like(z)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    loss, info = fmd_loss(lambda c: z, lambda f: f, lambda zt, tau, c: vel, _camera(), g1, w=lambda tau: 2.0)
    tau = float(0.02 + 0.96 * torch.rand((), generator=g2))
    eps = torch.randn(z.shape, generator=g2)
    z0 = (1 - tau) * z + tau * eps - tau * vel
    assert abs(info["tau"] - tau) < 1e-12 and 0.02 <= tau <= 0.98
    torch.testing.assert_close(loss, 2.0 * ((z0 - z) ** 2).mean())


def test_gradient_reaches_gaussians_not_teacher():
    torch.manual_seed(0)
    n = 40
    means = (torch.randn(n, 3) * 0.3 + torch.tensor([0.0, 0, 2])).requires_grad_()
    colors = torch.rand(n, 3).requires_grad_()
    quats = torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1)
    scales, opac = torch.full((n, 3), 0.08), torch.full((n,), 0.8)
    teacher_w = torch.tensor(0.5, requires_grad=True)
    seen = {}

    def render(cam):
        rgb, _ = rasterize(means, quats, scales, opac, colors, cam.viewmat, cam.K, cam.width, cam.height)
        return torch.stack([rgb, rgb])  # T = 2

    def velocity(z_tau, tau, cam):
        seen["grad_enabled"] = torch.is_grad_enabled()
        return teacher_w * z_tau

    loss, _ = fmd_loss(render, pool_encoder(4), velocity, _camera(), torch.Generator().manual_seed(0))
    loss.backward()
    assert means.grad is not None and means.grad.abs().sum() > 0
    assert colors.grad is not None and colors.grad.abs().sum() > 0
    assert teacher_w.grad is None  # stop-grad: nothing flows into the teacher
    assert seen["grad_enabled"] is False


def test_standin_teacher_pulls_towards_targets():
    target = torch.randn(1, 3, 2, 2)
    teacher = StandInVelocity(lambda cam: target)
    z = torch.zeros_like(target, requires_grad=True)
    loss, _ = fmd_loss(lambda c: z, lambda f: f, teacher, _camera(), torch.Generator().manual_seed(1))
    torch.testing.assert_close(loss, (target ** 2).mean())  # z0_hat = target exactly
    loss.backward()
    torch.testing.assert_close(z.grad, -2 * target / target.numel())


def test_config_validation():
    import pytest

    with pytest.raises(ValueError, match="tau"):
        FMDConfig(encode_fn=lambda f: f, velocity_fn=lambda z, t, c: z, tau_min=0.9, tau_max=0.1)
