"""Full-4D adapter engine (SPEC 2, 4): zero init, fused branch vs a dense reference, camera numbers, files."""

from __future__ import annotations

import math

import pytest
import torch

from comfyui_full4d.diffusion.adapter import (AdapterConfig, Full4DAdapter, camera_features, load_adapter,
                                    read_adapter_config, save_adapter)

CFG = AdapterConfig(dim=32, num_heads=2, num_blocks=3, cam_hidden=8, views_trained=4)


def _random_adapter(cfg=CFG, seed=0, dtype=torch.float32) -> Full4DAdapter:
    a = Full4DAdapter(cfg).reset_parameters(seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in a.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return a.to(dtype)


def test_zero_init_branches_are_exactly_zero():
    a = Full4DAdapter(CFG).reset_parameters(seed=3)
    x = torch.randn(2, 3 * 4 * 5, CFG.dim)
    for blk in a.blocks:
        assert torch.equal(blk.camera_embedding(torch.randn(3, 12)), torch.zeros(3, CFG.dim))
        assert torch.equal(blk.fused(x, 3, 4), torch.zeros_like(x))


def test_reset_copies_base_self_attention():
    base = [{k: torch.randn(v.shape) for k, v in Full4DAdapter(CFG).blocks[0].tv_attn.state_dict().items()}
            for _ in range(CFG.num_blocks)]
    a = Full4DAdapter(CFG).reset_parameters(base)
    for blk, sd in zip(a.blocks, base):
        for k, v in blk.tv_attn.state_dict().items():
            assert torch.equal(v, sd[k])
    with pytest.raises(ValueError, match="missing keys"):
        Full4DAdapter(CFG).reset_parameters([{"q.weight": torch.zeros(32, 32)}] * CFG.num_blocks)


def _dense_reference(blk, x, V, F, rope):
    """Independent: per-token visibility by the SPEC 2 rule in Python, explicit softmax per head."""
    B, N, C = x.shape
    S, Tn, H = N // (V * F), F // 2, blk.tv_attn.num_heads
    att = blk.tv_attn
    rms = lambda y, w: y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + CFG.eps) * w  # noqa: E731
    q = rope(rms(x @ att.q.weight.T + att.q.bias, att.norm_q.weight).view(B, N, H, -1))
    k = rope(rms(x @ att.k.weight.T + att.k.bias, att.norm_k.weight).view(B, N, H, -1))
    v = (x @ att.v.weight.T + att.v.bias).view(B, N, H, -1)
    coords = [(i // (F * S), (i // S) % F) for i in range(N)]
    mask = torch.tensor([[vq == vk or fq == fk or (vk == 0 and fk >= Tn and fq < Tn)
                          for (vk, fk) in coords] for (vq, fq) in coords])
    s = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(C // H)
    p = s.masked_fill(~mask, float("-inf")).softmax(-1)
    o = torch.einsum("bhqk,bkhd->bqhd", p, v).reshape(B, N, C)
    return (o @ att.o.weight.T + att.o.bias) @ blk.tv_proj.weight.T + blk.tv_proj.bias


@pytest.mark.parametrize("V,T,S", [(2, 1, 3), (3, 2, 2)])
def test_fused_branch_matches_dense_reference(V, T, S):
    blk = _random_adapter().blocks[1]
    with torch.no_grad():
        blk.tv_attn.q.weight.mul_(0.2), blk.tv_attn.k.weight.mul_(0.2)
    x = torch.randn(2, V * 2 * T * S, CFG.dim, generator=torch.Generator().manual_seed(V))
    angle = torch.arange(V * 2 * T * S, dtype=torch.float32)[None, :, None, None] * 0.1

    def rope(t):  # a position-dependent rotation of channel pairs (stand-in for the host's RoPE)
        a, b = t[..., 0::2], t[..., 1::2]
        return torch.stack([a * angle.cos() - b * angle.sin(), a * angle.sin() + b * angle.cos()], -1).flatten(-2)

    with torch.no_grad():
        out = blk.fused(x, V, 2 * T, rope)
        ref = _dense_reference(blk, x, V, 2 * T, rope)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_camera_features_relative_to_view0():
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(4, 3, 3, generator=g))
    R = Q * torch.linalg.det(Q)[:, None, None]  # proper rotations
    t = torch.randn(4, 3, generator=g)
    f = camera_features(R, t).view(4, 3, 4)
    assert torch.equal(f[0], torch.eye(3, 4))
    X = torch.randn(10, 3, generator=g)  # world points
    x0 = X @ R[0].T + t[0]
    for v in range(4):
        torch.testing.assert_close(x0 @ f[v, :, :3].T + f[v, :, 3], X @ R[v].T + t[v], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="R must be"):
        camera_features(R[0], t[0])


def test_negated_camera_features_negates_what_the_sampler_looks_up_and_restores_it():
    """The mutation check's switch (bench/eval.py, tests/test_nano_model.py): the sampler imports ``camera_features``
    from the module at call time, so that lookup must give the negation inside and the original after, on error too."""
    import comfyui_full4d.diffusion.adapter as adapter_mod

    R, t = torch.eye(3).expand(3, 3, 3).clone(), torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 2, 0]])
    ref = camera_features(R, t)
    with adapter_mod.negated_camera_features():
        torch.testing.assert_close(adapter_mod.camera_features(R, t), -ref, rtol=0, atol=0)
    assert adapter_mod.camera_features is camera_features
    with pytest.raises(RuntimeError), adapter_mod.negated_camera_features():
        raise RuntimeError
    assert adapter_mod.camera_features is camera_features


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_save_load_round_trip_is_bit_exact(tmp_path, dtype):
    a = _random_adapter(dtype=dtype)
    path = tmp_path / "a.safetensors"
    save_adapter(a, path)
    b = load_adapter(path, expect=CFG)
    assert b.config == CFG and read_adapter_config(path) == CFG
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(k.split(".")[2] in ("cam", "tv_attn", "tv_proj") and k.startswith("blocks.") for k in sa)
    for k in sa:
        assert sb[k].dtype == dtype and torch.equal(sa[k], sb[k]), k
    assert [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]  # atomic write left no temp file


