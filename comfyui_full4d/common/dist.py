"""Full tensors from FSDP shards and back (``torch.distributed.tensor``), shared by the trainer's
checkpoints and the host's training harness."""

from __future__ import annotations

from torch import Tensor

__all__ = ["gather_full", "shard_like"]


def gather_full(tensors: dict[str, Tensor], keep: bool = True) -> dict[str, Tensor]:
    """The full tensors of a state dict whose values may be FSDP shards (``DTensor``), on the CPU.

    Collective for DTensors (an all-gather each): every rank calls it with the same keys in the same
    order. keep: False on ranks that do not write (each full tensor is dropped right after its gather).
    Plain tensors pass through."""
    from torch.distributed.tensor import DTensor

    out = {}
    for k, v in tensors.items():
        full = v.full_tensor() if isinstance(v, DTensor) else v
        if keep:
            out[k] = full.detach().cpu()
    return out


def shard_like(full: dict[str, Tensor], like: dict[str, Tensor]) -> dict[str, Tensor]:
    """Full tensors -> this rank's shards where ``like[k]`` is a DTensor of the same global shape (each rank
    cuts its own piece of a file every rank read; no communication); other values pass through."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    out = {}
    for k, v in full.items():
        ref = like.get(k)
        if isinstance(ref, DTensor) and tuple(v.shape) == tuple(ref.shape):
            v = distribute_tensor(v.to(device=ref.device, dtype=ref.dtype), ref.device_mesh, ref.placements,
                                  src_data_rank=None)
        out[k] = v
    return out
