"""The token layout of exact sharded sampling (comfyui_full4d.diffusion.parallel ``TokenShard``, host/parallel.py) on
CPU with gloo, 2, 3 and 4 processes: every rank holds a contiguous chunk of every view's tokens; the base self-attention
and the fused branch both go through the all-to-all, the per-frame modulation and the RoPE tables are cut to the chunk.

Every sharded result is compared with the one-process path (no mesh) on the same inputs: the tiny 12-head Wan2.2 of
tests/fixtures/parallel.py with its random non-zero adapter, fp32, tolerance 1e-5 of the largest value (rel_err).
The latent sizes are chosen so that chunks end inside a frame and differ in size (2T*S = 28 tokens per view over 3
ranks: 10, 9, 9 in frames of 7; 30 over 4: 8, 8, 7, 7 in frames of 5). One spawn per world size (``_world``), shared by the tests of that size.

Chunks keep at least 4 tokens and the text context has 16 tokens, not the 7 of the other fixtures: on CPU, batched
matmul (MKL) computes a product of fewer than 4 query rows, or with 7 or 9 keys, with another kernel whose rows differ
in the last bits from the same rows of a bigger product (up to 1e-5 after two steps); the token layout hands the
cross-attention a chunk of the queries. At real sizes (thousands of tokens per chunk, Wan's text context padded to
512 tokens) the rows agree bit for bit; docs/distributed.md.
"""

from __future__ import annotations

import functools

import pytest
import torch

from fixtures.parallel import HEADS, check_host_cases, rel_err, run_world

TOL = 1e-5  # of the largest value (rel_err)
SIZE = {2: (2, 2, 10), 3: (2, 2, 14), 4: (3, 2, 10)}  # latent (T, h, w): S = 5, 7, 5 tokens per frame
TOKEN_ATTENTION = {  # (V, F, S, rule switches): engine only, TokenShard.attend vs the one-process attention
    2: [(3, 4, 5, {}), (4, 4, 5, {"intra_time": False})],
    3: [(4, 4, 5, {}), (2, 4, 5, {"cross_half": False})],
    4: [(6, 6, 5, {}), (3, 2, 3, {})],
}
HOST = {  # (name, kind, layout, V); auto = tokens when U does not divide V
    2: [("call_v3", "call", "1x2", 3), ("sample_v3", "sample", "1x2", 3), ("call_v4", "call", "1x2:tokens", 4),
        ("free_v3", "free", "1x2", 3)],
    3: [("call_v4", "call", "1x3", 4), ("sample_v4", "sample", "1x3", 4), ("call_v2", "call", "1x3", 2),
        ("sample_v3", "sample", "1x3:tokens", 3), ("free_v4", "free", "1x3", 4)],
    4: [("cfg_u2_v3", "sample", "2x2", 3), ("call_v6", "call", "1x4", 6), ("sample_v4", "sample", "1x4:tokens", 4),
        ("free_cfg_v3", "free", "2x2", 3)],
}


@functools.lru_cache(maxsize=None)
def _world(n: int) -> dict:
    return run_world(n, HOST[n], token_attention=TOKEN_ATTENTION[n], size=SIZE[n], ctx=16)


