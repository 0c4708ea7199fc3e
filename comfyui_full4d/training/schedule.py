"""The optimiser side of the training loop (``train.run``): the learning-rate schedule and the weights'
exponential moving average."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from .train import TrainConfig

__all__ = ["learning_rate", "EMA"]


def learning_rate(cfg: "TrainConfig", step: int) -> float:
    """The rate of step ``step`` (0-based): linear warm-up over ``cfg.warmup`` steps, then a cosine from
    ``cfg.lr`` down to ``cfg.lr * cfg.lr_final`` at ``cfg.steps`` (``lr_final`` 1: constant)."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    span = max(1, cfg.steps - cfg.warmup)
    frac = min(1.0, (step - cfg.warmup) / span)
    return cfg.lr * (cfg.lr_final + (1 - cfg.lr_final) * 0.5 * (1 + math.cos(math.pi * frac)))


class EMA:
    """Exponential moving average of a module's trainable weights: ``a <- decay * a + (1 - decay) * w`` after
    every step (float32 copies on the weights' device)."""

    def __init__(self, module: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.module, self.decay = module, float(decay)
        self.names = [n for n, p in module.named_parameters() if p.requires_grad]
        self.avg = {n: p.detach().float().clone() for n, p in module.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self) -> None:
        params = dict(self.module.named_parameters())
        for n in self.names:
            self.avg[n].lerp_(params[n].detach().float(), 1 - self.decay)

    def state_dict(self) -> dict[str, Tensor]:
        """The module's state dict with the averaged weights in place of the trained ones."""
        sd = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        for n, a in self.avg.items():
            sd[n] = a.to(sd[n].dtype)
        return sd
