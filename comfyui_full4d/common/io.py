"""Atomic file writes: every file the pack writes appears whole or not at all.

``atomic_path(path)`` yields a temp file in the same folder (so the final ``os.replace`` is a rename on
one file system), unique per process and call (ranks and concurrent prompts may write the same file);
the temp file replaces ``path`` only when the block exits cleanly and is removed otherwise (an error or
a cancel never leaves a partial ``path`` or a stray temp file behind).

A write that fails for lack of room (disk full, quota, the process's file size limit; ``OSError`` or a
safetensors error naming the OS error) is raised as ``OutOfSpace`` naming the file, after the temp file is
removed; ``path`` is left as it was (an older file of that name stays whole).
"""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from torch import Tensor

__all__ = ["temp_beside", "atomic_path", "write_bytes", "write_text", "write_json", "save_tensors", "OutOfSpace",
           "NO_ROOM"]

NO_ROOM = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})  # no space, file too large, quota exceeded


class OutOfSpace(OSError):
    """A write failed for lack of room (module docstring); ``str`` is the message alone."""

    def __str__(self) -> str:
        return self.strerror if isinstance(self.strerror, str) else super().__str__()


def _errno(e: BaseException) -> int | None:
    """The OS error number of a failed write: ``OSError.errno``, or "os error N" in a safetensors error's text."""
    if isinstance(e, OSError) and e.errno is not None:
        return e.errno
    m = re.search(r"os error (\d+)", str(e))
    return int(m.group(1)) if m else None


def temp_beside(path: str | os.PathLike) -> Path:
    """A new, empty, hidden temp file in ``path``'s folder (``.name.XXXX.tmp``), for writers that keep it
    open across calls (``media.video.VideoWriter``); the caller ``os.replace``s or removes it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden temp path beside ``path``; on a clean exit it is renamed onto ``path``. Raises
    ``OutOfSpace`` when the write fails for lack of room (module docstring)."""
    tmp = None
    try:
        tmp = temp_beside(path)
        yield tmp
        os.replace(tmp, path)
    except Exception as e:
        code = _errno(e)
        if code in NO_ROOM:
            raise OutOfSpace(code, f"could not write {Path(path).name}: {os.strerror(code)} (the disk is full, or "
                                   "the file is larger than this system allows); that file was not written") from None
        raise
    finally:
        if tmp is not None:
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
