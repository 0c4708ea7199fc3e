"""DA3 model folders in the host's ``models/depth_anything_3/`` and loading onto the host's device; core's
own DA3 model (0.33+, ``DA3_MODEL``) wrapped for our depth estimate, detected at import (``HAS_CORE_DA3``)."""

from __future__ import annotations

import importlib.util
import os

import comfy.model_management
import folder_paths
import torch

from ..geometry.da3_core import CoreDA3Net
from ..geometry.depth import CONFIG_FILE, WEIGHTS_FILE, DA3Model, load_da3
from .paths import DEPTH, client_paths, list_files, register


def da3_folders() -> list[str]:
    """Sub-folders of ``models/depth_anything_3/`` that hold a ``model.safetensors``."""
    names = {os.path.dirname(f).replace(os.sep, "/") for f in list_files(DEPTH)
             if os.path.basename(f) == WEIGHTS_FILE}
    return sorted(n for n in names if n)


def da3_folder(name: str) -> str:
    """Absolute folder of DA3 model ``name``; ValueError saying what to put where when absent."""
    register()
    for root in folder_paths.get_folder_paths(DEPTH):
        path = os.path.normpath(os.path.join(root, name))
        if os.path.commonpath([os.path.abspath(root), os.path.abspath(path)]) != os.path.abspath(root):
            raise ValueError(f"DA3 model {name!r} leaves the depth_anything_3 model folder")
        if os.path.isfile(os.path.join(path, WEIGHTS_FILE)):
            return path
    roots = folder_paths.get_folder_paths(DEPTH)
    raise ValueError(f"DA3 model {name!r} not found: expected {name}/{WEIGHTS_FILE} and {name}/{CONFIG_FILE} "
                     f"in {roots[0] if roots else 'models/depth_anything_3'} (e.g. the files of "
                     f"depth-anything/DA3-SMALL); available: {da3_folders() or 'none'}")


def load_da3_model(name: str) -> DA3Model:
    """The DA3 network of folder ``name`` on the host's torch device (float32); errors name files relative
    to the models folder (``client_paths``)."""
    with client_paths():
        return load_da3(da3_folder(name), device=comfy.model_management.get_torch_device())


HAS_CORE_DA3 = importlib.util.find_spec("comfy.ldm.depth_anything_3") is not None
MISSING_CORE_DA3 = ("comfyui-full4d: this ComfyUI has no core Depth Anything 3 nodes (added after 0.3.75); "
                    "Full4DDA3DepthFromCore and Full4DGeometryFromDA3 are not available (Full4DDA3Depth is)")


def core_da3_model(patcher, process_res: int = 504) -> DA3Model:
    """Core's DA3_MODEL (a ModelPatcher around ``DepthAnything3Net``) loaded on the host's device, as a DA3Model
    for ``geometry.depth.estimate_depth`` (inputs in the model's dtype, as core's own DA3 node feeds it)."""
    diffusion = getattr(getattr(patcher, "model", None), "diffusion_model", None)
    if diffusion is None or not hasattr(diffusion, "head_type"):
        raise ValueError("da3_model: expected the DA3_MODEL of core's Load Depth Anything 3 node, got "
                         f"{type(patcher).__name__}")
    comfy.model_management.load_model_gpu(patcher)
    device = comfy.model_management.get_torch_device()
    net = CoreDA3Net(diffusion, input_device=device, input_dtype=diffusion.dtype or torch.float32)
    return DA3Model(net=net, name="core", process_res=int(process_res))
