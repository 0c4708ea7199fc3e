"""The one training loop (``training.train.run``) every stage goes through: the learning-rate schedule, the
weights' moving average, exact resume (with the average) and the VAE / base stages' losses (``training.stages``)
against hand-computed references on tiny plain-torch models."""

from __future__ import annotations

import math
import random

import pytest
import torch
from torch import nn

import comfyui_full4d.training.train as tr
from comfyui_full4d.training import stages


def _cfg(out, steps, **kw):
    return tr.TrainConfig(data="d", out=str(out), steps=steps, save_every=kw.pop("save_every", steps), **kw)


def test_learning_rate_schedule_is_warmup_then_cosine():
    cfg = _cfg("o", 110, lr=1.0, warmup=10, lr_final=0.1)
    lrs = [tr.learning_rate(cfg, s) for s in range(110)]
    assert lrs[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])  # linear warm-up to lr
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))  # half way down the cosine
    assert tr.learning_rate(cfg, 110) == pytest.approx(0.1)  # the floor at the end
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    const = _cfg("o", 50, lr=3e-4)
    assert {tr.learning_rate(const, s) for s in range(50)} == {3e-4}  # defaults: the old constant rate


def test_config_rejects_bad_schedule_and_ema():
    for kw in (dict(warmup=-1), dict(lr_final=1.5), dict(ema=1.0), dict(ema=0.99, fsdp=True)):
        with pytest.raises(ValueError):
            _cfg("o", 5, **kw)


