"""Exact sharded multi-view sampling on ``torch.distributed`` (NCCL on GPUs, gloo on CPU); pure torch.

Layout ``C x U`` over ``world = C * U`` ranks, rank ``r`` = (CFG index ``c = r // U``, sequence index
``u = r % U``):

- CFG split (``C = 2``): the cond scene runs on ranks ``c = 0``, the uncond scene on ``c = 1``; after
  each model call the two denoised latents are exchanged (``all_gather`` in the CFG group of ranks with
  the same ``u``): one latent per step, nothing per layer.
- Ulysses (``U > 1``) inside a scene, view layout (``Layout.shard`` "views", or "auto" when U divides V):
  rank ``u`` holds the whole views ``view_split(V, U)[u]`` (a contiguous range; sizes differ by at most
  one when U does not divide V). Everything per view (patch embedding, the base self-attention over a
  view's ``2T`` frames, cross-attention, FFN, head) runs on the local views only. The fused branch (SPEC 2)
  is the one place views meet: its q, k, v (after the q/k RMS norms and the fused RoPE, so those stay per
  token) go through an all-to-all that scatters heads and gathers tokens, ``(B, H, N_u, D) -> (B, H/U, N, D)``;
  ``fused_tv_attention`` runs unchanged on the full scene with ``H/U`` heads (same rule, same BlockMask /
  exact path; heads are independent); a second all-to-all brings ``(B, H/U, N, D) -> (B, H, N_u, D)`` back.
  The model output rows are then all-gathered in the sequence group so every rank steps the same full latent.
- Ulysses, token layout ("tokens", or "auto" when U does not divide V; as Wan's own sequence parallel):
  every rank holds all views, and of each view the contiguous tokens ``token_split(2T*S, U)[u]``
  (``TokenShard``; a chunk may end inside a frame). Everything per token (modulation, norms, q/k/v, RoPE,
  cross-attention, FFN) runs on the chunk; the base self-attention (per view) and the fused branch both go
  through the all-to-all, the view's or the scene's tokens gathered in token order (``segments``: the
  chunks of the V views of a scene are put back view-major), the attention unchanged, then back. Balanced
  for any U (also U > V), at twice the view layout's bytes per block.

Each rank runs the host's sampler loop on identical inputs (same seed, same sigmas), so the results
are those of one process up to float rounding of a different batch split.

Bytes each rank sends per block (``ulysses_bytes_per_block``), scene of N tokens, width C = H*D,
``s`` scenes per model call (1 with the CFG split, 2 without), element size ``e``: q, k, v out and o back,
each keeping ``1/U`` of its local ``N_u * C`` elements: ``4 * s * N_u * C * (U - 1) / U * e`` in the view
layout (``N_u = N / U`` when U divides V), ``8 * s * N/U * C * (U - 1) / U * e`` in the token layout (the
base attention's four as well); the token layout also all-gathers the last block's output once per call,
``(U - 1) * s * N/U * C * e``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.distributed as dist
from torch import Tensor

from .attention import fused_tv_attention

__all__ = ["Layout", "Mesh", "TokenShard", "view_split", "token_split", "heads_to_tokens", "tokens_to_heads",
           "ulysses_attention", "gather_rows", "ulysses_bytes_per_block", "CommStats"]


SHARDS = ("auto", "views", "tokens")


@dataclass(frozen=True)
class Layout:
    """``cfg`` (1 or 2) x ``ulysses`` (>= 1) ranks; ``world = cfg * ulysses``.

    shard: how the ``ulysses`` ranks of a scene split it: ``"views"`` whole views per rank, ``"tokens"`` a
    contiguous chunk of every view's tokens per rank, ``"auto"`` views when U divides the views of the
    pass, else tokens (``shards_tokens``)."""

    cfg: int = 1
    ulysses: int = 1
    shard: str = "auto"

    def __post_init__(self) -> None:
        if self.cfg not in (1, 2):
            raise ValueError(f"layout: cfg must be 1 (no CFG split) or 2 (cond / uncond on different ranks), got {self.cfg}")
        if int(self.ulysses) != self.ulysses or self.ulysses < 1:
            raise ValueError(f"layout: ulysses must be an integer >= 1, got {self.ulysses}")
        if self.shard not in SHARDS:
            raise ValueError(f"layout: shard must be one of {SHARDS} (e.g. '1x4:tokens'), got {self.shard!r}")

    @property
    def world(self) -> int:
        return self.cfg * self.ulysses

    @property
    def name(self) -> str:
        """``"CxU"``, with ``":views"`` / ``":tokens"`` when the shard is not auto (``parse`` reads it back)."""
        return f"{self.cfg}x{self.ulysses}" + ("" if self.shard == "auto" else f":{self.shard}")

    def shards_tokens(self, num_views: int) -> bool:
        """True when a pass of ``num_views`` views is split by tokens (else by whole views, or not at all)."""
        if self.ulysses == 1:
            return False
        return self.shard == "tokens" or (self.shard == "auto" and num_views % self.ulysses != 0)

    @classmethod
    def parse(cls, text: str, world: int | None = None) -> "Layout":
        """``"CxU"`` (e.g. ``"2x4"``) or ``"auto"`` (CFG split when world is even, Ulysses over the rest), either
        optionally followed by ``":views"`` or ``":tokens"`` (default: views when U divides V, else tokens)."""
        base, _, shard = text.strip().lower().partition(":")
        shard = shard or "auto"
        if shard not in SHARDS:
            raise ValueError(f"layout: the part after ':' must be views or tokens (e.g. '1x4:tokens'), got {text!r}")
        if base == "auto":
            if world is None:
                raise ValueError("layout 'auto' needs the world size")
            return cls(2, world // 2, shard) if world % 2 == 0 else cls(1, world, shard)
        try:
            c, u = (int(p) for p in base.split("x"))
        except ValueError:
            raise ValueError(f"layout must be 'CxU' (e.g. '2x2': CFG split x 2-way Ulysses) or 'auto', optionally "
                             f"with ':views' or ':tokens', got {text!r}") from None
        return cls(c, u, shard)


def _ranges(n: int, parts: int) -> list[tuple[int, int]]:
    base, extra = divmod(n, parts)
    sizes = [base + (i < extra) for i in range(parts)]
    starts = [sum(sizes[:i]) for i in range(parts)]
    return [(s, s + k) for s, k in zip(starts, sizes)]


def view_split(num_views: int, ulysses: int) -> list[tuple[int, int]]:
    """Contiguous view ranges ``[(v0, v1), ...]`` of the U sequence ranks; sizes differ by at most one."""
    if ulysses > num_views:
        raise ValueError(f"layout: {ulysses}-way Ulysses over whole views needs at least {ulysses} views per pass, "
                         f"the pass has {num_views}; use the token layout ('1x{ulysses}:tokens' or auto), lower "
                         f"ulysses or set views_per_pass=0")
    return _ranges(num_views, ulysses)


def token_split(tokens: int, ulysses: int) -> list[tuple[int, int]]:
    """Contiguous token ranges ``[(lo, hi), ...]`` of one view's ``tokens`` (= 2T*S) for the U sequence ranks of
    the token layout; sizes differ by at most one (a range may start or end inside a frame)."""
    if ulysses > tokens:
        raise ValueError(f"layout: {ulysses}-way token sharding needs at least {ulysses} tokens per view, a view has "
                         f"{tokens}; lower ulysses")
    return _ranges(tokens, ulysses)


@dataclass
class CommStats:
    """Bytes this rank handed to collectives for other ranks (self-chunks excluded), by kind."""

    sent: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, nbytes: int) -> None:
        self.sent[kind] = self.sent.get(kind, 0) + int(nbytes)

    def reset(self) -> None:
        self.sent.clear()


@dataclass(eq=False)
class Mesh:
    """The process groups of a ``Layout`` for this rank (create on every rank, same order)."""

    layout: Layout
    rank: int
    seq_group: object = None
    cfg_group: object = None
    stats: CommStats = field(default_factory=CommStats)

    @property
    def cfg_index(self) -> int:
        return self.rank // self.layout.ulysses

    @property
    def seq_index(self) -> int:
        return self.rank % self.layout.ulysses

    @classmethod
    def create(cls, layout: Layout) -> "Mesh":
        """Groups from the default process group (``dist.init_process_group`` first); world must match."""
        if not dist.is_initialized():
            raise RuntimeError("parallel sampling: torch.distributed is not initialised (run under torchrun or "
                               "call dist.init_process_group first)")
        world, rank = dist.get_world_size(), dist.get_rank()
        if world != layout.world:
            raise ValueError(f"layout {layout.cfg}x{layout.ulysses} needs {layout.world} processes, the world has {world}")
        C, U = layout.cfg, layout.ulysses
        seq = [dist.new_group(list(range(c * U, c * U + U))) for c in range(C)]
        cfg = [dist.new_group([u, U + u]) for u in range(U)] if C == 2 else [None] * U
        return cls(layout, rank, seq[rank // U], cfg[rank % U])

    def __deepcopy__(self, memo) -> "Mesh":  # a handle: model clones share it
        return self


def _a2a(out: Tensor, inp: Tensor, out_splits: list[int], in_splits: list[int], group) -> Tensor:
    dist.all_to_all_single(out, inp, out_splits, in_splits, group=group)
    return out


def heads_to_tokens(x: Tensor, counts: list[int], group, stats: CommStats | None = None, segments: int = 1) -> Tensor:
    """All-to-all: x (B, H, N_rank, D) local tokens, all heads -> (B, H/U, N, D) all tokens, this rank's heads.

    counts: tokens of every rank per segment; the token axis is ``segments`` segments (e.g. the views of a
    scene), each rank holding ``counts[rank]`` tokens of every segment: ``N_rank = segments * counts[rank]``,
    ``N = segments * sum(counts)``, both segment-major (rank order = token order inside a segment).
    ``segments = 1``: ``N = sum(counts)`` in rank order (whole views per rank)."""
    B, H, n, D = x.shape
    U = len(counts)
    if H % U:
        raise ValueError(f"layout: {U}-way Ulysses needs the heads ({H}) divisible by {U}")
    Hu = H // U
    inp = x.reshape(B, U, Hu, n, D).transpose(0, 1).contiguous().reshape(U * B * Hu * n, D)
    out = torch.empty(B * Hu * segments * sum(counts), D, dtype=x.dtype, device=x.device)
    _a2a(out, inp, [B * Hu * segments * c for c in counts], [B * Hu * n] * U, group)
    if stats is not None:
        stats.add("ulysses", (U - 1) * B * Hu * n * D * x.element_size())
    parts = out.split([B * Hu * segments * c for c in counts])
    if len(parts) == 1:
        return parts[0].reshape(B, Hu, n, D)
    dim = 2 if segments == 1 else 3  # (B, Hu, [segments,] c, D) blocks joined along their token axis
    full = torch.cat([p.reshape(B, Hu, segments, c, D) if segments > 1 else p.reshape(B, Hu, c, D)
                      for p, c in zip(parts, counts)], dim=dim)
    return full.reshape(B, Hu, segments * sum(counts), D)


def tokens_to_heads(y: Tensor, counts: list[int], rank: int, group, stats: CommStats | None = None,
                    segments: int = 1) -> Tensor:
    """Inverse of ``heads_to_tokens``: y (B, H/U, N, D) -> (B, H, N_rank, D)."""
    B, Hu, N, D = y.shape
    U = len(counts)
    seg = y.reshape(B, Hu, segments, N // segments, D) if segments > 1 else y
    inp = torch.cat([p.reshape(-1, D) for p in seg.split(counts, dim=seg.dim() - 2)])
    n = segments * counts[rank]
    out = torch.empty(U * B * Hu * n, D, dtype=y.dtype, device=y.device)
    _a2a(out, inp, [B * Hu * n] * U, [B * Hu * segments * c for c in counts], group)
    if stats is not None:
        stats.add("ulysses", (N - n) * B * Hu * D * y.element_size())
    return out.reshape(U, B, Hu, n, D).transpose(0, 1).reshape(B, U * Hu, n, D)


def ulysses_attention(q: Tensor, k: Tensor, v: Tensor, *args, counts: list[int], rank: int, group,
                      stats: CommStats | None = None, attention: Callable[..., Tensor] = fused_tv_attention,
                      segments: int = 1, **kwargs) -> Tensor:
    """``attention(q, k, v, *args, **kwargs)`` (default ``fused_tv_attention``: args = num_views, frames_per_view;
    kwargs = the rule switches) over a scene whose tokens are spread over the ranks of ``group``.

    q, k, v (B, H, N_rank, D) this rank's tokens, after norm and RoPE: whole views (``segments = 1``,
    view-major) or ``counts[rank]`` tokens of each of ``segments`` views (view-major; ``heads_to_tokens``);
    counts: tokens per rank (per segment). Returns (B, H, N_rank, D), equal to the rank's rows of the
    one-process result (heads are independent in ``attention``)."""
    qa, ka, va = (heads_to_tokens(t, counts, group, stats, segments) for t in (q, k, v))
    o = attention(qa, ka, va, *args, **kwargs)
    del qa, ka, va
    return tokens_to_heads(o, counts, rank, group, stats, segments)


def gather_rows(x: Tensor, counts: list[int], group, stats: CommStats | None = None, kind: str = "gather") -> Tensor:
    """All-gather along dim 0 with per-rank row counts (padded to the largest): (counts[rank], ...) -> (sum, ...)."""
    m = max(counts)
    pad = x if x.shape[0] == m else torch.cat([x, x.new_zeros(m - x.shape[0], *x.shape[1:])])
    bufs = [torch.empty_like(pad) for _ in counts]
    dist.all_gather(bufs, pad.contiguous(), group=group)
    if stats is not None:
        stats.add(kind, (len(counts) - 1) * pad.numel() * pad.element_size())
    return torch.cat([b[:c] for b, c in zip(bufs, counts)])


@dataclass(frozen=True, eq=False)
class TokenShard:
    """This rank's part of every view in the token layout: tokens ``lo..hi-1`` of each view's ``length`` tokens
    (``token_split``), in the sequence group of ``mesh``. Every batch row (view) is on every rank."""

    mesh: Mesh
    length: int  # tokens per view (2T * S)

    @property
    def ranges(self) -> list[tuple[int, int]]:
        return token_split(self.length, self.mesh.layout.ulysses)

    @property
    def counts(self) -> list[int]:
        return [b - a for a, b in self.ranges]

    @property
    def lo(self) -> int:
        return self.ranges[self.mesh.seq_index][0]

    @property
    def hi(self) -> int:
        return self.ranges[self.mesh.seq_index][1]

    def local(self, x: Tensor, segments: int = 1) -> Tensor:
        """x (B, segments * length, ...) -> (B, segments * (hi - lo), ...): this rank's tokens of every segment."""
        if x.shape[1] != segments * self.length:
            raise ValueError(f"token shard: expected {segments} x {self.length} tokens on dim 1, got {tuple(x.shape)}")
        if segments == 1:
            return x[:, self.lo:self.hi]
        return x.unflatten(1, (segments, self.length))[:, :, self.lo:self.hi].flatten(1, 2)

    def gather(self, x: Tensor) -> Tensor:
        """All-gather of the token chunks: x (B, hi - lo, C) -> (B, length, C) on every rank of the group."""
        rows = gather_rows(x.transpose(0, 1).contiguous(), self.counts, self.mesh.seq_group, self.mesh.stats)
        return rows.transpose(0, 1).contiguous()

    def attend(self, q: Tensor, k: Tensor, v: Tensor, *args, **kwargs) -> Tensor:
        """``ulysses_attention`` over the group: q, k, v (B, H, segments * (hi - lo), D), this rank's tokens of
        ``segments`` consecutive views (view-major; 1 = one view per batch row, the base attention; V = a scene,
        the fused branch); returns this rank's rows of ``attention(full q, k, v, *args, **kwargs)``."""
        n = self.hi - self.lo
        if q.shape[2] % n:
            raise ValueError(f"token shard: {q.shape[2]} tokens are not whole segments of this rank's {n}")
        return ulysses_attention(q, k, v, *args, counts=self.counts, rank=self.mesh.seq_index,
                                 group=self.mesh.seq_group, stats=self.mesh.stats, segments=q.shape[2] // n, **kwargs)


def ulysses_bytes_per_block(tokens: int, dim: int, ulysses: int, element_size: int, scenes: int = 1,
                            shard: str = "views") -> float:
    """Formula (module docstring): bytes one rank sends per block, scene of ``tokens`` tokens split evenly.

    shard "views": the fused branch's 4 all-to-alls; "tokens": the base attention's 4 as well (twice that)."""
    if shard not in ("views", "tokens"):
        raise ValueError(f"shard must be 'views' or 'tokens', got {shard!r}")
    U = ulysses
    return (4 if shard == "views" else 8) * scenes * (tokens / U) * dim * (U - 1) / U * element_size
