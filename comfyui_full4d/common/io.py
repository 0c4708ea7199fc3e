"""Atomic file writes: every file the pack writes appears whole or not at all.

``atomic_path(path)`` yields a temp file in the same folder (so the final ``os.replace`` is a rename on
one file system), unique per process and call (ranks and concurrent prompts may write the same file);
the temp file replaces ``path`` only when the block exits cleanly and is removed otherwise (an error or
a cancel never leaves a partial ``path`` or a stray temp file behind).
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from torch import Tensor

__all__ = ["temp_beside", "atomic_path", "write_bytes", "write_text", "write_json", "save_tensors"]


def temp_beside(path: str | os.PathLike) -> Path:
    """A new, empty, hidden temp file in ``path``'s folder (``.name.XXXX.tmp``), for writers that keep it
    open across calls (``media.video.VideoWriter``); the caller ``os.replace``s or removes it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden temp path beside ``path``; on a clean exit it is renamed onto ``path``."""
    tmp = temp_beside(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj, indent: int | None = 1) -> None:
    write_text(path, json.dumps(obj, indent=indent))


def save_tensors(path: str | os.PathLike, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> None:
    """safetensors file of ``tensors`` (made contiguous, on the CPU), written atomically."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
