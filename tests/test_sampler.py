"""Full4DSampler / Full4DAdapterLoader with the tiny Wan2.2 (WAN22) and Wan2.1-class (WAN21) models in-process
through the host's sampler (SPEC 5); every test that takes ``base`` runs on both classes."""

from __future__ import annotations

import pytest
import torch

from fixtures.wan import base, kind, random_rig_inputs  # noqa: F401 (fixtures)

V, T, H, W, STEPS = 3, 2, 4, 6, 3


@pytest.fixture(scope="module")
def C(kind) -> int:
    return kind.channels


@pytest.fixture(scope="module")
def scene(kind):
    rig, src, proj, pos, neg, _ = random_rig_inputs(V, T, H, W, channels=kind.channels)
    src, proj = {"samples": src}, {"samples": proj}
    return rig, src, proj, pos, neg


def _sample(model, scene, **kw):
    from comfyui_full4d.host.sampling import sample_rig

    rig, src, proj, pos, neg = scene
    args = dict(seed=7, steps=STEPS, cfg=5.0, shift=5.0, sampler_name="euler", scheduler="simple")
    args.update(kw)
    return sample_rig(model, pos, neg, src, proj, rig, **args)["samples"]


def _patched(base, name="none (zero-init)"):
    from comfyui_full4d.host.patch import load_full4d

    return load_full4d(base, name)


def _random_adapter_file(base, comfy_host, name: str, seed: int) -> str:
    """An adapter with random (non-zero) camera encoders and projectors saved in models/full4d/."""
    from comfyui_full4d.diffusion.adapter import save_adapter
    from comfyui_full4d.host.patch import make_adapter

    adapter = make_adapter(base)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, p in adapter.named_parameters():
            if "fc2" in pname or "tv_proj" in pname:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    folder = comfy_host.models_dir / "full4d"
    folder.mkdir(parents=True, exist_ok=True)
    save_adapter(adapter, folder / name)
    return name


def test_sample_shapes_progress_and_clean_source(base, scene, C):
    calls = []
    out = _sample(_patched(base), scene, include_source=True, on_step=lambda d, t: calls.append((d, t)))
    assert out.shape == (V, C, T, H, W) and torch.isfinite(out).all()
    assert calls == [(i + 1, STEPS) for i in range(STEPS)]
    src = scene[1]["samples"]
    torch.testing.assert_close(out[0], src[0], rtol=1e-5, atol=1e-5)  # the source row stays clean
    assert (out[1:] - src).abs().max() > 0.1
    targets = _sample(_patched(base), scene)
    assert targets.shape == (V - 1, C, T, H, W)
    torch.testing.assert_close(targets, out[1:], rtol=0, atol=0)


def _recording(model, calls: list):
    """Clone of a patched model whose diffusion model calls are recorded: (x, timestep) as the host hands them
    to ``WanModel.forward`` (a DIFFUSION_MODEL wrapper outside the Full-4D one)."""
    import comfy.patcher_extension

    def spy(executor, x, timestep, *args, **kw):
        calls.append((x.detach().clone(), timestep.detach().clone()))
        return executor(x, timestep, *args, **kw)

    m = model.clone()
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_spy", spy)
    return m


def test_model_sees_the_source_row_clean_at_every_step(base, scene):
    """SPEC 5 as training feeds it (view 0 clean at timestep 0): at every model call the source rows of both
    scenes (cond and uncond) hold exactly the clean source latent in the model's space, whatever the class.
    WAN22 inpaints the known region clean by itself; WAN21 (BaseModel.scale_latent_inpaint) re-noises it to
    the current sigma unless the sampler patches that."""
    calls = []
    m = _recording(_patched(base), calls)
    _sample(m, scene)
    clean = base.model.process_latent_in(scene[1]["samples"])[0]
    assert len(calls) == STEPS
    for x, t in calls:
        assert x.shape[0] == 2 * V  # cond + uncond scenes
        for row in (0, V):
            torch.testing.assert_close(x[row], clean, rtol=0, atol=1e-6)
        assert float(t.max()) > 0  # the targets are being denoised


