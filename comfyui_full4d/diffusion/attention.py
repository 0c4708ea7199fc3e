"""Fused time-view sparse attention over one scene of V views (SPEC 2, paper Eq. 9-10).

Token ``i`` has coordinates ``(v_i, f_i, s_i)``: view ``v`` in ``0..V-1`` (view 0 = source),
frame slot ``f`` in ``0..F-1`` with ``F = 2T`` (``f < T`` target half, ``f >= T`` condition half),
spatial index ``s`` in ``0..S-1``. Tokens are ordered view-major: ``i = (v * F + f) * S + s``.
Key ``k`` is visible to query ``q`` when any holds:

1. intra-view:  ``v_q == v_k``                                  (always on)
2. intra-time:  ``f_q == f_k``                                  (switch ``intra_time``)
3. cross-half:  ``v_k == 0 and f_k >= T and f_q < T``           (switch ``cross_half``)

and ``out_q = sum_k softmax_k(q . k / sqrt(D)) v_k`` over the visible keys only.

Backends (internal keyword ``backend``):

- ``"exact"`` (CPU, and the fallback everywhere): the visible set of a query is split into three
  disjoint pieces, each a dense attention without an N x N tensor:
  A = own view (batched over views), B = the other views at the same frame slot (batched over
  slots, a small (V*S, V*S) same-view mask), C = the source's condition half for target-half
  queries of target views. Each piece returns ``(out_p, lse_p)``; the result is the log-sum-exp
  merge ``out = sum_p exp(lse_p - lse) out_p`` with ``lse = logsumexp_p lse_p``. Without
  autograd on CPU each piece is one call of aten's fused CPU flash kernel (it returns the lse and
  tiles internally) and the merge is in place. Otherwise pieces are plain torch tiles of at most
  ``_MAX_TILE`` score elements, each checkpointed (recomputed in backward), so training memory is
  O(N * D) plus one tile. Half inputs are upcast to float32 and the result cast back (at least
  as accurate as SDPA in half, which also accumulates in float32) at the cost of float32 copies.
- ``"flex"``: ``torch.nn.attention.flex_attention`` with a BlockMask from the same rule
  (``mask_mod`` from frame indices, 128-token blocks: frames align with blocks only when S is a
  multiple of 128; partial blocks are resolved by ``mask_mod``). On CUDA it is
  ``torch.compile``-d once and cached (one recompile per new shape); on CPU it runs eagerly (the
  unfused path materialises scores: tests at tiny sizes only; Flex has no CPU backward).
  It computes in the input dtype with float32 accumulation, like SDPA.
- ``"auto"``: flex on CUDA, exact elsewhere; any flex failure falls back to exact (warned once).
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Callable

import torch
import torch.nn.functional as F_nn
from torch import Tensor
from torch.utils.checkpoint import checkpoint

__all__ = ["frame_visibility", "fused_tv_attention", "fused_tv_attention_reference"]

_MAX_TILE = 1 << 22  # max elements of one score tile (16 MiB in float32)
_BACKENDS = ("auto", "exact", "flex")
_FLEX_BLOCK = 128
_FLEX_COMPILE_CPU = False  # compile Flex on CPU too (about 20 s per shape here; tests of the compiled path)
_CPU_FLASH = True  # use aten's fused CPU flash kernel (returns lse) for inference tiles when available


def _check_counts(num_views: int, frames_per_view: int, cross_half: bool = True) -> tuple[int, int]:
    V, F = int(num_views), int(frames_per_view)
    if V < 1 or V != num_views:
        raise ValueError(f"num_views must be a positive integer, got {num_views!r}")
    if cross_half and (F < 2 or F % 2 or F != frames_per_view):
        raise ValueError(f"frames_per_view must be a positive even integer (2T: target half then condition "
                         f"half), got {frames_per_view!r}")
    if F < 1 or F != frames_per_view:  # without rule 3 there are no halves: any frame count
        raise ValueError(f"frames_per_view must be a positive integer, got {frames_per_view!r}")
    return V, F


def _visible(vq: Tensor, fq: Tensor, vk: Tensor, fk: Tensor, T: int, intra_time: bool,
             cross_half: bool) -> Tensor:
    """The SPEC 2 rule on broadcastable integer tensors of view / frame-slot indices."""
    vis = vq == vk
    if intra_time:
        vis = vis | (fq == fk)
    if cross_half:
        vis = vis | ((vk == 0) & (fk >= T) & (fq < T))
    return vis


def frame_visibility(num_views: int, frames_per_view: int, *, intra_time: bool = True,
                     cross_half: bool = True) -> Tensor:
    """SPEC 2 rule at frame granularity: ``vis[q, k]`` for query frame row ``q = v_q*F + f_q``, key column k.

    frames_per_view F = 2T (target half then condition half); view 0 is the source. Without rule 3
    (``cross_half=False``) there are no halves and any F >= 1 is allowed.
    Returns (V*F, V*F) bool. Density at V=6, T=21 is 0.221.
    """
    V, F = _check_counts(num_views, frames_per_view, cross_half)
    idx = torch.arange(V * F)
    v, f = idx // F, idx % F
    return _visible(v[:, None], f[:, None], v[None, :], f[None, :], F // 2, intra_time, cross_half)


def _check_qkv(q: Tensor, k: Tensor, v: Tensor, num_views: int, frames_per_view: int,
               cross_half: bool = True) -> tuple[int, int, int]:
    V, F = _check_counts(num_views, frames_per_view, cross_half)
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.dim() != 4:
            raise ValueError(f"{name} must be (B, heads, V*F*S, head_dim), got shape {tuple(x.shape)}")
    if not (q.shape == k.shape and k.shape[:3] == v.shape[:3]):
        raise ValueError(f"q, k, v shapes disagree: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}; "
                         f"they must be (B, heads, V*F*S, head_dim) with k like q")
    if not (q.dtype == k.dtype == v.dtype and q.device == k.device == v.device):
        raise ValueError(f"q, k, v must share dtype and device, got {q.dtype}/{q.device}, {k.dtype}/{k.device}, "
                         f"{v.dtype}/{v.device}")
    if not q.is_floating_point():
        raise ValueError(f"q, k, v must be floating point, got {q.dtype}")
    N = q.shape[2]
    if N == 0 or N % (V * F):
        raise ValueError(f"sequence length {N} is not divisible by num_views*frames_per_view = {V}*{F}; "
                         f"tokens must be ordered view, frame, spatial with S tokens per frame")
    return V, F, N // (V * F)


# --------------------------------------------------------------------------- exact path


def _tile(q: Tensor, k: Tensor, v: Tensor, drop: Tensor | None) -> tuple[Tensor, Tensor]:
    """Dense attention of a tile. q (g, c, D) pre-scaled; k (g, L, D); v (g, L, Dv); drop (c, L) bool or None.

    Returns out (g, c, Dv) and lse (g, c) (log of the softmax denominator)."""
    s = torch.matmul(q, k.transpose(-1, -2))  # (g, c, L)
    if drop is not None:
        s = s.masked_fill(drop, float("-inf"))
    m = s.amax(-1, keepdim=True).detach()  # every row has a visible key by construction
    p = s.sub_(m).exp_()
    den = p.sum(-1, keepdim=True)
    out = torch.matmul(p, v) / den
    return out, (m + den.log()).squeeze(-1)


def _cpu_flash(q: Tensor, k: Tensor, v: Tensor, scale: float, drop: Tensor | None) -> tuple[Tensor, Tensor] | None:
    """aten's CPU flash kernel (tiled internally: O(L * D) memory); None if this torch lacks it."""
    global _CPU_FLASH
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is None:
        _CPU_FLASH = False
        return None
    mask = None if drop is None else torch.zeros(drop.shape, dtype=q.dtype).masked_fill_(drop, float("-inf"))
    try:
        out, lse = op(q[None], k[None], v[None], attn_mask=mask, scale=scale)
    except RuntimeError:  # unsupported dtype / layout in this build: use the tiled torch path
        _CPU_FLASH = False
        return None
    return out[0], lse[0].to(out.dtype)


