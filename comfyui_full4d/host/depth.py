"""DA3 model folders in the host's ``models/depth_anything_3/`` and loading onto the host's device."""

from __future__ import annotations

import os

import comfy.model_management
import folder_paths

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