def test_sampler_is_the_euler_loop_with_a_clean_source(base, scene, comfy_host):
    """Full4DSampler (Euler, CFG 5) against the loop written out over the patched model's ``apply_model``:
    x <- x + (s' - s) (x - D(x)) / s on the target rows, the source row the clean latent (timestep 0 inside the
    Full-4D wrapper) at every evaluation, CFG on the denoised outputs. A random adapter, so the targets read the
    source row through the fused branch (with a zero adapter the views are independent and a noised source
    row would go unseen)."""
    import comfy.model_management
    import comfy.sample
    import comfy.samplers

    from comfyui_full4d.diffusion.adapter import camera_features
    from comfyui_full4d.diffusion.packing import pack_pass
    from comfyui_full4d.host.patch import diffusion_transformer_options, with_rig
    from comfyui_full4d.host.sampling import with_shift

    rig, src, proj, pos, neg = scene
    patched = _patched(base, _random_adapter_file(base, comfy_host, "euler.safetensors", seed=13))
    m = with_rig(with_shift(patched, 5.0), camera_features(rig.cameras.R, rig.cameras.t))
    comfy.model_management.load_models_gpu([m] + m.get_nested_additional_models())
    bm = m.model
    sp = pack_pass(src["samples"], proj["samples"], tuple(range(V)))
    sig = comfy.samplers.calculate_sigmas(m.get_model_object("model_sampling"), "simple", STEPS)
    latent = bm.process_latent_in(sp.latent)
    cond = bm.process_latent_in(sp.cond)
    eps = comfy.sample.prepare_noise(torch.zeros_like(sp.latent), 7)
    x = sig[0] * eps + (1 - sig[0]) * latent
    to = diffusion_transformer_options(m)

    def denoised(x_in, s, text):
        with torch.no_grad():
            return bm.apply_model(x_in, torch.full((V,), float(s)), c_crossattn=text[0][0].expand(V, -1, -1),
                                  time_dim_concat=cond, denoise_mask=sp.mask, transformer_options=to)

    for i in range(STEPS):
        s, s_next = float(sig[i]), float(sig[i + 1])
        x[0] = latent[0]  # the source row, clean
        c, u = denoised(x, s, pos), denoised(x, s, neg)
        d0 = u + 5.0 * (c - u)
        d0[0] = latent[0]
        x = x + (s_next - s) * (x - d0) / s
    ref = bm.process_latent_out(x)[1:]
    torch.testing.assert_close(_sample(patched, scene), ref, rtol=1e-4, atol=1e-4)


def test_zero_adapter_views_are_independent(base, scene):
    """Zero adapter = base model per view: one pass of all views == one pass per view (same noise)."""
    m = _patched(base)
    together = _sample(m, scene, views_per_pass=0)
    apart = _sample(m, scene, views_per_pass=1)
    torch.testing.assert_close(together, apart, rtol=1e-5, atol=1e-5)


def test_nonzero_adapter_couples_views_and_keeps_source(base, scene, comfy_host):
    m = _patched(base, _random_adapter_file(base, comfy_host, "random.safetensors", seed=5))
    together = _sample(m, scene, include_source=True)
    apart = _sample(m, scene, views_per_pass=1, include_source=True)
    zero = _sample(_patched(base), scene, include_source=True)
    torch.testing.assert_close(together[0], scene[1]["samples"][0], rtol=1e-5, atol=1e-5)
    for v in range(1, V):
        assert (together[v] - zero[v]).abs().max() > 1e-3
        assert (together[v] - apart[v]).abs().max() > 1e-4


def test_interrupt_stops_sampling(base, scene):
    import comfy.model_management as mm
    from comfyui_full4d.host.progress import progress

    bar = progress(STEPS)
    seen = []

    def on_step(done, total):
        seen.append(done)
        if done == 1:
            mm.interrupt_current_processing(True)
        bar(done, total)

    try:
        with pytest.raises(mm.InterruptProcessingException):
            _sample(_patched(base), scene, steps=10, on_step=on_step)
    finally:
        mm.interrupt_current_processing(False)
    assert seen == [1]


@pytest.mark.parametrize("bad,match", [
    ("views", "3 views including the source"), ("frames", "differs from the source"), ("source_batch", "one video latent"),
    ("vpp", "views_per_pass"), ("sampler", "sampler_name"),
])
def test_bad_inputs_are_clear_errors(base, scene, bad, match):
    rig, src, proj, pos, neg = scene
    kw = {}
    if bad == "views":
        proj = {"samples": proj["samples"][:1]}
    elif bad == "frames":
        proj = {"samples": proj["samples"][:, :, :1]}
    elif bad == "source_batch":
        src = {"samples": src["samples"].repeat(2, 1, 1, 1, 1)}
    elif bad == "vpp":
        kw["views_per_pass"] = -1
    elif bad == "sampler":
        kw["sampler_name"] = "nope"
    with pytest.raises(ValueError, match=match):
        _sample(_patched(base), (rig, src, proj, pos, neg), **kw)