def test_ema_follows_the_formula():
    net = nn.Linear(2, 2)
    ema = tr.EMA(net, 0.9)
    before = {k: v.clone() for k, v in ema.avg.items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    ema.update()
    for k, p in net.named_parameters():
        torch.testing.assert_close(ema.avg[k], 0.9 * before[k] + 0.1 * p.detach())
    sd = ema.state_dict()
    torch.testing.assert_close(sd["weight"], ema.avg["weight"])


class _Quadratic:
    """A stage: fit a linear map to noisy targets drawn from the step's generator."""

    output_name = "model.safetensors"

    def __init__(self, seed=0):
        torch.manual_seed(seed)
        self.trainable = nn.Linear(3, 2)
        self.saved = []

    def loss(self, rng: random.Random, gen: torch.Generator, step: int = 0):
        x = torch.randn(8, 3, generator=gen)
        y = x @ torch.tensor([[1.0, -2.0], [0.5, 0.0], [3.0, 1.0]]) + 0.01 * rng.random()
        return (self.trainable(x) - y).square().mean(), float("nan")

    def save(self, path, state_dict=None):
        from comfyui_full4d.common.io import save_tensors

        sd = self.trainable.state_dict() if state_dict is None else state_dict
        save_tensors(path, sd)
        self.saved.append({k: v.clone() for k, v in sd.items()})


def test_run_learns_writes_the_ema_file_and_resumes_exactly(tmp_path):
    from safetensors.torch import load_file

    cfg = _cfg(tmp_path / "full", 12, lr=0.05, warmup=2, lr_final=0.2, ema=0.8)
    full = _Quadratic()
    res = tr.run(cfg, full)
    assert res["step"] == 12 and res["losses"][-1] < 0.5 * res["losses"][0]
    written = load_file(str(tmp_path / "full" / "model.safetensors"))
    assert not torch.equal(written["weight"], full.trainable.weight.detach())  # the average, not the last weights
    # the same run cut after 5 steps and resumed gives the same weights and the same average
    part_cfg = _cfg(tmp_path / "part", 12, lr=0.05, warmup=2, lr_final=0.2, ema=0.8, save_every=5)

    class Cut(Exception):
        pass

    def cut(done, total):
        if done == 7:  # after the checkpoint of step 5 and two more steps that are lost
            raise Cut

    with pytest.raises(Cut):
        tr.run(part_cfg, _Quadratic(), on_step=cut)
    again = _Quadratic(seed=1)  # other initial weights: everything must come from the checkpoint
    res2 = tr.run(part_cfg, again)
    assert res2["step"] == 12 and len(res2["losses"]) == 7
    for a, b in zip(full.trainable.parameters(), again.trainable.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    resumed = load_file(str(tmp_path / "part" / "model.safetensors"))
    for k in written:
        torch.testing.assert_close(resumed[k], written[k], rtol=0, atol=1e-6)


def test_moments_penalty_is_zero_for_unit_latents_only():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 3, 2, 16, 16, generator=g)
    z = (z - z.mean((0, 2, 3, 4), keepdim=True)) / z.std((0, 2, 3, 4), keepdim=True)
    assert float(stages._moments(z)) == pytest.approx(0.0, abs=1e-10)
    shifted = z * 2 + 1  # mean 1, std 2 in every channel: 1^2 + (2 - 1)^2
    assert float(stages._moments(shifted)) == pytest.approx(2.0, rel=1e-5)


class _Identity:
    """A VAE stand-in: 'encode' averages 2x2 pixels, 'decode' repeats them (a lossy pair with known error)."""

    def __init__(self):
        self.trainable = nn.Linear(1, 1)

    def encode(self, x):
        return nn.functional.avg_pool3d(x, (1, 2, 2)) * self.trainable.weight.squeeze()

    def decode(self, z):
        return z.repeat_interleave(2, -1).repeat_interleave(2, -2)


def test_vae_stage_loss_matches_its_formula(tmp_path):
    from comfyui_full4d.media.video import save_video

    frames = torch.rand(6, 16, 24, 3)
    save_video(frames, tmp_path / "a.mp4", 8.0, lossless=True)
    cfg = _cfg(tmp_path / "o", 1)
    spec = stages.VAELoss(frames=5, crop=(8, 12), batch=2, lambda_dssim=0.0, lambda_moments=0.5, latent_noise=0.0)
    st = stages.VAEStage(cfg, _Identity(), [tmp_path / "a.mp4"], spec)
    x = st.batch(random.Random(3))
    assert x.shape == (2, 3, 5, 8, 12) and float(x.min()) >= -1 and float(x.max()) <= 1
    loss, _ = st.loss(random.Random(3), torch.Generator().manual_seed(0))
    z = st.model.encode(x)
    ref = (st.model.decode(z) - x).abs().mean() + 0.5 * stages._moments(z)
    torch.testing.assert_close(loss, ref)


def test_base_stage_loss_is_rectified_flow(tmp_path):
    from comfyui_full4d.common.io import save_tensors

    z0 = torch.randn(5, 4, 2, 3, 3)
    save_tensors(tmp_path / "lat.safetensors", {"latents": z0})
    latents = stages.LatentSet(tmp_path / "lat.safetensors")

    class Oracle:  # predicts the exact velocity of the clip it is given, knowing z0 and eps
        trainable = nn.Linear(1, 1)

        def velocity(self, x, tau):
            return self.v

    cfg = _cfg(tmp_path / "o", 1, shift=3.0)
    st = stages.BaseStage(cfg, Oracle(), latents, batch=3)
    rng, gen = random.Random(1), torch.Generator().manual_seed(2)
    r = random.Random(1)
    idx = [r.randrange(5) for _ in range(3)]
    g2 = torch.Generator().manual_seed(2)
    eps = torch.randn((3, 4, 2, 3, 3), generator=g2)
    st.model.v = eps - z0[idx]  # the target: loss 0
    loss, tau = st.loss(rng, gen)
    assert float(loss) == pytest.approx(0.0, abs=1e-12) and 0 < tau < 1
    st.model.v = eps - z0[idx] + 0.5
    assert float(st.loss(random.Random(1), torch.Generator().manual_seed(2))[0]) == pytest.approx(0.25, rel=1e-6)
