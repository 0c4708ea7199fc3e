"""Model folders of the pack inside the host's ``models/`` tree (``folder_paths``)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import folder_paths

# Full-4D adapter files (safetensors): models/full4d/
FULL4D = "full4d"
# Depth Anything 3 (one sub-folder per model with config.json + model.safetensors).
# Newer ComfyUI releases have their own depth-estimation folder; share it where present.
DEPTH = "depth_anything_3"

_EXT = {".safetensors"}
# The embedded nano Full-4D (models/nano/README.md): its base, VAE and adapter are listed by core's Load Diffusion
# Model and Load VAE and by Full4DAdapterLoader next to the user's own files.
# realpath: a pack linked into custom_nodes (or a package linked elsewhere) still finds its own folder
NANO_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__)))), "models", "nano")


def register() -> None:
    """Add the pack's folders to ``folder_paths``, and the nano model's folder to the diffusion model, VAE and
    adapter lists (idempotent)."""
    for name in (FULL4D, DEPTH):
        if name not in folder_paths.folder_names_and_paths:
            path = os.path.join(folder_paths.models_dir, name)
            folder_paths.folder_names_and_paths[name] = ([path], _EXT)
    for name in ("diffusion_models", "vae", FULL4D):
        folder_paths.add_model_folder_path(name, NANO_DIR)


def list_files(name: str) -> list[str]:
    register()
    return folder_paths.get_filename_list(name)


def full_path(name: str, filename: str) -> str:
    """Resolve ``filename`` inside the folder ``name``; rejects paths that leave it."""
    register()
    path = folder_paths.get_full_path(name, filename)
    if path is None:
        raise ValueError(f"{name}: file {filename!r} not found in models/{name}/")
    return path


def output_dir() -> str:
    """The host's output folder (``folder_paths.get_output_directory()``)."""
    return folder_paths.get_output_directory()


def temp_dir() -> str:
    """The host's temp folder (``folder_paths.get_temp_directory()``)."""
    return folder_paths.get_temp_directory()


def safe_join(base: str, rel: str, what: str) -> str:
    """``base/rel`` for a user-given relative path, refusing absolute paths, ``..`` and symlinks
    that lead outside ``base``. ``what`` names the input in the error."""
    folder = f"the {client_message(base)} folder"
    if not rel or os.path.isabs(rel) or rel.startswith("~"):
        raise ValueError(f"{what}={rel!r}: give a path relative to {folder} (absolute paths are not accepted)")
    root = os.path.realpath(base)
    path = os.path.realpath(os.path.join(root, rel))
    if os.path.commonpath([root, path]) != root:
        raise ValueError(f"{what}={rel!r} leads outside {folder}; only files inside it can be used")
    return path


def input_dir() -> str:
    """The host's input folder (``folder_paths.get_input_directory()``)."""
    return folder_paths.get_input_directory()


def input_subfolder(rel: str, what: str) -> str:
    """Absolute path of the folder ``rel`` inside the input folder (``safe_join``); errors name the
    folder as the user gave it and say "the input folder", never the server's absolute path."""
    base = input_dir()
    with client_paths():
        path = safe_join(base, rel, what)
    if not os.path.isdir(path):
        raise ValueError(f"{what}={rel!r}: no such folder in the input folder")
    return path


def _folder_names() -> list[tuple[str, str]]:
    """(absolute folder, the name a user knows it by), longest folder first."""
    named = [(folder_paths.get_input_directory(), "input"), (folder_paths.get_output_directory(), "output"),
             (folder_paths.get_temp_directory(), "temp"), (folder_paths.get_user_directory(), "user")]
    for name, (paths, _) in folder_paths.folder_names_and_paths.items():
        named += [(p, f"models/{name}") for p in paths]
    named += [(folder_paths.models_dir, "models"), (folder_paths.base_path, "ComfyUI")]
    out = []
    for path, label in named:
        for p in {os.path.abspath(path), os.path.realpath(path)}:
            out.append((p.rstrip(os.sep), label))
    return sorted(out, key=lambda x: -len(x[0]))


def client_message(message: str) -> str:
    """``message`` with every absolute host folder replaced by the name a user knows it by
    (``/srv/ComfyUI/input/clip.mp4`` -> ``input/clip.mp4``)."""
    for path, label in _folder_names():
        if path and path != os.sep:
            message = message.replace(path, label)
    return message


@contextmanager
def client_paths() -> Iterator[None]:
    """Errors raised inside name files as the user gave them, not by absolute server path.

    A ``ValueError`` / ``RuntimeError`` / ``OSError`` whose message names a host folder is re-raised
    (same type where it takes a message) with ``client_message``: error messages go to the client, which
    should neither need nor learn the server's directory layout."""
    try:
        yield
    except (ValueError, RuntimeError, OSError) as e:
        msg = str(e)
        new = client_message(msg)
        if new == msg:
            raise
        try:
            err = type(e)(new)
        except Exception:  # noqa: BLE001 - an exception type with another signature
            err = ValueError(new)
        raise err from None
