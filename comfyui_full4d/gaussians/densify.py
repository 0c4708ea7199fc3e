"""Adaptive density control (SPEC 6; 3DGS / gsplat "default strategy").

Every ``interval`` iterations in ``[start, stop)``: Gaussians whose mean view-space (NDC) position
gradient ``||dL/dmu2d||`` exceeds ``grad_threshold`` are cloned (max scale <= ``percent_dense *
extent``) or split in two (larger: samples from the Gaussian, scales / 1.6). Then Gaussians with
opacity < ``min_opacity`` are removed, and < ``prune_opacity`` when the count exceeds
``prune_above``. The count never exceeds ``max_gaussians``: if the budget is short, the
highest-gradient candidates win. Parameters and their Adam moments are resized together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .model import GAUSSIAN_KEYS, Gaussians

__all__ = ["DensifyConfig", "DensifyState", "densify_step", "remove", "duplicate", "split", "quat_to_rotmat"]


@dataclass(frozen=True)
class DensifyConfig:
    grad_threshold: float = 0.0002
    percent_dense: float = 0.01
    max_gaussians: int = 120_000
    prune_above: int = 80_000
    prune_opacity: float = 0.015
    min_opacity: float = 0.005
    start: int = 100
    stop: int = 2_000
    interval: int = 100

    def __post_init__(self) -> None:
        if self.max_gaussians < 1:
            raise ValueError(f"max_gaussians must be >= 1, got {self.max_gaussians}")
        if self.interval < 1:
            raise ValueError(f"densify interval must be >= 1, got {self.interval}")
        if not (0 <= self.prune_opacity < 1 and 0 <= self.min_opacity < 1):
            raise ValueError(f"opacity thresholds must be in [0, 1), got {self.prune_opacity}, {self.min_opacity}")

    def due(self, it: int) -> bool:
        """True when iteration ``it`` (1-based, after its step) is a densification step."""
        return self.start <= it < self.stop and it % self.interval == 0


class DensifyState:
    """View-space gradient accumulators (separate from the model): grad2d (N,) sum of norms, count (N,), on
    ``device`` (the Gaussians')."""

    def __init__(self, n: int = 0, device: torch.device | str | None = None):
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.reset(n)

    def reset(self, n: int) -> None:
        self.grad2d = torch.zeros(n, device=self.device)
        self.count = torch.zeros(n, device=self.device)

    def accumulate(self, grad_norm: Tensor, visible: Tensor) -> None:
        self.grad2d[visible] += grad_norm[visible].detach().float()
        self.count[visible] += 1

    def state_dict(self) -> dict[str, Tensor]:
        return {"grad2d": self.grad2d, "count": self.count}

    def load_state_dict(self, d: dict[str, Tensor]) -> None:
        self.grad2d, self.count = d["grad2d"].to(self.device, copy=True), d["count"].to(self.device, copy=True)


def _resize(g: Gaussians, opt: dict[str, torch.optim.Optimizer], param_fn, state_fn) -> Gaussians:
    """Apply param_fn(name, tensor) to each parameter and state_fn(tensor) to its Adam moments."""
    new = {}
    for k in GAUSSIAN_KEYS:
        p_old = getattr(g, k)
        p_new = torch.nn.Parameter(param_fn(k, p_old.detach()))
        if k in opt:
            o = opt[k]
            st = o.state.pop(p_old, None)
            o.param_groups[0]["params"] = [p_new]
            if st is not None:
                for sk in ("exp_avg", "exp_avg_sq"):
                    if sk in st:
                        st[sk] = state_fn(st[sk])
                o.state[p_new] = st
        new[k] = p_new
    return Gaussians.from_dict(new)


def remove(g: Gaussians, opt: dict, keep: Tensor) -> Gaussians:
    """Keep rows where ``keep`` (N,) bool is True."""
    return _resize(g, opt, lambda k, p: p[keep], lambda s: s[keep])


def duplicate(g: Gaussians, opt: dict, sel: Tensor) -> Gaussians:
    """Append copies of rows ``sel`` (indices); new Adam moments are zero."""
    return _resize(g, opt, lambda k, p: torch.cat([p, p[sel]]),
                   lambda s: torch.cat([s, torch.zeros_like(s[sel])]))


def quat_to_rotmat(q: Tensor) -> Tensor:
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    return torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1).reshape(-1, 3, 3)


def split(g: Gaussians, opt: dict, sel: Tensor, generator: torch.Generator | None = None) -> Gaussians:
    """Replace rows ``sel`` by two Gaussians each at ``mu + R(q) diag(s) eps``, scales ``s / 1.6``."""
    n = len(g)
    rest = torch.ones(n, dtype=torch.bool, device=g.means.device)
    rest[sel] = False
    with torch.no_grad():
        scales = torch.exp(g.log_scales[sel])
        R = quat_to_rotmat(g.quats[sel])
        # drawn from the fit's CPU generator on every device: one random stream, device-independent checkpoints
        eps = torch.randn(2, len(sel), 3, generator=generator).to(scales)
        samples = torch.einsum("nij,bnj->bni", R, scales * eps) + g.means[sel]

    def pf(k: str, p: Tensor) -> Tensor:
        if k == "means":
            born = samples.reshape(-1, 3)
        elif k == "log_scales":
            born = (p[sel] - math.log(1.6)).repeat(2, 1)
        else:
            born = p[sel].repeat(2, *([1] * (p.dim() - 1)))
        return torch.cat([p[rest], born])

    return _resize(g, opt, pf, lambda s: torch.cat([s[rest], torch.zeros_like(s[sel]).repeat(2, *([1] * (s.dim() - 1)))]))


def densify_step(g: Gaussians, opt: dict, state: DensifyState, config: DensifyConfig, extent: float,
                 generator: torch.Generator | None = None) -> tuple[Gaussians, dict[str, int]]:
    """One clone/split/prune pass (module docstring); resets ``state``. Returns the new Gaussians and counts."""
    n = len(g)
    avg = state.grad2d / state.count.clamp_min(1)
    big = torch.exp(g.log_scales.detach()).amax(-1) > config.percent_dense * extent
    cand = torch.nonzero(avg > config.grad_threshold).flatten()
    budget = max(0, config.max_gaussians - n)
    if len(cand) > budget:  # highest gradients first; clone and split both add one Gaussian
        cand = cand[torch.argsort(avg[cand], descending=True)[:budget]]
    clone_sel, split_sel = cand[~big[cand]], cand[big[cand]]
    g = duplicate(g, opt, clone_sel)
    g = split(g, opt, split_sel, generator)
    op = torch.sigmoid(g.opacity_logits.detach())
    thr = config.prune_opacity if len(g) > config.prune_above else config.min_opacity
    keep = op >= thr
    if len(g) > config.max_gaussians:  # safety net; unreachable by construction
        keep &= torch.argsort(torch.argsort(op, descending=True)) < config.max_gaussians
    if not bool(keep.any()):
        keep[torch.argmax(op)] = True
    pruned = int((~keep).sum())
    g = remove(g, opt, keep)
    state.reset(len(g))
    return g, {"cloned": len(clone_sel), "split": len(split_sel), "pruned": pruned, "count": len(g)}
