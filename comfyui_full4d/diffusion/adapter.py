"""The Full-4D adapter (SPEC 2 and 4): per DiT block a camera encoder, a fused time-view
attention copy of the block's self-attention and a zero-initialised output projector.

Per block ``i`` with model dim ``C``:

- ``cam``: ``c_v = W2 silu(W1 p_v + b1) + b2`` with ``p_v`` the 12 numbers of ``[R_v | t_v / s]``
  (row-major, relative to view 0, so view 0 is the identity camera) and ``W2, b2 = 0`` at init.
  ``c_v`` (C,) is broadcast over all tokens of view ``v`` and added to the output of the block's
  self-attention before its gate (paper Eq. 7-8).
- ``tv_attn``: q, k, v, o linears and q/k RMS norms (the host's key names, so it is initialised by
  copying the block's ``self_attn`` state dict) running ``fused_tv_attention`` over the
  ``V*2T*S`` tokens of one scene, RoPE time index ``v*2T + f`` (applied by a caller-supplied
  ``rope`` function: the host's own RoPE).
- ``tv_proj``: ``C -> C`` linear, zero at init; its output is added to the residual stream after
  the self-attention residual (ungated): ``x <- x + g * (SA(u) + c_v) + P(TV(u))``.

With ``W2 = b2 = 0`` and ``P = 0`` the block is the base block exactly (SPEC 4 invariant).

Layers come from an ``operations`` namespace (``Linear``, ``RMSNorm``; default ``torch.nn``) so
the host can pass its casting ops; every parameter is initialised explicitly here.
Files: one safetensors with keys ``blocks.{i}.cam.*``, ``blocks.{i}.tv_attn.*``,
``blocks.{i}.tv_proj.*`` and a metadata header (``AdapterConfig`` fields as strings).
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from dataclasses import dataclass, fields
from types import SimpleNamespace
from typing import Callable, Iterable, Iterator, Mapping

import torch
from torch import Tensor, nn

from ..common.io import save_tensors
from .attention import fused_tv_attention

__all__ = ["AdapterConfig", "Full4DAdapter", "camera_features", "load_adapter", "negated_camera_features",
           "read_adapter_config", "save_adapter", "TORCH_OPS"]

FORMAT = "full4d-adapter"
FORMAT_VERSION = "1"
TORCH_OPS = SimpleNamespace(Linear=nn.Linear, RMSNorm=nn.RMSNorm)
RopeFn = Callable[[Tensor], Tensor]
AttendFn = Callable[..., Tensor]  # fused_tv_attention's signature (a sharded one: parallel.ulysses_attention)


@dataclass(frozen=True)
class AdapterConfig:
    """Shape of an adapter; saved as the file's metadata.

    dim: model width C (3072 for Wan2.2-TI2V-5B); num_heads: heads (C / 128 in Wan2.2);
    num_blocks: DiT blocks (30); cam_hidden: hidden width of the camera MLP;
    base_model: id of the base model the adapter was made for; views_trained: V used in
    training (0 = untrained, zero-init).
    """

    dim: int
    num_heads: int
    num_blocks: int
    cam_hidden: int = 256
    eps: float = 1e-6
    base_model: str = "wan2.2-ti2v-5b"
    views_trained: int = 0

    def __post_init__(self) -> None:
        for name in ("dim", "num_heads", "num_blocks", "cam_hidden"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"AdapterConfig.{name} must be positive, got {getattr(self, name)}")
        if self.dim % self.num_heads:
            raise ValueError(f"AdapterConfig.dim={self.dim} is not divisible by num_heads={self.num_heads}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    def metadata(self) -> dict[str, str]:
        meta = {f.name: str(getattr(self, f.name)) for f in fields(self)}
        meta.update(format=FORMAT, format_version=FORMAT_VERSION)
        return meta

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str], where: str) -> "AdapterConfig":
        if meta.get("format") != FORMAT:
            raise ValueError(f"{where}: not a Full-4D adapter file (metadata 'format' is {meta.get('format')!r}, "
                             f"expected {FORMAT!r})")
        try:
            kw = {}
            for f in fields(cls):
                if f.name in meta:
                    raw = meta[f.name]
                    kw[f.name] = raw if f.name == "base_model" else float(raw) if f.name == "eps" else int(raw)
            return cls(**kw)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: bad adapter metadata {dict(meta)}: {e}") from None


def camera_features(R: Tensor, t: Tensor) -> Tensor:
    """The 12 camera numbers per view, ``[R_rel | t_rel]`` row-major, relative to view 0 (SPEC 4).

    R: (V, 3, 3) world-to-camera, t: (V, 3) in scene units (``t / s``). With
    ``x_v = R_v x + t_v``: ``R_rel = R_v R_0^T``, ``t_rel = t_v - R_rel t_0``; row 0 is exactly
    the identity camera. Returns (V, 12) float32.
    """
    if R.dim() != 3 or R.shape[1:] != (3, 3) or t.shape != (R.shape[0], 3):
        raise ValueError(f"camera_features: R must be (V, 3, 3) and t (V, 3), got {tuple(R.shape)}, {tuple(t.shape)}")
    R, t = R.double(), t.double()
    R_rel = R @ R[0].T
    t_rel = t - (R_rel @ t[0, :, None])[..., 0]
    R_rel[0], t_rel[0] = torch.eye(3, dtype=R.dtype), 0.0
    return torch.cat([R_rel, t_rel[..., None]], dim=-1).reshape(-1, 12).float()


@contextmanager
def negated_camera_features() -> Iterator[None]:
    """The trained adapter's camera mutation check (issue 29: ``bench/eval.py``'s ``full (cameras negated)`` row and
    ``tests/test_nano_model.py``): while active, ``camera_features`` returns its negation, so every caller that looks
    it up in this module at call time (the sampler, ``host.sampling``) hands the camera encoders ``-p``. A model
    that uses its cameras must get worse."""
    global camera_features
    real = camera_features
    camera_features = lambda R, t: -real(R, t)  # noqa: E731
    try:
        yield
    finally:
        camera_features = real


class CameraEncoder(nn.Module):
    """``c = fc2(silu(fc1(p)))``: (V, 12) -> (V, C); fc2 zero at init."""

    def __init__(self, dim: int, hidden: int, ops=TORCH_OPS, device=None, dtype=None):
        super().__init__()
        self.fc1 = ops.Linear(12, hidden, device=device, dtype=dtype)
        self.fc2 = ops.Linear(hidden, dim, device=device, dtype=dtype)

    def forward(self, p: Tensor) -> Tensor:
        return self.fc2(nn.functional.silu(self.fc1(p)))


class TVAttention(nn.Module):
    """Copy of a Wan self-attention (same parameter names) over one scene under the SPEC 2 mask."""

    def __init__(self, dim: int, num_heads: int, eps: float, ops=TORCH_OPS, device=None, dtype=None):
        super().__init__()
        self.num_heads = num_heads
        for name in ("q", "k", "v", "o"):
            setattr(self, name, ops.Linear(dim, dim, device=device, dtype=dtype))
        self.norm_q = ops.RMSNorm(dim, eps=eps, elementwise_affine=True, device=device, dtype=dtype)
        self.norm_k = ops.RMSNorm(dim, eps=eps, elementwise_affine=True, device=device, dtype=dtype)

    def forward(self, x: Tensor, num_views: int, frames_per_view: int, rope: RopeFn | None = None, *,
                intra_time: bool = True, cross_half: bool = True, attend: AttendFn | None = None) -> Tensor:
        """x (B, N, C) with N = V*F*S ordered view, frame, spatial -> (B, N, C).

        rope maps (B, N, heads, D) -> same with the fused positions ``v*F + f`` (None: no RoPE).
        intra_time / cross_half: rules 2 and 3 of the SPEC 2 mask (off only for the paper's Tab. 4 ablations).
        attend: replaces ``fused_tv_attention`` (same arguments); a sharded scene passes its all-to-all
        version, x then holds this rank's views only (N = its tokens) and ``num_views`` is the whole scene's.
        """
        B, N, C = x.shape
        H = self.num_heads
        q = self.norm_q(self.q(x)).view(B, N, H, C // H)
        k = self.norm_k(self.k(x)).view(B, N, H, C // H)
        if rope is not None:
            q, k = rope(q), rope(k)
        v = self.v(x).view(B, N, H, C // H)
        o = (attend or fused_tv_attention)(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), num_views, frames_per_view,
                               intra_time=intra_time, cross_half=cross_half)
        return self.o(o.transpose(1, 2).reshape(B, N, C))


class AdapterBlock(nn.Module):
    def __init__(self, cfg: AdapterConfig, ops=TORCH_OPS, device=None, dtype=None):
        super().__init__()
        self.cam = CameraEncoder(cfg.dim, cfg.cam_hidden, ops, device, dtype)
        self.tv_attn = TVAttention(cfg.dim, cfg.num_heads, cfg.eps, ops, device, dtype)
        self.tv_proj = ops.Linear(cfg.dim, cfg.dim, device=device, dtype=dtype)

    def camera_embedding(self, cams: Tensor) -> Tensor:
        """cams (V, 12) -> (V, C)."""
        return self.cam(cams)

    def fused(self, x: Tensor, num_views: int, frames_per_view: int, rope: RopeFn | None = None, *,
              intra_time: bool = True, cross_half: bool = True, attend: AttendFn | None = None) -> Tensor:
        """``P(TV(x))``: x (B, N, C) one scene per batch row -> (B, N, C); mask switches and attend as ``TVAttention``."""
        return self.tv_proj(self.tv_attn(x, num_views, frames_per_view, rope, intra_time=intra_time,
                                         cross_half=cross_half, attend=attend))


class Full4DAdapter(nn.Module):
    """``blocks[i]`` = AdapterBlock for DiT block i. Construct, then ``reset_parameters`` or load."""

    def __init__(self, config: AdapterConfig, ops=TORCH_OPS, device=None, dtype=None):
        super().__init__()
        self.config = config
        self.blocks = nn.ModuleList(AdapterBlock(config, ops, device, dtype) for _ in range(config.num_blocks))

    @torch.no_grad()
    def reset_parameters(self, base_self_attn: Iterable[Mapping[str, Tensor]] | None = None,
                         seed: int = 0) -> "Full4DAdapter":
        """Zero-init adapter: fc2 = P = 0, fc1 ~ U(+-1/sqrt(12)); tv_attn = copy of the base self-attention
        state dicts (one per block, host key names q/k/v/o/norm_q/norm_k), or random when None (tests)."""
        g = torch.Generator().manual_seed(seed)
        bases = list(base_self_attn) if base_self_attn is not None else [None] * len(self.blocks)
        if len(bases) != len(self.blocks):
            raise ValueError(f"base_self_attn has {len(bases)} blocks, the adapter {len(self.blocks)}")
        for blk, base in zip(self.blocks, bases):
            _uniform_(blk.cam.fc1.weight, 1 / math.sqrt(12), g)
            _uniform_(blk.cam.fc1.bias, 1 / math.sqrt(12), g)
            for p in (blk.cam.fc2.weight, blk.cam.fc2.bias, blk.tv_proj.weight, blk.tv_proj.bias):
                p.zero_()
            if base is None:
                for name in ("q", "k", "v", "o"):
                    lin = getattr(blk.tv_attn, name)
                    _uniform_(lin.weight, 1 / math.sqrt(lin.in_features), g)
                    _uniform_(lin.bias, 1 / math.sqrt(lin.in_features), g)
                blk.tv_attn.norm_q.weight.fill_(1.0)
                blk.tv_attn.norm_k.weight.fill_(1.0)
            else:
                _load_strict(blk.tv_attn, base, "base self-attention")
        return self


def _uniform_(p: Tensor, bound: float, g: torch.Generator) -> None:
    p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * bound)


def _load_strict(module: nn.Module, sd: Mapping[str, Tensor], what: str) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:
        raise ValueError(f"{what}: missing keys {missing[:6]}, unexpected keys {unexpected[:6]}")
    for key, p in own.items():
        if tuple(sd[key].shape) != tuple(p.shape):
            raise ValueError(f"{what}: {key} has shape {tuple(sd[key].shape)}, expected {tuple(p.shape)}")
        p.copy_(sd[key].to(device=p.device, dtype=p.dtype))


def save_adapter(adapter: Full4DAdapter, path: str | os.PathLike, *, state_dict: Mapping[str, Tensor] | None = None) -> None:
    """Write the adapter to ``path`` (safetensors, metadata = ``adapter.config``) atomically.

    state_dict: the full tensors to write instead of ``adapter.state_dict()`` (e.g. gathered from FSDP
    shards); it must have exactly the adapter's keys and shapes."""
    path = os.fspath(path)
    own = adapter.state_dict()
    if state_dict is not None:
        bad = sorted(set(own) ^ set(state_dict)) or [k for k in own if tuple(state_dict[k].shape) != tuple(own[k].shape)]
        if bad:
            raise ValueError(f"save_adapter: state_dict does not match the adapter at {bad[:6]}")
        own = state_dict
    sd = {k: v.detach().to("cpu").contiguous() for k, v in own.items()}
    save_tensors(path, sd, metadata=adapter.config.metadata())


def read_adapter_config(path: str | os.PathLike) -> AdapterConfig:
    """The AdapterConfig in a file's metadata header; ValueError for non-safetensors / truncated files."""
    return _open(path)[0]


def _open(path: str | os.PathLike):
    from safetensors import safe_open

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"adapter file {path!r} does not exist")
    try:
        f = safe_open(path, framework="pt", device="cpu")
        meta = f.metadata() or {}
        keys = list(f.keys())
    except Exception as e:  # SafetensorError, header too large, truncated header
        raise ValueError(f"adapter file {path!r} is not a readable safetensors file "
                         f"(truncated or another format): {e}") from None
    return AdapterConfig.from_metadata(meta, f"adapter file {path!r}"), f, keys


