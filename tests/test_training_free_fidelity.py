"""Training-free sampler rules (issue 22), with the tiny real-class Wan2.2 in-process: the source row of a
cross-view pass stays known for the whole run, and cross-view sharing groups views within one CFG half."""

from __future__ import annotations

import pytest
import torch

from fixtures.wan import load_tiny_wan, random_rig_inputs

V, T, H, W, STEPS = 3, 2, 4, 6, 4


@pytest.fixture(scope="module")
def base(comfy_host):
    return load_tiny_wan()


def test_source_row_is_never_released(base, monkeypatch):
    """Cross-view passes hold the source row; its prediction must be the source latent at every step, also
    after the guided steps end (stop 0.5: the target rows run freely then, the source row never does)."""
    import comfy.sample

    from comfyui_full4d.host.training_free import sample_training_free
    from comfyui_full4d.diffusion.training_free import TrainingFreeConfig

    rig, src, proj, pos, neg, g = random_rig_inputs(V, T, H, W)
    known = torch.rand(V - 1, 1, T, H, W, generator=g)
    rows = []
    real = comfy.sample.sample

    def spy(*a, callback=None, **kw):
        def cb(step, x0, x, total):
            rows.append(x0[0].clone())
            return callback(step, x0, x, total)

        return real(*a, callback=cb, **kw)

    monkeypatch.setattr(comfy.sample, "sample", spy)
    sample_training_free(base, pos, neg, src, proj, known, seed=7, steps=STEPS, cfg=5.0, shift=5.0,
                         sampler_name="euler", scheduler="simple", config=TrainingFreeConfig(stop=0.5, cross_view=True))
    assert len(rows) == STEPS
    ref = base.model.process_latent_in(src[0])
    errs = [float((x0.float() - ref.float()).abs().max()) for x0 in rows]  # (x0 is on the host's device/dtype)
    assert max(errs) < 1e-5, errs


def test_cross_view_scenes_stay_within_one_cfg_half(base):
    """The host stacks cond then uncond rows ([c0 c1 c2 | u0 u1 u2]); sharing must group rows j*V..j*V+V-1
    only: a batch of two scenes with different latents and text equals the two scenes run separately."""
    from comfyui_full4d.host.patch import diffusion_transformer_options
    from comfyui_full4d.host.training_free import with_cross_view

    g = torch.Generator().manual_seed(2)
    x = torch.randn(2 * V, 48, T, H, W, generator=g)
    t = torch.full((2 * V,), 600.0)
    ctx = torch.cat([torch.randn(1, 7, 4096, generator=g).expand(V, -1, -1),
                     torch.randn(1, 7, 4096, generator=g).expand(V, -1, -1)])
    dm = base.model.diffusion_model
    opts = diffusion_transformer_options(with_cross_view(base, V))
    with torch.no_grad():
        both = dm(x, t, ctx, transformer_options=opts)
        cond = dm(x[:V], t[:V], ctx[:V], transformer_options=opts)
        uncond = dm(x[V:], t[V:], ctx[V:], transformer_options=opts)
    torch.testing.assert_close(both, torch.cat([cond, uncond]), rtol=1e-5, atol=1e-5)


# (stop, steps, guided steps) worked by hand: round(stop * steps), never a truncation (no .5 ties here)
GUIDED = [(0.7, 4, 3), (0.3, 4, 1), (0.37, 10, 4), (0.62, 4, 2), (0.83, 6, 5), (0.06, 10, 1), (0.8, 4, 3),
          (0.0, 4, 0), (1.0, 4, 4)]


@pytest.mark.parametrize("stop,n,guided", GUIDED)
def test_stop_fraction_rounds_the_guided_steps(stop, n, guided):
    """The first round(stop * steps) steps are guided: replacement is active at a model evaluation with
    sigma > stop_sigma, so the guided steps are the schedule's sigmas (bar the final 0) above it. 0.7 of 4 steps
    is 3 guided steps, not the 2 a truncation gives."""
    from comfyui_full4d.diffusion.training_free import stop_sigma

    sigmas = torch.linspace(1.0, 0.0, n + 1) ** 1.5  # any descending schedule ending at 0
    s = stop_sigma(sigmas, stop)
    assert int((sigmas[:-1] > s).sum()) == guided