def test_mismatched_and_broken_files_are_value_errors(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "a.safetensors"
    save_adapter(_random_adapter(), path)
    for other in (AdapterConfig(dim=64, num_heads=2, num_blocks=3), AdapterConfig(dim=32, num_heads=2, num_blocks=4)):
        with pytest.raises(ValueError, match="another model size"):
            load_adapter(path, expect=other)
    data = path.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.safetensors").write_text("not a tensor file\n" * 10)
    save_file({"x": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    sd = {k: v for k, v in _random_adapter().state_dict().items() if "tv_proj" not in k}
    save_file(sd, str(tmp_path / "partial.safetensors"), metadata=CFG.metadata())
    cases = {"trunc": "truncated", "text": "not a readable safetensors", "plain": "not a Full-4D adapter",
             "partial": "missing keys", "missing": "does not exist"}
    for name, match in cases.items():
        with pytest.raises(ValueError, match=match):
            load_adapter(tmp_path / f"{name}.safetensors")


@pytest.mark.parametrize("intra_time,cross_half", [(True, True), (False, True), (True, False)])
def test_mask_switches_match_the_attention_kernel(intra_time, cross_half):
    """TVAttention's Tab. 4 switches are the SPEC 2 rule switches of ``fused_tv_attention``; all on is the default."""
    from comfyui_full4d.diffusion.attention import fused_tv_attention_reference

    blk = _random_adapter(seed=4).blocks[0]
    att = blk.tv_attn
    x = torch.randn(2, 3 * 4 * 2, CFG.dim)
    B, N, C = x.shape
    with torch.no_grad():
        q = att.norm_q(att.q(x)).view(B, N, 2, -1).transpose(1, 2)
        k = att.norm_k(att.k(x)).view(B, N, 2, -1).transpose(1, 2)
        v = att.v(x).view(B, N, 2, -1).transpose(1, 2)
        o = fused_tv_attention_reference(q, k, v, 3, 4, intra_time=intra_time, cross_half=cross_half)
        want = blk.tv_proj(att.o(o.transpose(1, 2).reshape(B, N, C)))
        got = blk.fused(x, 3, 4, intra_time=intra_time, cross_half=cross_half)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        if intra_time and cross_half:
            assert torch.equal(got, blk.fused(x, 3, 4))
        else:
            assert (got - blk.fused(x, 3, 4)).abs().max() > 1e-4
