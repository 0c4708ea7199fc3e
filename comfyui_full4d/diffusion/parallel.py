"""Exact sharded multi-view sampling on ``torch.distributed`` (NCCL on GPUs, gloo on CPU); pure torch.

Layout ``C x U`` over ``world = C * U`` ranks, rank ``r`` = (CFG index ``c = r // U``, sequence index
``u = r % U``):

- CFG split (``C = 2``): the cond scene runs on ranks ``c = 0``, the uncond scene on ``c = 1``; after
  each model call the two denoised latents are exchanged (``all_gather`` in the CFG group of ranks with
  the same ``u``): one latent per step, nothing per layer.
- Ulysses (``U > 1``) inside a scene: rank ``u`` holds the whole views ``view_split(V, U)[u]`` (a
  contiguous range; sizes differ by at most one when U does not divide V). Everything per view (patch
  embedding, the base self-attention over a view's ``2T`` frames, cross-attention, FFN, head) runs on
  the local views only. The fused branch (SPEC 2) is the one place views meet: its q, k, v (after the
  q/k RMS norms and the fused RoPE, so those stay per token) go through an all-to-all that scatters heads
  and gathers tokens, ``(B, H, N_u, D) -> (B, H/U, N, D)``; ``fused_tv_attention`` runs unchanged on the
  full scene with ``H/U`` heads (same rule, same BlockMask / exact path; heads are independent); a
  second all-to-all brings ``(B, H/U, N, D) -> (B, H, N_u, D)`` back. The model output rows are then
  all-gathered in the sequence group so every rank steps the same full latent.

Each rank runs the host's sampler loop on identical inputs (same seed, same sigmas), so the results
are those of one process up to float rounding of a different batch split.

Bytes each rank sends per block (``ulysses_bytes_per_block``), scene of N tokens, width C = H*D,
``s`` scenes per model call (1 with the CFG split, 2 without), element size ``e``: q, k, v out and o back,
each keeping ``1/U`` of its local ``N_u * C`` elements: ``4 * s * N_u * C * (U - 1) / U * e``
(``N_u = N / U`` when U divides V).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.distributed as dist
from torch import Tensor

from .attention import fused_tv_attention

__all__ = ["Layout", "Mesh", "view_split", "heads_to_tokens", "tokens_to_heads", "ulysses_attention",
           "gather_rows", "ulysses_bytes_per_block", "CommStats"]


@dataclass(frozen=True)
class Layout:
    """``cfg`` (1 or 2) x ``ulysses`` (>= 1) ranks; ``world = cfg * ulysses``."""

    cfg: int = 1
    ulysses: int = 1

    def __post_init__(self) -> None:
        if self.cfg not in (1, 2):
            raise ValueError(f"layout: cfg must be 1 (no CFG split) or 2 (cond / uncond on different ranks), got {self.cfg}")
        if int(self.ulysses) != self.ulysses or self.ulysses < 1:
            raise ValueError(f"layout: ulysses must be an integer >= 1, got {self.ulysses}")

    @property
    def world(self) -> int:
        return self.cfg * self.ulysses

    @classmethod
    def parse(cls, text: str, world: int | None = None) -> "Layout":
        """``"CxU"`` (e.g. ``"2x4"``) or ``"auto"`` (CFG split when world is even, Ulysses over the rest)."""
        if text == "auto":
            if world is None:
                raise ValueError("layout 'auto' needs the world size")
            return cls(2, world // 2) if world % 2 == 0 else cls(1, world)
        try:
            c, u = (int(p) for p in text.lower().split("x"))
        except ValueError:
            raise ValueError(f"layout must be 'CxU' (e.g. '2x2': CFG split x 2-way Ulysses) or 'auto', "
                             f"got {text!r}") from None
        return cls(c, u)


def view_split(num_views: int, ulysses: int) -> list[tuple[int, int]]:
    """Contiguous view ranges ``[(v0, v1), ...]`` of the U sequence ranks; sizes differ by at most one."""
    if ulysses > num_views:
        raise ValueError(f"layout: {ulysses}-way Ulysses needs at least {ulysses} views per pass, the pass has "
                         f"{num_views}; lower ulysses or views_per_pass=0")
    base, extra = divmod(num_views, ulysses)
    sizes = [base + (i < extra) for i in range(ulysses)]
    starts = [sum(sizes[:i]) for i in range(ulysses)]
    return [(s, s + n) for s, n in zip(starts, sizes)]


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


def heads_to_tokens(x: Tensor, counts: list[int], group, stats: CommStats | None = None) -> Tensor:
    """All-to-all: x (B, H, N_rank, D) local tokens, all heads -> (B, H/U, N, D) all tokens, this rank's heads.

    counts: tokens of every rank (``sum(counts) = N``, rank order = token order)."""
    B, H, n, D = x.shape
    U = len(counts)
    if H % U:
        raise ValueError(f"layout: {U}-way Ulysses needs the heads ({H}) divisible by {U}")
    Hu = H // U
    inp = x.reshape(B, U, Hu, n, D).transpose(0, 1).contiguous().reshape(U * B * Hu * n, D)
    out = torch.empty(B * Hu * sum(counts), D, dtype=x.dtype, device=x.device)
    _a2a(out, inp, [B * Hu * c for c in counts], [B * Hu * n] * U, group)
    if stats is not None:
        stats.add("ulysses", (U - 1) * B * Hu * n * D * x.element_size())
    parts = out.split([B * Hu * c for c in counts])
    return torch.cat([p.reshape(B, Hu, c, D) for p, c in zip(parts, counts)], dim=2)


def tokens_to_heads(y: Tensor, counts: list[int], rank: int, group, stats: CommStats | None = None) -> Tensor:
    """Inverse of ``heads_to_tokens``: y (B, H/U, N, D) -> (B, H, N_rank, D)."""
    B, Hu, N, D = y.shape
    U = len(counts)
    inp = torch.cat([p.reshape(-1, D) for p in y.split(counts, dim=2)])
    n = counts[rank]
    out = torch.empty(U * B * Hu * n, D, dtype=y.dtype, device=y.device)
    _a2a(out, inp, [B * Hu * n] * U, [B * Hu * c for c in counts], group)
    if stats is not None:
        stats.add("ulysses", (N - n) * B * Hu * D * y.element_size())
    return out.reshape(U, B, Hu, n, D).transpose(0, 1).reshape(B, U * Hu, n, D)


def ulysses_attention(q: Tensor, k: Tensor, v: Tensor, *args, counts: list[int], rank: int, group,
                      stats: CommStats | None = None, attention: Callable[..., Tensor] = fused_tv_attention,
                      **kwargs) -> Tensor:
    """``attention(q, k, v, *args, **kwargs)`` (default ``fused_tv_attention``: args = num_views, frames_per_view;
    kwargs = the rule switches) over a scene whose tokens are spread over the ranks of ``group``.

    q, k, v (B, H, N_rank, D) this rank's tokens (view-major, whole views), after norm and RoPE;
    counts: tokens per rank. Returns (B, H, N_rank, D), equal to the rank's rows of the one-process result
    (heads are independent in ``attention``)."""
    qa, ka, va = (heads_to_tokens(t, counts, group, stats) for t in (q, k, v))
    o = attention(qa, ka, va, *args, **kwargs)
    del qa, ka, va
    return tokens_to_heads(o, counts, rank, group, stats)


def gather_rows(x: Tensor, counts: list[int], group, stats: CommStats | None = None, kind: str = "gather") -> Tensor:
    """All-gather along dim 0 with per-rank row counts (padded to the largest): (counts[rank], ...) -> (sum, ...)."""
    m = max(counts)
    pad = x if x.shape[0] == m else torch.cat([x, x.new_zeros(m - x.shape[0], *x.shape[1:])])
    bufs = [torch.empty_like(pad) for _ in counts]
    dist.all_gather(bufs, pad.contiguous(), group=group)
    if stats is not None:
        stats.add(kind, (len(counts) - 1) * pad.numel() * pad.element_size())
    return torch.cat([b[:c] for b, c in zip(bufs, counts)])


def ulysses_bytes_per_block(tokens: int, dim: int, ulysses: int, element_size: int, scenes: int = 1) -> float:
    """Formula (module docstring): bytes one rank sends per block, scene of ``tokens`` tokens split evenly."""
    U = ulysses
    return 4 * scenes * (tokens / U) * dim * (U - 1) / U * element_size