def load_adapter(path: str | os.PathLike, *, expect: AdapterConfig | None = None, ops=TORCH_OPS,
                 device=None, dtype=None) -> Full4DAdapter:
    """Load a file written by ``save_adapter``.

    expect: when given, ``dim``, ``num_heads`` and ``num_blocks`` must match it (the model the
    adapter is attached to). Raises ValueError for a file that is missing, not safetensors,
    truncated, not an adapter, or made for another model size. ``dtype`` None keeps the file's.
    """
    cfg, f, keys = _open(path)
    if expect is not None:
        diff = [f"{n}={getattr(cfg, n)} (model: {getattr(expect, n)})"
                for n in ("dim", "num_heads", "num_blocks") if getattr(cfg, n) != getattr(expect, n)]
        if diff:
            raise ValueError(f"adapter file {os.fspath(path)!r} was made for another model size: {', '.join(diff)}; "
                             f"use an adapter for this base model (or 'none (zero-init)')")
    adapter = Full4DAdapter(cfg, ops=ops, device="cpu", dtype=torch.float32 if dtype is None else dtype)
    try:
        sd = {k: f.get_tensor(k) for k in keys}
    except Exception as e:
        raise ValueError(f"adapter file {os.fspath(path)!r} is truncated or corrupt: {e}") from None
    if dtype is None and sd:
        adapter.to(next(iter(sd.values())).dtype)
    with torch.no_grad():
        _load_strict(adapter, sd, f"adapter file {os.fspath(path)!r}")
    return adapter.to(device) if device is not None else adapter
