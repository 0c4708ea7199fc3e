"""The host's side of video input: files in the input folder and the core VIDEO object (comfy_api VideoInput)."""

from __future__ import annotations

import os
from typing import Optional

import folder_paths
from comfy_api.latest import InputImpl, Input

from ..common.progress import StepFn
from .paths import client_paths
from ..media.video import load_video, prepare_frames


def input_videos() -> list[str]:
    """Video files (by MIME type) directly in the host's input folder, sorted."""
    d = folder_paths.get_input_directory()
    files = [f for f in os.listdir(d) if os.path.isfile(os.path.join(d, f))] if os.path.isdir(d) else []
    return sorted(folder_paths.filter_files_content_types(files, ["video"]))


def input_path(file: str) -> str:
    """Absolute path of an input-folder file name (``name [input|output|temp]`` annotations allowed)."""
    return folder_paths.get_annotated_filepath(file)


def input_exists(file: str) -> bool:
    return bool(file) and folder_paths.exists_annotated_filepath(file)


def load_input_video(file: str, num_frames: int = 81, start: int = 0, stride: int = 1,
                     size: Optional[tuple[int, int]] = None, *, on_step: StepFn | None = None):
    """Frames (T, H, W, 3) and fps of ``file`` in the input folder (``load_video``); errors name the file as
    the user gave it, not by its absolute path on the server."""
    with client_paths():
        return load_video(input_path(file), num_frames, start, stride, size, on_step=on_step)


def load_video_input(video: Input.Video, num_frames: int = 81, start: int = 0, stride: int = 1,
                     size: Optional[tuple[int, int]] = None, *, on_step: StepFn | None = None):
    """Frames (T, H, W, 3) and fps from a core VIDEO object (``VideoInput``).

    File-backed videos (``VideoFromFile``) are streamed from their source (only the needed frames are
    decoded); others go through ``get_components()`` (frames already in memory).
    """
    if isinstance(video, InputImpl.VideoFromFile):
        return load_video(video.get_stream_source(), num_frames, start, stride, size, on_step=on_step)
    comp = video.get_components()
    return prepare_frames(comp.images, float(comp.frame_rate), num_frames, start, stride, size,
                          name="<VIDEO input>", on_step=on_step)
