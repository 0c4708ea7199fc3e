"""The host side of exact sharded sampling (``comfyui_full4d.diffusion.parallel``: layouts, collectives, maths).

``with_mesh(model, mesh)`` returns a clone of a Full-4D patched ModelPatcher whose sampling is spread
over the ranks of ``mesh``; every rank runs the same host sampler (``sample_full4d``) on the same inputs
and gets the same full result:

- CFG split (``mesh.layout.cfg == 2``): ``model_options["sampler_calc_cond_batch_function"]`` (the
  host's public hook in ``comfy.samplers.sampling_function``) runs the host's ``calc_cond_batch`` on
  this rank's half only (cond on CFG index 0, uncond on 1) and all-gathers the two predictions in the
  CFG group. With ``cfg == 1`` the host drops the uncond: both halves then compute the cond.
- Ulysses (``mesh.layout.ulysses > 1``): the Full-4D diffusion-model wrapper (``patch.py``) hands the
  call to ``split_call``: this rank's whole views (``parallel.view_split``) of every scene in the
  batch go through the host's ``WanModel`` with a ``Full4DRun`` limited to them (their fused RoPE and
  cameras) whose fused attention is ``parallel.ulysses_attention``; the output rows are all-gathered
  in the sequence group and put back in the host's row order.
- Token layout (``mesh.layout.shards_tokens(V)``: U does not divide V under ``auto``, or ``:tokens``): every
  rank runs all rows; the first block keeps this rank's tokens ``parallel.token_split(2T*S, U)[u]`` of each
  view (``sharded_block``), every block runs on them with the per-frame modulation expanded to those tokens
  (``modulation``: the host's ``repeat_e`` rule) and the RoPE tables sliced to them, the base self-attention
  goes through the all-to-all around the host's ``optimized_attention`` (``shard_self_attention``) and the
  fused branch through ``TokenShard.attend`` (``fused_tv_attention`` unchanged); the last block all-gathers
  the tokens, so the host's head and unpatchify see the whole sequence (as Wan's own sequence parallel,
  ``wan/distributed``, chunks after the patch embedding and gathers before the unpatchify).
"""

from __future__ import annotations

import functools
from typing import Callable

import comfy.ldm.wan.model as wan
import comfy.samplers
import torch
from comfy.ldm.flux.math import apply_rope1
from torch import Tensor

from ..diffusion.parallel import Mesh, TokenShard, gather_rows, ulysses_attention, view_split

__all__ = ["with_mesh", "split_call", "sharded_block", "modulation", "self_attention_qkv", "shard_self_attention",
           "MESH_KEY"]

MESH_KEY = "full4d_mesh"  # transformer_options entry: the Mesh a scene wrapper shards over

CALC_COND_BATCH = "sampler_calc_cond_batch_function"


def with_mesh(model, mesh: Mesh | None):
    """Clone of a host ModelPatcher sampling on ``mesh`` (None or a 1x1 layout: the one-process path).

    Ulysses needs a model whose scene wrapper shards (the Full-4D adapter's, or the training-free
    cross-view mode's); the CFG split works for any model."""
    m = model.clone()
    m.model_options["transformer_options"].pop(MESH_KEY, None)
    if m.model_options.get(CALC_COND_BATCH) is not None and getattr(m.model_options[CALC_COND_BATCH], "full4d", 0):
        del m.model_options[CALC_COND_BATCH]
    if mesh is None or mesh.layout.world == 1:
        return m
    if CALC_COND_BATCH in m.model_options:
        raise ValueError("model: another node already set the sampler's calc_cond_batch function; the Full-4D CFG "
                         "split cannot be combined with it (use a 1xU layout)")
    if mesh.layout.ulysses > 1:
        m.model_options["transformer_options"][MESH_KEY] = mesh
    if mesh.layout.cfg == 2:
        m.model_options[CALC_COND_BATCH] = _cfg_split(mesh)
    return m


def _cfg_split(mesh: Mesh):
    def full4d_cfg_split(args: dict) -> list[Tensor]:
        conds, x, sigma = args["conds"], args["input"], args["sigma"]
        model, options = args["model"], args["model_options"]
        if conds[1] is None:  # cfg 1: the host skips the uncond, nothing to split
            return comfy.samplers.calc_cond_batch(model, conds, x, sigma, options)
        c = mesh.cfg_index
        mine = comfy.samplers.calc_cond_batch(model, [conds[i] if i == c else None for i in range(2)], x, sigma,
                                              options)[c]
        both = gather_rows(mine, [mine.shape[0]] * 2, mesh.cfg_group, mesh.stats, kind="cfg")
        return list(both.chunk(2))

    full4d_cfg_split.full4d = 1
    return full4d_cfg_split


