"""Full4D nodes: a synchronized multi-view capture (N3DV, ReCamMaster, Panoptic, DyCheck) from the input folder."""

import os

from comfy_api.latest import io

from comfyui_full4d.training.captures import FORMATS
from comfyui_full4d.host.paths import input_subfolder
from comfyui_full4d.host.progress import progress
from comfyui_full4d.media.video import SIZE_MULTIPLE

from .types import RIG


class Full4DLoadMultiView(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Full4DLoadMultiView", display_name="Full4D Load Multi-View Capture", category="Full4D/inputs",
            description="Load a synchronized multi-view capture folder (Neural 3D Video, ReCamMaster "
                        "MultiCamVideo / SynCamVideo, CMU Panoptic, DyCheck / Nerfies) from the input folder: the "
                        "selected views' frames (undistorted, resized to a multiple of 32, 4k+1 frames; all "
                        "frames of view 0, then view 1, ...) and their cameras as a rig (view 0 = the first view). "
                        "See docs/cameras.md.",
            inputs=[
                io.String.Input("folder", default="",
                                tooltip="Capture folder inside the input folder, e.g. n3dv/coffee_martini or "
                                        "MultiCamVideo-Dataset/train/f24_aperture5/scene1."),
                io.Combo.Input("format", options=["auto", *FORMATS], default="auto",
                               tooltip="Layout of the folder; auto detects it from the files."),
                io.String.Input("views", default="",
                                tooltip="Comma-separated view names, the first becomes the source (view 0); empty = "
                                        "the format's usual set (fixed cameras; HD for Panoptic); '-cam00' leaves "
                                        "a view out."),
                io.Int.Input("num_frames", default=81, min=0, max=4097,
                             tooltip="Frames per view, snapped down to 4k+1 (1, 5, ..., 81); 0 = all available."),
                io.Int.Input("start", default=0, min=0, max=10**7, tooltip="First frame (0-based)."),
                io.Int.Input("stride", default=1, min=1, max=1000,
                             tooltip="Take every stride-th frame (the output fps is the capture's fps / stride)."),
                io.Int.Input("width", default=0, min=0, max=8192, step=SIZE_MULTIPLE,
                             tooltip="Output width, a multiple of 32; 0 with height 0 = auto (672x384 landscape, "
                                     "384x672 portrait). Frames are resized and centre-cropped; K follows."),
                io.Int.Input("height", default=0, min=0, max=8192, step=SIZE_MULTIPLE,
                             tooltip="Output height, a multiple of 32; 0 with width 0 = auto."),
            ],
            outputs=[
                io.Image.Output(display_name="images",
                                tooltip="All frames of view 0, then all frames of view 1, and so on."),
                RIG.Output(display_name="rig", tooltip="The views' cameras relative to view 0, in scene units."),
                io.Float.Output(display_name="fps", tooltip="Frame rate of the returned frames."),
                io.Image.Output(display_name="source", tooltip="The T frames of view 0 (the source video)."),
                io.Int.Output(display_name="frame_count", tooltip="T, frames per view (4k+1)."),
            ],
        )

    @classmethod
    def validate_inputs(cls, folder, width, height):
        if (width == 0) != (height == 0) or width % SIZE_MULTIPLE or height % SIZE_MULTIPLE:
            return (f"width={width}, height={height}: set both to multiples of {SIZE_MULTIPLE}, "
                    "or both to 0 for the automatic size")
        if not folder:
            return "folder is empty: give a capture folder inside the input folder"
        try:
            input_subfolder(folder, "folder")
        except ValueError as e:
            return str(e)
        return True

    @classmethod
    def fingerprint_inputs(cls, folder, **kwargs):
        try:
            path = input_subfolder(folder, "folder")
        except ValueError:
            return ""
        with os.scandir(path) as it:
            return max([os.path.getmtime(path)] + [e.stat().st_mtime for e in it])

    @classmethod
    def execute(cls, folder, format, views, num_frames, start, stride, width, height) -> io.NodeOutput:
        from comfyui_full4d.training.captures import load_multiview

        mv = load_multiview(input_subfolder(folder, "folder"), format, views, num_frames, start, stride,
                            None if width == 0 and height == 0 else (height, width), label=folder,
                            on_step=progress(max(1, num_frames)))
        return io.NodeOutput(mv.view_major, mv.rig, mv.fps, mv.frames[0], int(mv.frames.shape[1]))


NODES: list[type[io.ComfyNode]] = [Full4DLoadMultiView]