def _attend(q: Tensor, k: Tensor, v: Tensor, scale: float, drop: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Dense attention with lse, chunked so a score tile has at most _MAX_TILE elements.

    q (G, Lq, D); k (G, Lk, D); v (G, Lk, Dv); drop (Lq, Lk) bool (True = masked) or None.
    Returns out (G, Lq, Dv), lse (G, Lq)."""
    G, Lq, D = q.shape
    Lk = k.shape[1]
    grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    if _CPU_FLASH and not grad and q.device.type == "cpu" and v.shape[-1] == D:
        res = _cpu_flash(q, k, v, scale, drop)
        if res is not None:
            return res
    rows = max(1, _MAX_TILE // Lk)  # query rows (over all of g) per tile
    g_step = max(1, min(G, rows // Lq))
    q_step = max(1, min(Lq, rows)) if g_step == 1 else Lq
    outs, lses = [], []
    for g0 in range(0, G, g_step):
        g1 = min(G, g0 + g_step)
        o_row, l_row = [], []
        for c0 in range(0, Lq, q_step):
            c1 = min(Lq, c0 + q_step)
            args = (q[g0:g1, c0:c1] * scale, k[g0:g1], v[g0:g1], None if drop is None else drop[c0:c1])
            o, lse = checkpoint(_tile, *args, use_reentrant=False) if grad else _tile(*args)
            o_row.append(o)
            l_row.append(lse)
        outs.append(torch.cat(o_row, 1) if len(o_row) > 1 else o_row[0])
        lses.append(torch.cat(l_row, 1) if len(l_row) > 1 else l_row[0])
    return (torch.cat(outs, 0) if len(outs) > 1 else outs[0]), (torch.cat(lses, 0) if len(lses) > 1 else lses[0])


def _exact(q: Tensor, k: Tensor, v: Tensor, V: int, F: int, S: int, intra_time: bool, cross_half: bool) -> Tensor:
    """Three disjoint pieces (own view, other views same slot, source condition half) merged by lse."""
    B, H, N, D = q.shape
    Dv = v.shape[-1]
    T = F // 2
    scale = 1.0 / math.sqrt(D)
    dtype = q.dtype
    if dtype in (torch.float16, torch.bfloat16):
        q, k, v = q.float(), k.float(), v.float()
    q6, k6, v6 = (x.reshape(B, H, V, F, S, x.shape[-1]) for x in (q, k, v))

    # A: intra-view, batched over (B, H, V)
    o, lse = _attend(*(x.reshape(B * H * V, F * S, x.shape[-1]) for x in (q, k, v)), scale)
    out, lse_out = o.reshape(B, H, V, F, S, Dv), lse.reshape(B, H, V, F, S)

    if V > 1 and intra_time:  # B: same slot in other views, batched over (B, H, F)
        def by_slot(x6: Tensor) -> Tensor:
            return x6.transpose(2, 3).reshape(B * H * F, V * S, x6.shape[-1])
        view_of = torch.arange(V * S, device=q.device) // S
        o, lse = _attend(by_slot(q6), by_slot(k6), by_slot(v6), scale, view_of[:, None] == view_of[None, :])
        out, lse_out = _merge(out, lse_out, o.reshape(B, H, F, V, S, Dv).transpose(2, 3),
                              lse.reshape(B, H, F, V, S).transpose(2, 3))

    if V > 1 and cross_half:  # C: target halves of views 1.. read the source's condition half
        qc = q6[:, :, 1:, :T].reshape(B * H, (V - 1) * T * S, D)
        o, lse = _attend(qc, k6[:, :, 0, T:].reshape(B * H, T * S, D), v6[:, :, 0, T:].reshape(B * H, T * S, Dv), scale)
        o_reg, l_reg = _merge(out[:, :, 1:, :T], lse_out[:, :, 1:, :T], o.reshape(B, H, V - 1, T, S, Dv),
                              lse.reshape(B, H, V - 1, T, S))
        if not o_reg.requires_grad:  # _merge worked in place on the views of out
            return out.reshape(B, H, N, Dv).to(dtype)
        rest = torch.cat([o_reg, out[:, :, 1:, T:]], 3)
        out = torch.cat([out[:, :, :1], rest], 2)
    return out.reshape(B, H, N, Dv).to(dtype)


def _merge(o1: Tensor, l1: Tensor, o2: Tensor, l2: Tensor) -> tuple[Tensor, Tensor]:
    """Log-sum-exp merge of two disjoint key sets: o = (e^l1 o1 + e^l2 o2) / (e^l1 + e^l2), l = log(e^l1 + e^l2).

    o (..., Dv), l (...). Without autograd it overwrites o1 and l1 and returns them."""
    m = torch.maximum(l1, l2).detach()
    a, b = torch.exp(l1 - m), torch.exp(l2 - m)
    den = a + b
    if torch.is_grad_enabled() and (o1.requires_grad or o2.requires_grad):
        return (o1 * a[..., None] + o2 * b[..., None]) / den[..., None], m + den.log()
    o1.mul_(a[..., None]).add_(o2 * b[..., None]).div_(den[..., None])
    l1.copy_(m + den.log())
    return o1, l1


# --------------------------------------------------------------------------- flex path


def _mask_mod(V: int, F: int, S: int, intra_time: bool, cross_half: bool) -> Callable:
    def mask_mod(b, h, q_idx, kv_idx):
        fq, fk = q_idx // S, kv_idx // S
        return _visible(fq // F, fq % F, fk // F, fk % F, F // 2, intra_time, cross_half)
    return mask_mod


def _ordered(dense: Tensor) -> tuple[Tensor, Tensor]:
    """(nq, nk) 0/1 block map -> per-row count and column indices, set columns first (Flex's layout)."""
    dense = dense.to(torch.int32)
    return dense.sum(-1).to(torch.int32), torch.argsort(dense, dim=-1, descending=True, stable=True).to(torch.int32)


@functools.lru_cache(maxsize=32)
def _block_mask(V: int, F: int, S: int, intra_time: bool, cross_half: bool, device: str, block: int = _FLEX_BLOCK):
    """Flex BlockMask straight from the frame rule, never the (N, N) mask that create_block_mask builds.

    A (block x block) tile covers query frames lo_q..hi_q and key frames lo_k..hi_k, and every token
    pair in it has the visibility of its frame pair: the tile is empty when no frame pair in that
    rectangle is visible, full when all are (and the tile lies inside N: edge tiles stay partial, as
    in create_block_mask), partial otherwise. Rectangle counts come from a 2D prefix sum of the
    (V*F, V*F) frame rule."""
    from torch.nn.attention.flex_attention import BlockMask
    N = V * F * S
    vis = frame_visibility(V, F, intra_time=intra_time, cross_half=cross_half).to(torch.int64)
    P = torch.zeros(V * F + 1, V * F + 1, dtype=torch.int64)
    P[1:, 1:] = vis.cumsum(0).cumsum(1)
    start = torch.arange(0, N, block)
    lo, hi = start // S, (torch.clamp(start + block, max=N) - 1) // S  # frame range of each tile (nb,)
    count = P[hi + 1][:, hi + 1] - P[lo][:, hi + 1] - P[hi + 1][:, lo] + P[lo][:, lo]  # (nb, nb)
    span = hi - lo + 1
    inside = start + block <= N
    full = (count == span[:, None] * span[None, :]) & inside[:, None] & inside[None, :]
    partial = (count > 0) & ~full
    (kn, ki), (fn, fi) = (_ordered(x.to(device)[None, None]) for x in (partial, full))
    return BlockMask.from_kv_blocks(kn, ki, fn, fi, BLOCK_SIZE=(block, block),
                                    mask_mod=_mask_mod(V, F, S, intra_time, cross_half), seq_lengths=(N, N))


@functools.lru_cache(maxsize=1)
def _compiled_flex() -> Callable:
    from torch.nn.attention.flex_attention import flex_attention
    return torch.compile(flex_attention, dynamic=False)


def _flex(q: Tensor, k: Tensor, v: Tensor, V: int, F: int, S: int, intra_time: bool, cross_half: bool) -> Tensor:
    from torch.nn.attention.flex_attention import flex_attention
    bm = _block_mask(V, F, S, intra_time, cross_half, str(q.device))
    if q.is_cuda or _FLEX_COMPILE_CPU:
        return _compiled_flex()(q, k, v, block_mask=bm)
    with warnings.catch_warnings():  # eager CPU flex materialises scores; used by tests at tiny sizes only
        warnings.simplefilter("ignore")
        return flex_attention(q, k, v, block_mask=bm)


_warned_fallback = False


def fused_tv_attention(q: Tensor, k: Tensor, v: Tensor, num_views: int, frames_per_view: int, *,
                       intra_time: bool = True, cross_half: bool = True, backend: str = "auto") -> Tensor:
    """Softmax attention restricted to the SPEC 2 rule, scale 1/sqrt(head_dim).

    q, k: (B, heads, N, D); v: (B, heads, N, Dv) with N = V*F*S ordered view, frame, spatial
    (F = frames_per_view = 2T, or any F >= 1 with ``cross_half=False``; S derived from N).
    Returns (B, heads, N, Dv) in q's dtype.
    backend: "auto" (flex on CUDA, exact otherwise, exact if flex fails), "exact", "flex".
    """
    global _warned_fallback
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    V, F, S = _check_qkv(q, k, v, num_views, frames_per_view, cross_half)
    args = (V, F, S, bool(intra_time), bool(cross_half))
    if backend == "flex" or (backend == "auto" and q.is_cuda):
        try:
            return _flex(q, k, v, *args)
        except Exception as e:  # Flex missing, unsupported dtype/shape, or compile failure
            if backend == "flex":
                raise
            if not _warned_fallback:
                warnings.warn(f"fused_tv_attention: FlexAttention failed ({type(e).__name__}: {e}); "
                              f"using the exact path", RuntimeWarning)
                _warned_fallback = True
    return _exact(q, k, v, *args)


def fused_tv_attention_reference(q: Tensor, k: Tensor, v: Tensor, num_views: int, frames_per_view: int, *,
                                 intra_time: bool = True, cross_half: bool = True) -> Tensor:
    """Dense masked SDPA with the token-level (N, N) mask materialised. Tests and benchmarks only.

    Same shapes as ``fused_tv_attention``."""
    V, F, S = _check_qkv(q, k, v, num_views, frames_per_view, cross_half)
    vis = frame_visibility(V, F, intra_time=intra_time, cross_half=cross_half).to(q.device)
    mask = vis.repeat_interleave(S, 0).repeat_interleave(S, 1)  # (N, N)
    return F_nn.scaled_dot_product_attention(q, k, v, attn_mask=mask)
