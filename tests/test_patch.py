"""Full-4D patch on the host's real Wan models (tiny WanModel through the host's loader), SPEC 1, 2, 4, 5: every
test that takes ``base`` runs on the Wan2.2-TI2V-5B class (WAN22, 48 channels) and the Wan2.1 class (WAN21, 16)."""

from __future__ import annotations

import pytest
import torch

from fixtures.wan import KINDS, load_tiny_wan

V, T, H, W = 3, 2, 4, 6


@pytest.fixture(scope="module", params=list(KINDS))
def base(comfy_host, request):
    return load_tiny_wan(kind=request.param)


def _cams(n: int = V, seed: int = 0) -> torch.Tensor:
    from comfyui_full4d.diffusion.adapter import camera_features
    from comfyui_full4d.geometry.cameras import intrinsics_from_fov
    from comfyui_full4d.geometry.rig import ring_rig

    rig = ring_rig(n, intrinsics_from_fov(50, 96, 64), 96, 64, radius=0.8, elevation_deg=10.0)
    return camera_features(rig.cameras.R, rig.cameras.t)


def _patched(base, randomize: dict | None = None, cams=None, skip_zero: bool = True):
    from comfyui_full4d.host.patch import attach_adapter, make_adapter, with_rig

    adapter = make_adapter(base)
    if randomize:
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for name, p in adapter.named_parameters():
                if any(s in name for s in randomize):
                    p.copy_(torch.randn(p.shape, generator=g) * randomize[next(s for s in randomize if s in name)])
    return with_rig(attach_adapter(base, adapter, skip_zero), _cams() if cams is None else cams)


def _inputs(base, scenes: int, seed: int = 0):
    """Random model inputs for ``scenes`` scenes of V views in ``base``'s latent channels; t (B, T) per frame."""
    g = torch.Generator().manual_seed(seed)
    B = scenes * V
    C = base.model.diffusion_model.out_dim
    x = torch.randn(B, C, T, H, W, generator=g)
    c = torch.randn(B, C, T, H, W, generator=g)
    ctx = torch.randn(B, 7, 4096, generator=g)
    t = torch.rand(B, T, generator=g) * 1000
    return x, c, ctx, t


def _t2(t: torch.Tensor) -> torch.Tensor:
    """Independent construction of the (B, 2T) timesteps: condition half 0, view 0 rows 0."""
    out = torch.zeros(t.shape[0], 2 * T)
    for b in range(t.shape[0]):
        if b % V != 0:
            out[b, :T] = t[b]
    return out


def _run(model, x, c, ctx, t, patched_options=True):
    from comfyui_full4d.host.patch import diffusion_transformer_options

    dm = model.model.diffusion_model
    opts = diffusion_transformer_options(model) if patched_options else {}
    with torch.no_grad():
        return dm(x, t, ctx, time_dim_concat=c, transformer_options=opts)


@pytest.mark.parametrize("scenes,skip_zero", [(1, False), (2, False), (2, True)])
def test_zero_adapter_is_the_base_model(base, scenes, skip_zero):
    """SPEC 4 invariant: zero-init adapter == base Wan2.2 for every view (scenes=2: cond+uncond batch),
    with the zero branches computed (skip_zero False) or skipped."""
    x, c, ctx, t = _inputs(base, scenes)
    ref = _run(base, x, c, ctx, _t2(t), patched_options=False)
    patched = _patched(base, skip_zero=skip_zero)
    for tt in (_t2(t), t):  # (B, 2T) passed through; (B, T) from the host's denoise mask expanded
        out = _run(patched, x, c, ctx, tt)
        assert out.shape == (scenes * V, base.model.diffusion_model.out_dim, T, H, W)
        assert (out - ref).abs().max().item() <= 1e-5
    # (B,): one timestep per row, what WAN21 hands the model (no per-frame timesteps from a denoise mask)
    t1 = t[:, 0]
    ref1 = _run(base, x, c, ctx, _t2(t1[:, None].expand(-1, T)), patched_options=False)
    assert (_run(patched, x, c, ctx, t1) - ref1).abs().max().item() <= 1e-5


def test_base_model_untouched_by_patch(base):
    x, c, ctx, t = _inputs(base, 1)
    before = _run(base, x, c, ctx, _t2(t), patched_options=False)
    patched = _patched(base, {"fc2": 0.5, "tv_proj": 0.5})
    _run(patched, x, c, ctx, t)
    after = _run(base, x, c, ctx, _t2(t), patched_options=False)
    assert torch.equal(before, after)
    assert base.get_additional_models_with_key("full4d") == []