def split_call(executor, mesh: Mesh, num_views: int, tokens_per_view: int, run_for: Callable, x: Tensor,
               timestep: Tensor, context: Tensor, time_dim_concat: Tensor | None, opts: dict, **kwargs) -> Tensor:
    """One ``WanModel`` call on this rank's share of every scene; returns all rows (B, C, T, h, w) in the host's order.

    x (B, C, T, h, w), timestep (B, ...), context (B, L, C_text), time_dim_concat like x or None, with
    B = scenes * V rows, scene ``j`` = rows ``j*V .. j*V+V-1``. ``run_for(views, attend, shard)`` gives the
    transformer-options entries for the call: view layout: rows holding views ``views = (a, b)``, ``attend``
    ``ulysses_attention`` bound to this rank (call it like the one-process scene attention, with ``attention=``
    to pick that one), ``shard`` None; token layout: ``views`` None (all rows), ``shard`` this rank's
    ``TokenShard`` and ``attend`` its ``attend`` (the blocks then go through ``sharded_block``)."""
    V, U = num_views, mesh.layout.ulysses
    if mesh.layout.shards_tokens(V):
        shard = TokenShard(mesh, tokens_per_view)
        local_opts = {**opts, **run_for(None, shard.attend, shard)}
        return executor(x, timestep, context, None, time_dim_concat, local_opts, **kwargs)
    ranges = view_split(V, U)
    scenes = x.shape[0] // V
    rows_of = [[j * V + v for j in range(scenes) for v in range(a, b)] for a, b in ranges]
    attend = functools.partial(ulysses_attention, counts=[(b - a) * tokens_per_view for a, b in ranges],
                               rank=mesh.seq_index, group=mesh.seq_group, stats=mesh.stats)
    idx = torch.as_tensor(rows_of[mesh.seq_index], device=x.device)
    tdc = None if time_dim_concat is None else time_dim_concat[idx]
    local_opts = {**opts, **run_for(ranges[mesh.seq_index], attend, None)}
    out = executor(x[idx], timestep[idx], context[idx], None, tdc, local_opts, **kwargs)
    gathered = gather_rows(out, [len(r) for r in rows_of], mesh.seq_group, mesh.stats)
    full = torch.empty((x.shape[0], *gathered.shape[1:]), dtype=gathered.dtype, device=gathered.device)
    full[torch.as_tensor([r for rows in rows_of for r in rows], device=full.device)] = gathered
    return full


def sharded_block(shard: TokenShard | None, index: int, num_blocks: int, x: Tensor, freqs: Tensor,
                  forward: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """``forward(x, freqs)`` of block ``index``; in the token layout on this rank's tokens: block 0 takes them from
    the host's full x (B, 2T*S, C), every block gets the per-view RoPE table sliced to them, and the last block
    all-gathers its output back to (B, 2T*S, C) for the host's head. shard None: unchanged."""
    if shard is None:
        return forward(x, freqs)
    if index == 0:
        x = shard.local(x)
    out = forward(x, shard.local(freqs))
    return shard.gather(out) if index == num_blocks - 1 else out


def modulation(shard: TokenShard | None, x: Tensor) -> Callable[[Tensor], Tensor]:
    """``e_i -> wan.repeat_e(e_i, x)``, the host's expansion of a per-frame modulation (B, F, C) to x's tokens; in
    the token layout the expansion over the whole view's ``shard.length`` tokens, restricted to this rank's
    (an index of the same rule, never the whole view's (B, 2T*S, C))."""
    if shard is None:
        return lambda e: wan.repeat_e(e, x)
    cache: dict[tuple, Tensor] = {}

    def rep(e: Tensor) -> Tensor:
        E = e.size(1)
        if E == 1:
            return e
        if (E, e.device) not in cache:
            idx = wan.repeat_e(torch.arange(E, device=e.device).view(1, E, 1), torch.empty(1, shard.length, 0))
            cache[E, e.device] = idx[0, shard.lo:shard.hi, 0]
        return e[:, cache[E, e.device]]

    return rep


def self_attention_qkv(sa, x: Tensor, freqs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """q, k, v of the host's ``WanSelfAttention`` ``sa`` as its forward makes them (RMS norm, then RoPE on q and k):
    x (B, L, C), freqs the RoPE rows of those L tokens -> each (B, L, heads, head_dim)."""
    b, s, n, d = *x.shape[:2], sa.num_heads, sa.head_dim
    q = apply_rope1(sa.norm_q(sa.q(x)).view(b, s, n, d), freqs)
    k = apply_rope1(sa.norm_k(sa.k(x)).view(b, s, n, d), freqs)
    return q, k, sa.v(x).view(b, s, n, d)


def shard_self_attention(sa, x: Tensor, freqs: Tensor, shard: TokenShard, transformer_options: dict) -> Tensor:
    """``WanSelfAttention.forward`` (its q/k/v/o, RMS norms, RoPE and the host's ``optimized_attention``) on this
    rank's tokens of every view: x (B, n, C), freqs this rank's RoPE rows; q, k, v go through the all-to-all
    (heads scattered, the view's tokens gathered), the host's attention runs per view with H/U heads on the
    same (B, 2T*S, heads*D) layout as in one process, and the output comes back to this rank's tokens."""
    b, s, n, d = *x.shape[:2], sa.num_heads, sa.head_dim
    q, k, v = self_attention_qkv(sa, x, freqs)

    def attention(qa: Tensor, ka: Tensor, va: Tensor) -> Tensor:  # (b, H/U, L, d) each
        h, L = qa.shape[1], qa.shape[2]
        flat = [t.transpose(1, 2).reshape(b, L, h * d) for t in (qa, ka, va)]
        o = wan.optimized_attention(*flat, heads=h, transformer_options=transformer_options)
        return o.view(b, L, h, d).transpose(1, 2)

    o = shard.attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attention=attention)
    return sa.o(o.transpose(1, 2).reshape(b, s, n * d))