def test_unpatched_model_is_rejected(base, scene):
    with pytest.raises(ValueError, match="Full4DAdapterLoader"):
        _sample(base, scene)


def test_memory_estimate_names_the_option(base, scene, monkeypatch):
    import comfy.model_management as mm

    monkeypatch.setattr(mm, "get_total_memory", lambda *a, **k: 1024)
    with pytest.raises(ValueError, match="views_per_pass"):
        _sample(_patched(base), scene)


def test_nodes(base, scene, comfy_host, C):
    rig, src, proj, pos, neg = scene
    loader, sampler = comfy_host.node("Full4DAdapterLoader"), comfy_host.node("Full4DSampler")
    patched = loader.execute(model=base, adapter="none (zero-init)").result[0]
    assert base.get_additional_models_with_key("full4d") == [] and patched is not base
    out = sampler.execute(model=patched, positive=pos, negative=neg, source=src, projections=proj, rig=rig, seed=7,
                          steps=2, cfg=5.0, shift=5.0, sampler_name="euler", scheduler="simple", views_per_pass=0,
                          include_source=False).result[0]
    assert out["samples"].shape == (V - 1, C, T, H, W)


@pytest.mark.parametrize("V,k,expect", [(4, 0, [(0, 1, 2, 3)]), (4, 1, [(0, 1), (0, 2), (0, 3)]),
                                        (6, 2, [(0, 1, 2), (0, 3, 4), (0, 5)]), (3, 5, [(0, 1, 2)])])
def test_view_groups_cover_every_target_once(V, k, expect):
    from comfyui_full4d.diffusion.packing import view_groups

    assert view_groups(V, k) == expect


def test_pack_pass_layout():
    from comfyui_full4d.diffusion.packing import pack_pass

    src = torch.randn(1, 48, T, H, W)
    proj = torch.randn(4, 48, T, H, W)
    sp = pack_pass(src, proj, (0, 2, 4))
    assert torch.equal(sp.latent[0], src[0]) and not sp.latent[1:].any()
    assert torch.equal(sp.cond[0], src[0]) and torch.equal(sp.cond[1], proj[1]) and torch.equal(sp.cond[2], proj[3])
    assert sp.mask.shape == (3, 1, T, H, W) and not sp.mask[0].any() and sp.mask[1:].eq(1).all()
    with pytest.raises(ValueError, match="source view 0"):
        pack_pass(src, proj, (1, 2))


def test_host_memory_estimate_counts_condition_half_and_fused_branch(base, scene, monkeypatch, C):
    import comfy.sampler_helpers as sh

    from comfyui_full4d.host.patch import MEMORY_FRAMES_FACTOR

    shapes = []
    orig = sh.estimate_memory

    def spy(model, noise_shape, conds):
        shapes.append(list(noise_shape))
        return orig(model, noise_shape, conds)

    monkeypatch.setattr(sh, "estimate_memory", spy)
    _sample(_patched(base), scene, steps=1)
    assert shapes == [[V, C, T * MEMORY_FRAMES_FACTOR, H, W]]


def test_predict_x0_is_the_base_model_velocity_step_with_zero_adapter(base, scene, C):
    """z0_hat = z_tau - tau * v with v from the base WanModel (condition half and view 0 at timestep 0)."""
    from comfyui_full4d.diffusion.adapter import camera_features
    from comfyui_full4d.host.sampling import predict_x0

    rig, src, proj, pos, _ = scene
    cams = camera_features(rig.cameras.R, rig.cameras.t)
    g = torch.Generator().manual_seed(11)
    z = torch.randn(V - 1, C, T, H, W, generator=g)
    tau = 0.6
    out = predict_x0(_patched(base), pos, src["samples"], proj["samples"], cams, z, tau)
    bm = base.model
    x = bm.process_latent_in(torch.cat([src["samples"], z]))
    cond = bm.process_latent_in(torch.cat([src["samples"], proj["samples"]]))
    t = torch.zeros(V, 2 * T)
    t[1:, :T] = tau * 1000
    with torch.no_grad():
        v = bm.diffusion_model(x, t, pos[0][0].expand(V, -1, -1), time_dim_concat=cond)
    ref = bm.process_latent_out(x - tau * v)[1:]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_ablation_option(base, scene, comfy_host):
    """Tab. 4 variants through the sampler: with a random adapter, turning the fused branch off
    changes the targets; 'no_projection' equals 'full' given zero model-space projections."""
    m = _patched(base, _random_adapter_file(base, comfy_host, "ablate.safetensors", seed=9))
    full = _sample(m, scene)
    assert (full - _sample(m, scene, ablation="no_fused_attention")).abs().max() > 1e-4
    rig, src, proj, pos, neg = scene
    zero = {"samples": m.model.process_latent_out(torch.zeros_like(proj["samples"]))}
    from comfyui_full4d.host.sampling import sample_rig

    manual = sample_rig(m, pos, neg, src, zero, rig, seed=7, steps=STEPS, cfg=5.0, shift=5.0,
                        sampler_name="euler", scheduler="simple")["samples"]
    torch.testing.assert_close(_sample(m, scene, ablation="no_projection"), manual, rtol=0, atol=0)
    with pytest.raises(ValueError, match="ablation"):
        _sample(m, scene, ablation="no_such_switch")


