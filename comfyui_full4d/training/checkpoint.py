"""Training checkpoints: full tensors (``common.dist.gather_full`` / ``shard_like``), so a checkpoint
does not depend on the world size or on FSDP; ``state.json`` is written last, so a folder that has it
is complete."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..common.io import save_tensors, write_json
from ..common.dist import gather_full, shard_like

if TYPE_CHECKING:
    from .schedule import EMA
    from .train import Stage, TrainConfig

__all__ = ["save_checkpoint", "load_checkpoint"]


def _frozen_names(module: nn.Module) -> set[str]:
    """State-dict keys of parameters that do not train (checkpoints leave them out)."""
    return {n for n, p in module.named_parameters() if not p.requires_grad}


def save_checkpoint(ckpt: Path, step: int, stage: Stage, opt: torch.optim.Optimizer, cfg: TrainConfig,
                    ema: EMA | None = None, *, write: bool = True) -> None:
    """``ckpt/``: the stage's inference file (``stage.output_name``, e.g. adapter.safetensors; the EMA weights
    when there is an EMA), trainable.safetensors (trainable tensors only: not the frozen base Linears inside
    LoRA), optimizer.safetensors, ema.safetensors (with an EMA), state.json ({"step", "config"}) written last,
    so a checkpoint with state.json is complete.

    Under torchrun every rank calls it (FSDP shards are gathered); only the rank with ``write`` writes."""
    if write:
        ckpt.mkdir(parents=True, exist_ok=True)
    trainable = stage.trainable
    stage.save(ckpt / stage.output_name, None if ema is None else ema.state_dict())
    frozen = _frozen_names(trainable)  # e.g. the base Linear inside each LoRA: the host model already has it
    weights = gather_full({k: v for k, v in trainable.state_dict().items() if k not in frozen}, keep=write)
    osd = opt.state_dict()
    flat = {}
    for idx, st in osd["state"].items():
        for k, v in st.items():
            flat[f"{idx}.{k}"] = v if isinstance(v, Tensor) else torch.tensor(v)
    flat = gather_full(flat, keep=write)
    if not write:
        return
    save_tensors(ckpt / "trainable.safetensors", weights)
    save_tensors(ckpt / "optimizer.safetensors", flat)
    if ema is not None:
        save_tensors(ckpt / "ema.safetensors", {k: v.detach().cpu() for k, v in ema.avg.items()})
    groups = [{k: v for k, v in g.items()} for g in osd["param_groups"]]
    write_json(ckpt / "state.json", {"step": step, "config": asdict(cfg), "param_groups": groups})


def load_checkpoint(ckpt: Path, trainable: nn.Module, opt: torch.optim.Optimizer, ema: EMA | None = None) -> int:
    """Restore trainable weights, optimizer state and the EMA (when the run has one); returns the step to
    continue from."""
    from safetensors.torch import load_file

    state_path = ckpt / "state.json"
    if not state_path.is_file():
        raise ValueError(f"{ckpt}: no state.json; not a complete checkpoint")
    state = json.loads(state_path.read_text())
    frozen = _frozen_names(trainable)
    saved = {k: v for k, v in load_file(str(ckpt / "trainable.safetensors")).items() if k not in frozen}
    missing, unexpected = trainable.load_state_dict(shard_like(saved, trainable.state_dict()), strict=False)
    if set(missing) - frozen or unexpected:
        raise ValueError(f"{ckpt / 'trainable.safetensors'} does not match this model (missing "
                         f"{sorted(set(missing) - frozen)[:5]}, unexpected {sorted(unexpected)[:5]}); resume with the "
                         "same config (adapter, lora_rank) or start a new checkpoint folder")
    flat = load_file(str(ckpt / "optimizer.safetensors"))
    params = [p for g in opt.param_groups for p in g["params"]]
    per: dict[int, dict[str, Tensor]] = {}
    for key, v in flat.items():
        idx, name = key.split(".", 1)
        per.setdefault(int(idx), {})[name] = shard_like({name: v}, {name: params[int(idx)]})[name]
    opt.load_state_dict({"state": per, "param_groups": state["param_groups"]})
    if ema is not None:
        path = ckpt / "ema.safetensors"
        if not path.is_file():
            raise ValueError(f"{ckpt}: the run has an EMA (ema > 0) but the checkpoint has no ema.safetensors; resume "
                             "with the checkpoint's config or start a new checkpoint folder")
        saved = load_file(str(path))
        if set(saved) != set(ema.avg):
            raise ValueError(f"{path} does not match this model's trainable weights")
        for k, v in saved.items():
            ema.avg[k].copy_(v)
    return int(state["step"])