def test_nonzero_adapter_changes_every_target_view(base):
    x, c, ctx, t = _inputs(base, 1)
    ref = _run(base, x, c, ctx, _t2(t), patched_options=False)
    out = _run(_patched(base, {"fc2": 0.5, "tv_proj": 0.5}), x, c, ctx, t)
    for v in range(1, V):
        assert (out[v] - ref[v]).abs().max().item() > 1e-3, f"view {v} unchanged"


def test_scenes_in_one_batch_do_not_mix(base):
    """cond and uncond (two scenes stacked by the host) give what each scene gives alone."""
    patched = _patched(base, {"fc2": 0.5, "tv_proj": 0.5})
    x, c, ctx, t = _inputs(base, 2)
    both = _run(patched, x, c, ctx, t)
    for j in range(2):
        s = slice(j * V, (j + 1) * V)
        alone = _run(patched, x[s], c[s], ctx[s], t[s])
        torch.testing.assert_close(both[s], alone, rtol=1e-5, atol=1e-5)


def test_camera_embedding_is_per_view(base):
    """Only the camera encoder non-zero, fused projector zero: a view's output depends on its camera only."""
    x, c, ctx, t = _inputs(base, 1)
    cams = _cams()
    out = _run(_patched(base, {"fc2": 0.5}, cams), x, c, ctx, t)
    cams2 = cams.clone()
    cams2[2, 3] += 0.5  # move camera 2
    out2 = _run(_patched(base, {"fc2": 0.5}, cams2), x, c, ctx, t)
    assert torch.equal(out[:2], out2[:2])
    assert (out[2] - out2[2]).abs().max().item() > 1e-4


def test_batch_that_is_not_whole_scenes_is_rejected(base):
    x, c, ctx, t = _inputs(base, 1)
    with pytest.raises(ValueError, match="whole scenes"):
        _run(_patched(base), x[:2], c[:2], ctx[:2], t[:2])


def test_unrigged_patched_model_fails_clearly(base):
    from comfyui_full4d.host.patch import attach_adapter, diffusion_transformer_options, make_adapter

    m = attach_adapter(base, make_adapter(base))
    x, c, ctx, t = _inputs(base, 1)
    with pytest.raises(ValueError, match="Full4DSampler"):
        with torch.no_grad():
            m.model.diffusion_model(x, t, ctx, time_dim_concat=c, transformer_options=diffusion_transformer_options(m))


def test_adapter_for_another_model_size_is_rejected(base, tmp_path):
    from comfyui_full4d.diffusion.adapter import AdapterConfig, Full4DAdapter, save_adapter
    from comfyui_full4d.host.patch import attach_adapter, make_adapter

    other = Full4DAdapter(AdapterConfig(dim=256, num_heads=2, num_blocks=2, cam_hidden=8)).reset_parameters()
    with pytest.raises(ValueError, match="does not fit"):
        attach_adapter(base, other)
    save_adapter(other, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="another model size"):
        make_adapter(base, str(tmp_path / "other.safetensors"))


def test_tiny_vae_fixture_has_wan22_geometry(comfy_host):
    from fixtures.wan import tiny_wan_vae

    vae = tiny_wan_vae()
    z = vae.encode(torch.rand(5, 64, 96, 3))
    assert z.shape == (1, 48, 2, 4, 6)
    assert vae.decode(z).shape == (1, 5, 64, 96, 3)


def test_tiny_wan21_vae_fixture_is_the_hosts_wan21_vae(comfy_host):
    """The Wan2.1-class VAE the host's own loader built from the fixture's weights: 16 channels, x8 space, x4 time."""
    from fixtures.wan import tiny_wan21_vae

    vae = tiny_wan21_vae()
    z = vae.encode(torch.rand(5, 64, 96, 3))
    assert z.shape == (1, 16, 2, 8, 12)
    assert vae.decode(z).shape == (1, 5, 64, 96, 3)


def test_other_models_are_refused_naming_both_classes(comfy_host):
    """Not a WanModel, or a Wan variant whose input channels are not its output channels (i2v / extra-channel
    models: the condition half could not be concatenated): a ValueError that names what is accepted."""
    from types import SimpleNamespace

    import comfy.ldm.wan.model
    import comfy.ops

    from comfyui_full4d.host.patch import adapter_config_for
    from fixtures.wan import TINY_WAN

    def patcher(dm):
        return SimpleNamespace(model=SimpleNamespace(diffusion_model=dm))

    with pytest.raises(ValueError, match="a Wan2.2-TI2V-5B or Wan2.1-class model"):
        adapter_config_for(patcher(torch.nn.Linear(2, 2)))
    extra = comfy.ldm.wan.model.WanModel(**dict(TINY_WAN, in_dim=20, out_dim=16), operations=comfy.ops.disable_weight_init)
    with pytest.raises(ValueError, match="Wan2.2-TI2V-5B or Wan2.1-class model .* 20 channels in and gives 16 out"):
        adapter_config_for(patcher(extra))