def _tokens_per_view(world: int) -> int:
    T, h, w = SIZE[world]
    return 2 * T * (h // 2) * (w // 2)


@pytest.mark.slow  # spawns processes
def test_two_processes_tokens():
    """1x2 with V=3 (auto picks tokens), one model call and a 2-step Full4DSampler run; V=4 forced onto tokens (U divides
    V); the training-free cross-view mode; the token attention alone. Bytes: base + fused all-to-alls = the formula."""
    from comfyui_full4d.diffusion.parallel import ulysses_bytes_per_block

    res = _world(2)
    for rank in res["token_attention"]:
        assert len(rank) == len(TOKEN_ATTENTION[2]) and all(err <= TOL for err, _ in rank.values()), rank
    check_host_cases(res["host"], [c[0] for c in HOST[2]], TOL)
    V, L, C, blocks = 4, _tokens_per_view(2), HEADS * 16, 2
    sent = res["host"]["call_v4"][2]
    assert sent["ulysses"] == blocks * ulysses_bytes_per_block(V * L, C, 2, 4, scenes=2, shard="tokens")
    assert sent["gather"] == (2 - 1) * 2 * V * (L // 2) * C * 4  # the last block's tokens, once per call


@pytest.mark.slow  # spawns processes
def test_three_processes_tokens_inside_frames():
    """1x3, chunks of 10, 9, 9 tokens (frames of 7): V=4 (call and 2-step run), V=2 (fewer views than ranks: only the
    token layout can run it), V=3 forced onto tokens, training-free cross-view with V=4."""
    res = _world(3)
    for rank in res["token_attention"]:
        assert all(err <= TOL for err, _ in rank.values()), rank
    check_host_cases(res["host"], [c[0] for c in HOST[3]], TOL)


@pytest.mark.slow  # spawns processes
def test_four_processes_cfg_times_tokens():
    """2x2 with V=3 (CFG split x 2-way token layout; Full-4D and training-free), 1x4 with V=6 (auto: tokens 8, 8, 7, 7
    of each view) and V=4 forced onto tokens."""
    res = _world(4)
    for rank in res["token_attention"]:
        assert all(err <= TOL for err, _ in rank.values()), rank
    check_host_cases(res["host"], [c[0] for c in HOST[4]], TOL)
    assert set(res["host"]["cfg_u2_v3"][2]) == {"cfg", "ulysses", "gather"}


ODD = (2, 3, 5)  # latent (T, h, w) odd on both axes, as 720p's 45x80: the host pads to 4x6, S = 2 x 3 = 6 tokens
ODD_HOST = [("free_odd_tokens", "free", "1x2:tokens", 3), ("free_odd_views", "free", "1x2", 4),
            ("call_odd_tokens", "call", "1x2:tokens", 3)]


@pytest.mark.slow  # spawns processes
def test_odd_latent_sizes_shard_like_even_ones():
    """A latent odd in both axes has ceil(h/2) * ceil(w/2) tokens per frame after the host's patch padding
    (3 x 5 -> 2 x 3 = 6, not the 1 x 2 of a floor); the training-free cross-view mode on 2 ranks, its tokens split
    (12 per view: 6 and 6) and its views split, and the adapter's fused branch split by tokens give the one-process
    result within TOL of the output's size (rel_err): the views split of the training-free mode is not bit for bit
    (~1e-5 of outputs up to ~11 at even sizes too, 4x6 latents as 3x5: the order of a float32 sum over the
    attention's split heads); a wrong token count fails the all-to-all instead."""
    res = run_world(2, ODD_HOST, size=ODD, ctx=16)["host"]
    assert sorted(res) == sorted(c[0] for c in ODD_HOST)
    for name, (got, ref, _) in res.items():
        assert got.shape == ref.shape and ref.abs().max() > 0.1, name
        assert rel_err(got, ref) <= TOL, (name, rel_err(got, ref))


def test_layout_shard_choice():
    from comfyui_full4d.diffusion.parallel import Layout, token_split

    assert Layout.parse("1x4") == Layout(1, 4) and Layout.parse("1x4:tokens") == Layout(1, 4, "tokens")
    assert Layout.parse("auto:views", 4) == Layout(2, 2, "views") and Layout(2, 2, "tokens").name == "2x2:tokens"
    assert Layout.parse(Layout(1, 3, "views").name) == Layout(1, 3, "views") and Layout(2, 4).name == "2x4"
    auto = Layout(1, 4)
    assert [auto.shards_tokens(v) for v in (4, 8, 6, 3)] == [False, False, True, True]
    assert Layout(1, 4, "tokens").shards_tokens(4) and not Layout(1, 4, "views").shards_tokens(6)
    assert not Layout(2, 1, "tokens").shards_tokens(3)  # no sequence split: nothing to shard
    with pytest.raises(ValueError, match="views or tokens"):
        Layout.parse("1x2:heads")
    with pytest.raises(ValueError, match="shard must be one of"):
        Layout(1, 2, "rows")
    assert token_split(20, 3) == [(0, 7), (7, 14), (14, 20)] and token_split(10584, 4)[3] == (7938, 10584)
    with pytest.raises(ValueError, match="at least 5 tokens per view"):
        token_split(4, 5)


def test_token_shard_slices_every_view():
    from comfyui_full4d.diffusion.parallel import Layout, Mesh, TokenShard

    shard = TokenShard(Mesh(Layout(1, 3, "tokens"), rank=1), length=20)
    assert (shard.lo, shard.hi, shard.counts) == (7, 14, [7, 7, 6])
    x = torch.arange(2 * 3 * 20).reshape(2, 3 * 20)[..., None]  # 2 scenes of 3 views, token = its index
    got = shard.local(x, segments=3)[..., 0]
    want = torch.cat([torch.arange(v * 20 + 7, v * 20 + 14) for v in range(3)])
    assert torch.equal(got[0], want) and torch.equal(got[1], want + 60)
    with pytest.raises(ValueError, match="expected 1 x 20 tokens"):
        shard.local(x)


def test_modulation_is_the_hosts_repeat_e_on_the_chunk(comfy_host):
    """The per-frame modulation expanded to this rank's tokens = the host's repeat_e over the whole view, cut."""
    import comfy.ldm.wan.model as wan

    from comfyui_full4d.diffusion.parallel import Layout, Mesh, TokenShard
    from comfyui_full4d.host.parallel import modulation

    g = torch.Generator().manual_seed(0)
    for length, frames, U in ((20, 4, 3), (30, 6, 4), (22, 4, 4), (12, 1, 2)):  # 22 / 4: the host's uneven rule
        e = torch.randn(2, frames, 8, generator=g)
        full = wan.repeat_e(e, torch.empty(2, length, 8))
        for rank in range(U):
            shard = TokenShard(Mesh(Layout(1, U, "tokens"), rank=rank), length)
            x = torch.empty(2, shard.hi - shard.lo, 8)
            got = modulation(shard, x)(e)
            assert torch.equal(got.expand(2, shard.hi - shard.lo, 8), full.expand(2, length, 8)[:, shard.lo:shard.hi])
