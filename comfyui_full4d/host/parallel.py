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
"""

from __future__ import annotations

import functools
from typing import Callable

import comfy.samplers
import torch
from torch import Tensor

from ..diffusion.parallel import Mesh, gather_rows, ulysses_attention, view_split

__all__ = ["with_mesh", "split_call", "MESH_KEY"]

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
    """One ``WanModel`` call on this rank's views; returns all rows (B, C, T, h, w) in the host's order.

    x (B, C, T, h, w), timestep (B, ...), context (B, L, C_text), time_dim_concat like x or None, with
    B = scenes * V rows, scene ``j`` = rows ``j*V .. j*V+V-1``. ``run_for((a, b), attend)`` gives the
    transformer-options entries for rows holding views a..b-1, ``attend`` being ``ulysses_attention`` bound
    to this rank (call it like the one-process scene attention, with ``attention=`` to pick that one)."""
    V, U = num_views, mesh.layout.ulysses
    ranges = view_split(V, U)
    scenes = x.shape[0] // V
    rows_of = [[j * V + v for j in range(scenes) for v in range(a, b)] for a, b in ranges]
    attend = functools.partial(ulysses_attention, counts=[(b - a) * tokens_per_view for a, b in ranges],
                               rank=mesh.seq_index, group=mesh.seq_group, stats=mesh.stats)
    idx = torch.as_tensor(rows_of[mesh.seq_index], device=x.device)
    tdc = None if time_dim_concat is None else time_dim_concat[idx]
    local_opts = {**opts, **run_for(ranges[mesh.seq_index], attend)}
    out = executor(x[idx], timestep[idx], context[idx], None, tdc, local_opts, **kwargs)
    gathered = gather_rows(out, [len(r) for r in rows_of], mesh.seq_group, mesh.stats)
    full = torch.empty((x.shape[0], *gathered.shape[1:]), dtype=gathered.dtype, device=gathered.device)
    full[torch.as_tensor([r for rows in rows_of for r in rows], device=full.device)] = gathered
    return full