def test_fused_branch_layout_and_rope_positions(base, monkeypatch):
    """The fused branch of block 0 gets one scene per row, tokens (view, frame, spatial), and RoPE time
    index v*2T + f (SPEC 2), built here from the host's 3-axis embedder with explicit ids."""
    from comfy.ldm.flux.math import apply_rope1

    from comfyui_full4d.host.patch import attach_adapter, make_adapter, with_rig

    adapter = make_adapter(base)
    model = with_rig(attach_adapter(base, adapter, skip_zero_branches=False), _cams())
    dm = base.model.diffusion_model
    seen = {}
    sa = dm.blocks[0].self_attn
    orig_sa, orig_fused = sa.forward, adapter.blocks[0].fused

    def sa_spy(x, freqs, transformer_options={}):
        seen["u"] = x.detach().clone()
        return orig_sa(x, freqs, transformer_options=transformer_options)

    def fused_spy(x, V_, F_, rope, **switches):
        seen.update(scene=x.detach().clone(), V=V_, F=F_, rope=rope, switches=switches)
        return orig_fused(x, V_, F_, rope, **switches)

    monkeypatch.setattr(sa, "forward", sa_spy)
    monkeypatch.setattr(adapter.blocks[0], "fused", fused_spy)
    x, c, ctx, t = _inputs(base, 2)
    _run(model, x, c, ctx, t)
    S = (H // 2) * (W // 2)
    assert (seen["V"], seen["F"]) == (V, 2 * T)
    assert seen["switches"] == {"intra_time": True, "cross_half": True}  # the full SPEC 2 mask
    u, scene = seen["u"], seen["scene"]
    assert scene.shape == (2, V * 2 * T * S, dm.dim)
    for j in range(2):
        for v in range(V):
            for f in range(2 * T):
                tok = slice((v * 2 * T + f) * S, (v * 2 * T + f + 1) * S)
                assert torch.equal(scene[j, tok], u[j * V + v, f * S:(f + 1) * S])
    ids = torch.zeros(V * 2 * T, H // 2, W // 2, 3)
    ids[..., 0] = torch.arange(V * 2 * T, dtype=torch.float32)[:, None, None]  # v*2T + f
    ids[..., 1] = torch.arange(H // 2, dtype=torch.float32)[None, :, None]
    ids[..., 2] = torch.arange(W // 2, dtype=torch.float32)[None, None, :]
    freqs = dm.rope_embedder(ids.reshape(1, -1, 3)).movedim(1, 2)
    q = torch.randn(2, V * 2 * T * S, dm.num_heads, dm.dim // dm.num_heads)
    torch.testing.assert_close(seen["rope"](q), apply_rope1(q, freqs), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["no_intra_time", "no_cross_half", "no_fused_attention"])
def test_ablation_switches_reach_the_fused_branch(base, name):
    """with_ablation: zero-init is still the base model (SPEC 4); with a random projector the fused branch
    runs under the switched mask (block 0's call sees it) or, fused attention off, equals a zero projector."""
    from comfyui_full4d.host.patch import get_adapter, with_ablation
    from comfyui_full4d.diffusion.ablation import Ablation

    ab = Ablation.named(name)
    x, c, ctx, t = _inputs(base, 1)
    ref = _run(base, x, c, ctx, _t2(t), patched_options=False)
    assert (_run(with_ablation(_patched(base, skip_zero=False), ab), x, c, ctx, t) - ref).abs().max() <= 1e-5
    full = _patched(base, {"tv_proj": 0.5})
    out_full = _run(full, x, c, ctx, t)
    out = _run(with_ablation(full, ab), x, c, ctx, t)
    assert (out - out_full).abs().max() > 1e-4
    assert torch.equal(_run(full, x, c, ctx, t), out_full)  # the input model keeps the full mask
    if name == "no_fused_attention":
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)  # only the fused branch was non-zero
    else:
        blk = get_adapter(full).blocks[0]
        seen = {}
        orig = blk.fused

        def spy(*a, **kw):
            seen.update(kw)
            return orig(*a, **kw)

        blk.fused = spy
        try:
            _run(with_ablation(full, ab), x, c, ctx, t)
        finally:
            del blk.fused
        assert seen == {"intra_time": ab.intra_time, "cross_half": ab.cross_half}


def _rope_reference(q: torch.Tensor, pos: torch.Tensor, axes: list, theta: float) -> torch.Tensor:
    """Independent float64 RoPE of q (N, D) at time positions pos (N,), h = w = 0: channel pairs (2d, 2d+1)
    of the time axis rotated by ``pos * theta^(-2d / axes[0])``, the h and w pairs unrotated."""
    q = q.double().reshape(q.shape[0], -1, 2).clone()
    half = axes[0] // 2
    ang = pos.double()[:, None] * theta ** (-torch.arange(0, axes[0], 2, dtype=torch.float64) / axes[0])
    x0, x1 = q[:, :half, 0].clone(), q[:, :half, 1].clone()
    q[:, :half, 0] = ang.cos() * x0 - ang.sin() * x1
    q[:, :half, 1] = ang.sin() * x0 + ang.cos() * x1
    return q.reshape(q.shape[0], -1)


def test_fused_rope_positions_are_distinct_in_bf16(comfy_host, monkeypatch):
    """SPEC 2 positions under bf16 (how Wan2.2-5B runs) at V*2T = 294 > 256, where bf16 holds integers only
    up to 256: every (view, frame) slot gets its own RoPE time index v*2T + f (float64 reference)."""
    from comfyui_full4d.host.patch import attach_adapter, make_adapter, with_rig

    Vb, Tb = 7, 21
    base16 = load_tiny_wan(dtype=torch.bfloat16)
    dm = base16.model.diffusion_model
    adapter = make_adapter(base16)
    model = with_rig(attach_adapter(base16, adapter, skip_zero_branches=False), _cams(Vb))
    seen = {}
    orig = adapter.blocks[0].fused

    def fused_spy(x, V_, F_, rope, **switches):
        seen.update(rope=rope, dtype=x.dtype)
        return orig(x, V_, F_, rope, **switches)

    monkeypatch.setattr(adapter.blocks[0], "fused", fused_spy)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(Vb, 48, Tb, 2, 2, generator=g).bfloat16()  # 2x2 latent: one token per frame
    ctx = torch.randn(Vb, 7, 4096, generator=g).bfloat16()
    t = torch.rand(Vb, Tb, generator=g) * 1000
    _run(model, x, x.clone(), ctx, t)
    assert seen["dtype"] == torch.bfloat16
    N = Vb * 2 * Tb
    head = dm.dim // dm.num_heads
    q = torch.randn(head, generator=g).expand(1, N, 1, head).contiguous()  # the same vector in every slot
    out = seen["rope"](q)[0, :, 0]
    assert torch.unique(out, dim=0).shape[0] == N, "two (view, frame) slots share a RoPE position"
    ref = _rope_reference(q[0, :, 0], torch.arange(N), dm.rope_embedder.axes_dim, dm.rope_embedder.theta)
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-4)


def test_fused_copy_is_each_blocks_self_attention(base):
    """SPEC 2: make_adapter copies every block's self-attention into the fused branch (q, k, v, o and the q/k
    RMS norms): equal state dicts, and with one view (the mask is then the view's own frames) the copy gives
    the block's own self-attention output on the same input and RoPE (the fixture's norms are not 1)."""
    from comfy.ldm.flux.math import apply_rope1

    from comfyui_full4d.host.patch import make_adapter

    dm = base.model.diffusion_model
    adapter = make_adapter(base)
    F_, S = 2 * T, (H // 2) * (W // 2)
    u = torch.randn(2, F_ * S, dm.dim, generator=torch.Generator().manual_seed(3))
    freqs = dm.rope_encode(F_, H, W, dtype=torch.float32)
    for i, (blk, ab) in enumerate(zip(dm.blocks, adapter.blocks)):
        sd, copy = blk.self_attn.state_dict(), ab.tv_attn.state_dict()
        assert set(copy) == set(sd) and {"norm_q.weight", "norm_k.weight"} <= set(copy)
        for k, v in copy.items():
            assert torch.equal(v, sd[k]), f"block {i}: tv_attn.{k} is not the base self_attn.{k}"
        with torch.no_grad():
            ref = blk.self_attn(u, freqs)
            out = ab.tv_attn(u, 1, F_, lambda q: apply_rope1(q, freqs))
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_camera_embedding_is_added_before_the_gate(base, monkeypatch):
    """SPEC 4 (Eq. 7-8): x += gate * (SA(u) + c_v). Reference: the unpatched base model whose blocks'
    self-attention returns SA(u) + c_v, c_v = W2 silu(W1 p_v + b1) + b2 computed here for each row's view
    (two scenes: cond + uncond). Only the camera branch is non-zero."""
    from comfyui_full4d.host.patch import get_adapter

    x, c, ctx, t = _inputs(base, 2)
    cams = _cams()
    model = _patched(base, {"fc2": 0.5}, cams)
    out = _run(model, x, c, ctx, t)
    plain = _run(base, x, c, ctx, _t2(t), patched_options=False)
    for blk, ab in zip(base.model.diffusion_model.blocks, get_adapter(model).blocks):
        fc1, fc2 = ab.cam.fc1, ab.cam.fc2
        cam = torch.nn.functional.silu(cams @ fc1.weight.T + fc1.bias) @ fc2.weight.T + fc2.bias  # (V, C)

        def sa_plus_cam(x_, freqs, transformer_options={}, orig=blk.self_attn.forward, cam=cam):
            return orig(x_, freqs, transformer_options=transformer_options) + cam.repeat(x_.shape[0] // V, 1)[:, None]

        monkeypatch.setattr(blk.self_attn, "forward", sa_plus_cam)
    ref = _run(base, x, c, ctx, _t2(t), patched_options=False)
    assert (ref - plain).abs().max() > 1e-2  # the camera term matters
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_fused_branch_is_added_ungated_to_the_residual(base, monkeypatch):
    """SPEC 2: the block adds P(TV(u)) to the residual stream, ungated, after the gated self-attention.
    Block 0's call (two scenes, only the projector non-zero) with its cross-attention and FFN zeroed:
    patched block - the host's own block == P(TV(u)) from the adapter block on the host block's modulated u."""
    from comfy.ldm.flux.math import apply_rope1

    import comfyui_full4d.host.patch as patch

    calls = []
    orig_forward = patch._block_forward

    def spy(*args, **kw):
        calls.append(args)
        return orig_forward(*args, **kw)

    monkeypatch.setattr(patch, "_block_forward", spy)
    x, c, ctx, t = _inputs(base, 2)
    _run(_patched(base, {"tv_proj": 0.5}), x, c, ctx, t)
    block, ab, run, xb, e, freqs, context, to = calls[0][:8]
    monkeypatch.setattr(block.cross_attn, "forward", lambda y, *a, **k: torch.zeros_like(y))
    monkeypatch.setattr(block.ffn, "forward", lambda y: torch.zeros_like(y))
    seen = {}
    orig_sa = block.self_attn.forward

    def sa_spy(u, fr, transformer_options={}):
        seen["u"] = u
        return orig_sa(u, fr, transformer_options=transformer_options)

    monkeypatch.setattr(block.self_attn, "forward", sa_spy)
    with torch.no_grad():
        host = block(xb, e, freqs, context, transformer_options=to)
        B, L, C = xb.shape
        fused = ab.fused(seen["u"].reshape(B // V, V * L, C), V, 2 * T, lambda q: apply_rope1(q, run.freqs))
        ours = orig_forward(block, ab, run, xb, e, freqs, context, to)
    assert fused.abs().max() > 1e-2
    torch.testing.assert_close(ours - host, fused.reshape(B, L, C), rtol=1e-4, atol=1e-5)


def test_tiny_vae_fixture_decodes_to_pixels_on_this_host(comfy_host):
    """The fixture VAE's host ``decode`` gives the model's own decode mapped to [0, 1] on this host.

    0.33's ``VAE.decode`` ignores ``process_output``'s return value (the host's own VAEs work in
    place); a fixture that returned a new tensor decoded to [-1, 1] there, and every test that
    reads pixels from it (the training-free known region among them) measured the wrong image.
    """
    from fixtures.wan import tiny_wan_vae

    vae = tiny_wan_vae()
    z = torch.randn(1, 48, 2, 2, 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = ((vae.first_stage_model.decode(z.clone()) + 1.0) / 2.0).clamp(0.0, 1.0)  # (1, 3, T, H, W)
    got = vae.decode(z)  # (T, H, W, 3) or (1, T, H, W, 3), host layout
    got = got.reshape(-1, *got.shape[-3:])
    ref = ref[0].permute(1, 2, 3, 0)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    assert got.min() >= 0.0 and got.max() <= 1.0
    torch.testing.assert_close(got.float(), ref.float(), atol=1e-4, rtol=0)