def test_sampler_runs_the_shifted_schedule(base, scene, monkeypatch):
    """SPEC 5: Euler from tau = 1 towards 0 on the shifted schedule ``tau' = s u / (1 + (s - 1) u)``: the
    target-view timesteps the model sees with shift 3 are the shift-1 ones (u) mapped by that formula."""
    import comfyui_full4d.host.patch as patch

    seen = []
    orig = patch.per_frame_timesteps

    def spy(timestep, num_views, frames):
        seen.append(float(timestep[1].max()) / 1000)  # view 1's target half
        return orig(timestep, num_views, frames)

    monkeypatch.setattr(patch, "per_frame_timesteps", spy)
    m = _patched(base)
    _sample(m, scene, shift=1.0)
    plain = sorted(set(seen), reverse=True)
    seen.clear()
    _sample(m, scene, shift=3.0)
    shifted = sorted(set(seen), reverse=True)
    assert len(plain) == STEPS and plain[0] == pytest.approx(1.0)
    assert shifted == pytest.approx([3 * u / (1 + 2 * u) for u in plain], abs=1e-5)


def test_split_passes_condition_on_their_own_cameras(base, scene, comfy_host):
    """views_per_pass < V-1: each pass is conditioned on its own views' cameras. With the fused branch off
    (Tab. 4 'no_fused_attention') the views do not interact, so split passes equal one pass exactly, on a rig
    of distinct cameras and a random (non-zero) camera encoder."""
    m = _patched(base, _random_adapter_file(base, comfy_host, "cams.safetensors", seed=11))
    one = _sample(m, scene, ablation="no_fused_attention")
    split = _sample(m, scene, ablation="no_fused_attention", views_per_pass=1)
    torch.testing.assert_close(split, one, rtol=1e-5, atol=1e-5)
    assert (one - _sample(_patched(base), scene, ablation="no_fused_attention")).abs().max() > 1e-3  # cameras matter


def test_a_pass_is_sampled_as_the_rig_of_its_own_views(base, scene, comfy_host, monkeypatch):
    """RoPE slots (docs/fidelity.md): a view's fused time slot is its index within the pass, so a pass
    (0, 2) is exactly a 2-view rig of cameras 0 and 2, as training saw scenes: source at slot 0, a random
    ordered subset of cameras at slots 1.. (``dataset.draw_clip``). Noise is made identical in every row so
    only the slots and cameras could differ."""
    import comfy.sample

    from comfyui_full4d.geometry.cameras import Rig
    from comfyui_full4d.host.sampling import sample_rig

    def same_noise(latent, seed, noise_inds=None):
        g = torch.Generator().manual_seed(int(seed))
        return torch.randn((1, *latent.shape[1:]), generator=g).expand_as(latent).clone()

    monkeypatch.setattr(comfy.sample, "prepare_noise", same_noise)
    m = _patched(base, _random_adapter_file(base, comfy_host, "slots.safetensors", seed=12))
    rig, src, proj, pos, neg = scene
    args = dict(seed=7, steps=STEPS, cfg=5.0, shift=5.0, sampler_name="euler", scheduler="simple")
    split = sample_rig(m, pos, neg, src, proj, rig, views_per_pass=1, **args)["samples"]
    pair = Rig(cameras=rig.cameras[[0, 2]], center=rig.center)
    alone = sample_rig(m, pos, neg, src, {"samples": proj["samples"][1:2]}, pair, **args)["samples"]
    torch.testing.assert_close(split[1:2], alone, rtol=1e-5, atol=1e-5)
