"""Densification: clone/split/prune rules, params and Adam moments resized together, the cap is never exceeded."""

import math

import torch

from comfyui_full4d.gaussians import DensifyConfig, DensifyState, Gaussians, densify_step
from comfyui_full4d.gaussians.densify import remove, split
from comfyui_full4d.gaussians.model import GAUSSIAN_KEYS


def _setup(n, opacity=0.5, log_scale=-5.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    d = {"means": torch.randn(n, 3, generator=g), "quats": torch.randn(n, 4, generator=g),
         "log_scales": torch.full((n, 3), log_scale), "opacity_logits": torch.full((n,), math.log(opacity / (1 - opacity))),
         "sh_dc": torch.randn(n, 1, 3, generator=g), "sh_rest": torch.randn(n, 3, 3, generator=g)}
    gs = Gaussians.from_dict({k: torch.nn.Parameter(v) for k, v in d.items()})
    opts = {k: torch.optim.Adam([getattr(gs, k)], lr=1e-3) for k in GAUSSIAN_KEYS}
    loss = sum((getattr(gs, k) ** 2).sum() for k in GAUSSIAN_KEYS)  # one step: non-zero moments
    loss.backward()
    for o in opts.values():
        o.step()
    return gs, opts


def _check_moments(gs, opts):
    for k in GAUSSIAN_KEYS:
        p = getattr(gs, k)
        assert opts[k].param_groups[0]["params"][0] is p
        st = opts[k].state[p]
        assert st["exp_avg"].shape == p.shape and st["exp_avg_sq"].shape == p.shape


def test_clone_small_split_large_and_moments():
    gs, opts = _setup(6)
    with torch.no_grad():
        gs.log_scales[3:] = 0.0  # large: exp(0) = 1 > 0.01 * extent 10
    old_means = gs.means.detach().clone()
    old_m = opts["means"].state[gs.means]["exp_avg"].clone()
    st = DensifyState(6)
    st.accumulate(torch.tensor([1.0, 0, 0, 1.0, 0, 0]), torch.ones(6, dtype=torch.bool))
    cfg = DensifyConfig(grad_threshold=0.5, min_opacity=0.0)
    g2, info = densify_step(gs, opts, st, cfg, extent=10.0)
    assert info["cloned"] == 1 and info["split"] == 1 and len(g2) == 6 + 1 + 1
    _check_moments(g2, opts)
    # order: kept originals (all but the split one), clone of 0, two children of 3
    keep = [0, 1, 2, 4, 5]
    assert torch.equal(g2.means[:5], old_means[keep])
    assert torch.equal(g2.means[5], old_means[0])
    m = opts["means"].state[g2.means]["exp_avg"]
    assert torch.equal(m[:5], old_m[keep]) and torch.all(m[5:] == 0)
    torch.testing.assert_close(g2.log_scales[6:], torch.full((2, 3), -math.log(1.6)))
    assert len(st.grad2d) == 8 and st.grad2d.sum() == 0


def test_split_samples_within_the_gaussian():
    gs, opts = _setup(1, log_scale=math.log(0.1))
    g2 = split(gs, opts, torch.tensor([0]), torch.Generator().manual_seed(0))
    assert len(g2) == 2
    d = (g2.means - gs.means.detach()).norm(dim=-1)
    assert torch.all(d < 0.1 * 5) and torch.all(d > 0)


def test_spec_budget_defaults():
    """SPEC 6: never above 120,000 Gaussians; above 80,000, prune opacity < 0.015."""
    cfg = DensifyConfig()
    assert (cfg.max_gaussians, cfg.prune_above, cfg.prune_opacity) == (120_000, 80_000, 0.015)


def test_prune_rule():
    gs, opts = _setup(10)
    with torch.no_grad():
        gs.opacity_logits[:3] = math.log(0.01 / 0.99)  # between 0.005 and 0.015
        gs.opacity_logits[3] = math.log(0.001 / 0.999)  # below 0.005
    st = DensifyState(10)
    cfg = DensifyConfig(prune_above=100, min_opacity=0.005)  # below the 80k-style threshold: only < 0.005 go
    g2, info = densify_step(gs, opts, st, cfg, extent=1.0)
    assert len(g2) == 9 and info["pruned"] == 1
    _check_moments(g2, opts)
    cfg = DensifyConfig(prune_above=5, min_opacity=0.005)  # above: < 0.015 go
    g3, info = densify_step(g2, opts, DensifyState(9), cfg, extent=1.0)
    assert len(g3) == 6 and bool((torch.sigmoid(g3.opacity_logits) >= 0.015).all())


def test_cap_never_exceeded_highest_gradients_win():
    torch.manual_seed(0)
    gs, opts = _setup(50)
    cap = 60
    cfg = DensifyConfig(grad_threshold=0.1, max_gaussians=cap, min_opacity=0.0, prune_above=10**9)
    for round_ in range(5):
        st = DensifyState(len(gs))
        grads = torch.rand(len(gs)) + 0.2  # everything wants to densify
        st.accumulate(grads, torch.ones(len(gs), dtype=torch.bool))
        before = gs.means.detach().clone()
        gs, info = densify_step(gs, opts, st, cfg, extent=1e6)  # all small: clones
        assert len(gs) <= cap
        if round_ == 0:
            top = torch.argsort(grads, descending=True)[:10]
            assert torch.equal(gs.means[50:], before[top])  # clones of the 10 highest gradients
    assert len(gs) == cap
    _check_moments(gs, opts)


def test_remove_keeps_rows():
    gs, opts = _setup(5)
    keep = torch.tensor([True, False, True, False, True])
    g2 = remove(gs, opts, keep)
    assert torch.equal(g2.sh_rest, gs.sh_rest.detach()[keep])
    _check_moments(g2, opts)


def test_due():
    cfg = DensifyConfig(start=100, stop=300, interval=100)
    assert [i for i in range(0, 400) if cfg.due(i)] == [100, 200]
