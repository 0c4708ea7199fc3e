"""Full4D nodes: video input (a file from the input folder, or the host's VIDEO)."""

import os

from comfy_api.latest import io

from comfyui_full4d.host.progress import progress
from comfyui_full4d.host.video import input_exists, input_path, input_videos, load_input_video, load_video_input
from comfyui_full4d.media.video import SIZE_MULTIPLE


def _size(width: int, height: int):
    """(height, width) for the loader, None for the automatic size; a ValueError naming both widgets otherwise."""
    if (width == 0) != (height == 0) or width % SIZE_MULTIPLE or height % SIZE_MULTIPLE:
        raise ValueError(f"width={width}, height={height}: set both to multiples of {SIZE_MULTIPLE}, "
                         "or both to 0 for the automatic size")
    return None if width == 0 and height == 0 else (height, width)


class Full4DLoadVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Full4DLoadVideo", display_name="Full4D Load Video", category="Full4D/inputs",
            description="Load the source video: decodes only the frames it needs, snaps the count down to 4k+1 "
                        "(Wan's VAEs), resizes and centre-crops to a multiple of 32.",
            inputs=[
                io.Combo.Input("file", options=input_videos(), upload=io.UploadType.video,
                               tooltip="Video file in the input folder (upload with the button)."),
                io.Video.Input("video", optional=True,
                               tooltip="Optional VIDEO (e.g. from the core Load Video); takes precedence over file."),
                io.Int.Input("num_frames", default=81, min=0, max=4097,
                             tooltip="Frames to take, snapped down to 4k+1 (1, 5, ..., 81); 0 = all available."),
                io.Int.Input("start", default=0, min=0, max=10**7, tooltip="First source frame (0-based)."),
                io.Int.Input("stride", default=1, min=1, max=1000,
                             tooltip="Take every stride-th frame (the output fps is the source fps / stride)."),
                io.Int.Input("width", default=0, min=0, max=8192, step=SIZE_MULTIPLE,
                             tooltip="Output width, a multiple of 32; 0 with height 0 = auto (672x384 landscape, "
                                     "384x672 portrait)."),
                io.Int.Input("height", default=0, min=0, max=8192, step=SIZE_MULTIPLE,
                             tooltip="Output height, a multiple of 32; 0 with width 0 = auto."),
            ],
            outputs=[
                io.Image.Output(display_name="images", tooltip="Frames (T, H, W, 3)."),
                io.Float.Output(display_name="fps", tooltip="Frame rate of the returned frames."),
                io.Int.Output(display_name="frame_count", tooltip="T, the number of returned frames (4k+1)."),
            ],
        )

    @classmethod
    def validate_inputs(cls, file):
        # Only `file`: the host reports a failed check once for every argument this method takes (a missing video
        # came up three times with width and height here), so the size is checked when the node runs (_size).
        if file and not input_exists(file):
            return f"Invalid video file: {file}"
        return True

    @classmethod
    def fingerprint_inputs(cls, file, video=None, **kwargs):
        return os.path.getmtime(input_path(file)) if video is None and file and input_exists(file) else ""

    @classmethod
    def execute(cls, file, num_frames, start, stride, width, height, video=None) -> io.NodeOutput:
        size = _size(width, height)
        step = progress(max(1, num_frames))
        if video is not None:
            frames, fps = load_video_input(video, num_frames, start, stride, size, on_step=step)
        elif not file:
            raise ValueError("Full4DLoadVideo: no video; choose a file (upload one) or connect a VIDEO input")
        else:
            frames, fps = load_input_video(file, num_frames, start, stride, size, on_step=step)
        return io.NodeOutput(frames, fps, int(frames.shape[0]))


NODES: list[type[io.ComfyNode]] = [Full4DLoadVideo]
