"""Fused time-view sparse attention (SPEC 2) against an independent dense masked softmax."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import comfyui_full4d.diffusion.attention as att
from comfyui_full4d.diffusion.attention import frame_visibility, fused_tv_attention, fused_tv_attention_reference


def rule_by_loop(V: int, T: int, intra_time: bool, cross_half: bool) -> torch.Tensor:
    """SPEC 2 rule written out per (query frame, key frame) pair."""
    F = 2 * T
    out = torch.zeros(V * F, V * F, dtype=torch.bool)
    for vq in range(V):
        for fq in range(F):
            for vk in range(V):
                for fk in range(F):
                    ok = vq == vk
                    ok = ok or (intra_time and fq == fk)
                    ok = ok or (cross_half and vk == 0 and fk >= T and fq < T)
                    out[vq * F + fq, vk * F + fk] = ok
    return out


def dense_reference(q, k, v, V, T, S, intra_time=True, cross_half=True):
    """Plain softmax(q k^T / sqrt(D) + mask) v with the token mask broadcast from the frame rule."""
    rule = rule_by_loop(V, T, intra_time, cross_half).to(q.device)  # (V*F, V*F)
    n_frames = V * 2 * T
    mask = rule[:, None, :, None].expand(n_frames, S, n_frames, S).reshape(n_frames * S, n_frames * S)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, -1) @ v


def rand_qkv(B, H, V, T, S, D, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    N = V * 2 * T * S
    return [torch.randn(B, H, N, D, generator=g, dtype=dtype) for _ in range(3)]


SHAPES = [  # (B, H, V, T, S, D)
    (1, 2, 6, 3, 4, 8),
    (2, 3, 3, 2, 5, 16),  # B>1, odd S
    (1, 1, 1, 3, 3, 8),  # V=1: plain per-view attention
    (2, 1, 2, 1, 7, 4),  # T=1
    (1, 2, 4, 4, 1, 32),  # S=1
]
SWITCHES = [(True, True), (True, False), (False, True), (False, False)]


@pytest.mark.parametrize("V,T", [(1, 1), (2, 3), (3, 2), (6, 4)])
@pytest.mark.parametrize("intra_time,cross_half", SWITCHES)
def test_frame_visibility_matches_loop(V, T, intra_time, cross_half):
    got = frame_visibility(V, 2 * T, intra_time=intra_time, cross_half=cross_half)
    assert got.dtype == torch.bool and got.shape == (2 * V * T, 2 * V * T)
    assert torch.equal(got, rule_by_loop(V, T, intra_time, cross_half))


def test_density_paper_config():
    # counted by hand: 105 target-half rows of views 1..5 see 42+5+21 frames, 147 rows see 42+5
    assert frame_visibility(6, 42).float().mean().item() == pytest.approx(0.221, abs=5e-4)
    assert frame_visibility(6, 42).sum().item() == 105 * 68 + 147 * 47


@pytest.mark.parametrize("bad", [0, 3, 41, -2])
def test_frames_per_view_must_be_even_positive(bad):
    with pytest.raises(ValueError, match="frames_per_view"):
        frame_visibility(2, bad)


def test_bad_inputs_raise_value_error():
    q, k, v = rand_qkv(1, 1, 2, 2, 3, 4)
    with pytest.raises(ValueError, match="not divisible"):
        fused_tv_attention(q[:, :, :-1], k[:, :, :-1], v[:, :, :-1], 2, 4)
    with pytest.raises(ValueError, match="num_views"):
        fused_tv_attention(q, k, v, 0, 4)
    with pytest.raises(ValueError, match="q, k, v"):
        fused_tv_attention(q, k[..., :2], v, 2, 4)
    with pytest.raises(ValueError, match=r"\(B, heads"):
        fused_tv_attention(q[0], k[0], v[0], 2, 4)
    with pytest.raises(ValueError, match="dtype"):
        fused_tv_attention(q, k.double(), v, 2, 4)
    with pytest.raises(ValueError, match="backend"):
        fused_tv_attention(q, k, v, 2, 4, backend="cuda")


BACKENDS = ["exact-fused", "exact-tiled", "flex"]


def use_backend(monkeypatch, name: str) -> str:
    """exact-fused: aten's CPU flash kernel per piece; exact-tiled: the torch tiles; flex: FlexAttention."""
    monkeypatch.setattr(att, "_CPU_FLASH", name == "exact-fused")
    return name.split("-")[0]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("intra_time,cross_half", SWITCHES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_dense_reference(monkeypatch, shape, intra_time, cross_half, backend):
    backend = use_backend(monkeypatch, backend)
    B, H, V, T, S, D = shape
    q, k, v = rand_qkv(*shape)
    want = dense_reference(q, k, v, V, T, S, intra_time, cross_half)
    got = fused_tv_attention(q, k, v, V, 2 * T, intra_time=intra_time, cross_half=cross_half, backend=backend)
    assert got.shape == q.shape and got.dtype == q.dtype
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    ref = fused_tv_attention_reference(q, k, v, V, 2 * T, intra_time=intra_time, cross_half=cross_half)
    torch.testing.assert_close(ref, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_value_dim_may_differ(monkeypatch, backend):
    backend = use_backend(monkeypatch, backend)
    q, k, _ = rand_qkv(1, 2, 3, 2, 3, 8)
    v = torch.randn(1, 2, q.shape[2], 5)
    want = dense_reference(q, k, v, 3, 2, 3)
    torch.testing.assert_close(fused_tv_attention(q, k, v, 3, 4, backend=backend), want, rtol=0, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(V=st.integers(1, 5), T=st.integers(1, 4), S=st.integers(1, 6), B=st.integers(1, 2), H=st.integers(1, 3),
       D=st.sampled_from([1, 4, 8]), intra_time=st.booleans(), cross_half=st.booleans(), seed=st.integers(0, 99))
def test_random_configurations(V, T, S, B, H, D, intra_time, cross_half, seed):
    q, k, v = rand_qkv(B, H, V, T, S, D, seed=seed)
    want = dense_reference(q, k, v, V, T, S, intra_time, cross_half)
    got = fused_tv_attention(q, k, v, V, 2 * T, intra_time=intra_time, cross_half=cross_half, backend="exact")
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("tile", [1, 7, 40, 1000])
def test_chunking_is_exact(monkeypatch, tile):
    """Tiny score tiles force chunking over queries and over the batch of groups."""
    monkeypatch.setattr(att, "_MAX_TILE", tile)
    monkeypatch.setattr(att, "_CPU_FLASH", False)
    q, k, v = rand_qkv(2, 2, 3, 2, 5, 8, seed=3)
    want = dense_reference(q, k, v, 3, 2, 5)
    torch.testing.assert_close(fused_tv_attention(q, k, v, 3, 4, backend="exact"), want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("backend", ["exact-fused", "exact-tiled"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs(monkeypatch, dtype, backend):
    use_backend(monkeypatch, backend)
    q, k, v = rand_qkv(1, 2, 3, 2, 4, 16, dtype=dtype, seed=5)
    got = fused_tv_attention(q, k, v, 3, 4, backend="exact")
    assert got.dtype == dtype
    want = dense_reference(q.double(), k.double(), v.double(), 3, 2, 4)
    # exact path computes in float32: only the final rounding to the half dtype remains
    torch.testing.assert_close(got.double(), want, rtol=0, atol=2 * torch.finfo(dtype).eps)


@pytest.mark.parametrize("intra_time,cross_half", [(True, True), (False, True), (True, False)])
@pytest.mark.parametrize("tile", [1 << 22, 16])
def test_gradients_match_reference(monkeypatch, intra_time, cross_half, tile):
    monkeypatch.setattr(att, "_MAX_TILE", tile)
    B, H, V, T, S, D = 2, 2, 3, 2, 3, 8
    base = rand_qkv(B, H, V, T, S, D, dtype=torch.float64, seed=7)
    cot = torch.randn(B, H, V * 2 * T * S, D, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    grads = []
    for fn in (lambda q, k, v: fused_tv_attention(q, k, v, V, 2 * T, intra_time=intra_time,
                                                   cross_half=cross_half, backend="exact"),
               lambda q, k, v: dense_reference(q, k, v, V, T, S, intra_time, cross_half)):
        leaves = [x.clone().requires_grad_(True) for x in base]
        (fn(*leaves) * cot).sum().backward()
        grads.append([x.grad for x in leaves])
    for g_ours, g_ref in zip(*grads):
        torch.testing.assert_close(g_ours, g_ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("compiled", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_flex_forward(monkeypatch, compiled):
    """The Flex path eager, and torch.compile-d as on CUDA (about 20 s to compile on this CPU)."""
    monkeypatch.setattr(att, "_FLEX_COMPILE_CPU", compiled)
    V, T, S = 3, 2, 5
    q, k, v = rand_qkv(2, 2, V, T, S, 16, seed=11)
    got = fused_tv_attention(q, k, v, V, 2 * T, backend="flex")
    torch.testing.assert_close(got, dense_reference(q, k, v, V, T, S), rtol=0, atol=1e-5)


@pytest.mark.parametrize("V,T,S", [(1, 1, 3), (3, 2, 5), (6, 3, 7), (4, 2, 16), (2, 5, 1)])
@pytest.mark.parametrize("intra_time,cross_half", SWITCHES)
@pytest.mark.parametrize("block", [8, 16, 128])
def test_block_mask_equals_create_block_mask(V, T, S, intra_time, cross_half, block):
    """Our frame-level BlockMask equals torch's create_block_mask (which evaluates all N x N pairs)."""
    from torch.nn.attention.flex_attention import create_block_mask
    N = V * 2 * T * S

    def mask_mod(b, h, q_idx, kv_idx):  # the rule again, from token indices
        vq, fq = q_idx // S // (2 * T), q_idx // S % (2 * T)
        vk, fk = kv_idx // S // (2 * T), kv_idx // S % (2 * T)
        vis = vq == vk
        if intra_time:
            vis = vis | (fq == fk)
        if cross_half:
            vis = vis | ((vk == 0) & (fk >= T) & (fq < T))
        return vis
    want = create_block_mask(mask_mod, None, None, N, N, device="cpu", BLOCK_SIZE=block)
    got = att._block_mask(V, 2 * T, S, intra_time, cross_half, "cpu", block)
    for name in ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices",
                 "q_num_blocks", "q_indices", "full_q_num_blocks", "full_q_indices"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=0, atol=0, msg=name)
    assert torch.equal(got.to_dense(), want.to_dense())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="FlexAttention has no CPU backward")
def test_flex_gradients_cuda():
    V, T, S = 3, 2, 5
    base = [x.cuda() for x in rand_qkv(2, 2, V, T, S, 16, seed=11)]
    cot = torch.randn_like(base[0])
    res = []
    for fn in (lambda q, k, v: fused_tv_attention(q, k, v, V, 2 * T, backend="flex"),
               lambda q, k, v: dense_reference(q, k, v, V, T, S)):
        leaves = [x.clone().requires_grad_(True) for x in base]
        out = fn(*leaves)
        (out * cot).sum().backward()
        res.append([out] + [x.grad for x in leaves])
    for a, b in zip(*res):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4)


def test_gradcheck_small():
    q, k, v = (x.requires_grad_(True) for x in rand_qkv(1, 1, 2, 1, 2, 3, dtype=torch.float64, seed=9))
    assert torch.autograd.gradcheck(lambda q, k, v: fused_tv_attention(q, k, v, 2, 2, backend="exact"), (q, k, v))


_MEMORY_SCRIPT = textwrap.dedent("""
    import resource, sys, torch
    import comfyui_full4d.diffusion.attention as att
    from comfyui_full4d.diffusion.attention import fused_tv_attention
    att._CPU_FLASH = sys.argv[1] == "fused"
    torch.set_num_threads(2)
    V, T, S, D = 6, 21, 64, 16
    N = V * 2 * T * S
    q, k, v = (torch.randn(1, 1, N, D) for _ in range(3))
    fused_tv_attention(q[:, :, :V * 2 * T], k[:, :, :V * 2 * T], v[:, :, :V * 2 * T], V, 2 * T, backend="exact")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out = fused_tv_attention(q, k, v, V, 2 * T, backend="exact")
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert torch.isfinite(out).all()
    print(N, after - before)
""")


@pytest.mark.parametrize("kernel", ["fused", "tiled"])
def test_exact_path_memory_is_not_quadratic(kernel):
    """N = 16128 tokens: one N x N float32 matrix would be 1.04 GB; the exact path peaks far below.

    (The dense reference grows by about 1.3 GB in the same script.)"""
    res = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, kernel], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    N, growth = map(int, res.stdout.split())
    dense = N * N * 4
    assert growth < dense / 8, f"peak RSS grew {growth / 2**20:.0f} MiB; dense scores: {dense / 2**20:.0f} MiB"
