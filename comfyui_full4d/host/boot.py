"""Import the host (ComfyUI) in a process that is not its server: a torchrun rank or a worker.

Only the stdlib and torch at import time; ``import_host`` puts the ComfyUI folder on ``sys.path``, turns
the host's own argument parsing off (the rank's argv is ours) and picks the device before
``comfy.model_management`` chooses one: ``cuda:LOCAL_RANK`` when CUDA is there and ``cpu`` is False.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

__all__ = ["import_host"]


def import_host(comfyui_dir: str | os.PathLike | None = None, cpu: bool | None = None) -> None:
    """Make ``import comfy`` work here. comfyui_dir: the ComfyUI folder (default ``$FULL4D_COMFYUI_DIR``);
    cpu: None = CPU only when CUDA is missing. Idempotent; a second call with another folder is an error."""
    path = comfyui_dir or os.environ.get("FULL4D_COMFYUI_DIR")
    if not path or not (Path(path) / "comfy" / "model_management.py").is_file():
        raise ValueError(f"comfyui: {path!r} is not a ComfyUI folder (no comfy/model_management.py); pass --comfyui "
                         f"or set FULL4D_COMFYUI_DIR")
    path = str(Path(path).resolve())
    if "comfy.model_management" in sys.modules:  # comfy is a namespace package: ask a module for its folder
        have = str(Path(sys.modules["comfy.model_management"].__file__).resolve().parents[1])
        if have != path:
            raise ValueError(f"comfyui: this process already imported the host from {have}, not {path}")
        return
    cpu = (not torch.cuda.is_available()) if cpu is None else cpu
    if not cpu:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    sys.path.insert(0, path)
    import comfy.options

    comfy.options.args_parsing = False
    from comfy.cli_args import args

    args.cpu = cpu
    args.disable_api_nodes = True
