"""Full4D nodes: Depth Anything 3 loader and depth/camera estimation (SPEC 3); the same from core ComfyUI's DA3
model or output (0.33+, registered only where the host has them)."""

import logging

from comfy_api.latest import io

from comfyui_full4d.geometry.da3_core import RESIZE_METHODS, geometry_from_da3
from comfyui_full4d.geometry.depth import depth_preview, estimate_depth
from comfyui_full4d.host.depth import HAS_CORE_DA3, MISSING_CORE_DA3, core_da3_model, da3_folders, load_da3_model
from comfyui_full4d.host.progress import progress

from .types import CORE_DA3_GEOMETRY, CORE_DA3_MODEL, DA3_MODEL, GEOMETRY


def _estimate_inputs() -> list:
    """static_camera, batch, process_res: shared by Full4DDA3Depth and Full4DDA3DepthFromCore (in this order)."""
    return [
        io.Boolean.Input("static_camera", default=True,
                         tooltip="The source camera stands still (a tripod shot): one camera pose for every "
                                 "frame. Off: a moving camera, its pose estimated by DA3 for every frame."),
        io.Int.Input("batch", default=8, min=2, max=256,
                     tooltip="Frames DA3 looks at together. Lower it when memory runs out (frame 0 joins "
                             "every group so all share one scale)."),
        io.Int.Input("process_res", default=504, min=14, max=2016, step=14,
                     tooltip="Size DA3 works at (longest side in pixels): higher gives finer depth, slower."),
    ]


def _geometry_outputs() -> list:
    return [
        GEOMETRY.Output(display_name="geometry", tooltip="Depth, confidence, intrinsics and poses."),
        io.Image.Output(display_name="depth_preview", tooltip="Colour-mapped inverse depth (near = bright)."),
    ]


class Full4DDA3Loader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Full4DDA3Loader", display_name="Full4D Depth Anything 3 Loader", category="Full4D/depth",
            description="Load a Depth Anything 3 model from models/depth_anything_3/<name>/ "
                        "(model.safetensors + config.json).",
            inputs=[
                io.Combo.Input("model", options=da3_folders(),
                               tooltip="Folder in models/depth_anything_3/ holding model.safetensors and "
                                       "config.json (e.g. da3-small, da3-large)."),
            ],
            outputs=[DA3_MODEL.Output(display_name="da3_model", tooltip="The loaded DA3 network.")],
        )

    @classmethod
    def validate_inputs(cls, model):
        if model not in da3_folders():
            return (f"DA3 model {model!r} not found: put model.safetensors and config.json in "
                    f"models/depth_anything_3/{model or '<name>'}/ (available: {da3_folders() or 'none'})")
        return True

    @classmethod
    def execute(cls, model) -> io.NodeOutput:
        return io.NodeOutput(load_da3_model(model))


class Full4DDA3Depth(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Full4DDA3Depth", display_name="Full4D DA3 Depth", category="Full4D/depth",
            description="Estimates the depth of every frame of the video and its camera with Depth Anything 3: "
                        "the 3D shape the other views are built from. The scene is measured from the first "
                        "frame's camera.",
            inputs=[
                DA3_MODEL.Input("da3_model", tooltip="From Full4D Depth Anything 3 Loader."),
                io.Image.Input("images", tooltip="Source video frames (T, H, W, 3)."),
                *_estimate_inputs(),
            ],
            outputs=_geometry_outputs(),
        )

    @classmethod
    def execute(cls, da3_model, images, static_camera, batch, process_res) -> io.NodeOutput:
        geometry = estimate_depth(da3_model, images, batch=batch, static_camera=static_camera,
                                  process_res=process_res, on_step=progress(images.shape[0]))
        return io.NodeOutput(geometry, depth_preview(geometry))


class Full4DDA3DepthFromCore(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Full4DDA3DepthFromCore", display_name="Full4D DA3 Depth (core model)", category="Full4D/depth",
            description="Full4D DA3 Depth with the model of core's Load Depth Anything 3 node (DA3-Small / Base: "
                        "the variants that estimate cameras), so no second DA3 copy is loaded.",
            inputs=[
                CORE_DA3_MODEL.Input("da3_model", tooltip="From core's Load Depth Anything 3 (DA3-Small or Base)."),
                io.Image.Input("images", tooltip="Source video frames (T, H, W, 3)."),
                *_estimate_inputs(),
            ],
            outputs=_geometry_outputs(),
        )

    @classmethod
    def execute(cls, da3_model, images, static_camera, batch, process_res) -> io.NodeOutput:
        return Full4DDA3Depth.execute(core_da3_model(da3_model, process_res), images, static_camera, batch,
                                      process_res)


class Full4DGeometryFromDA3(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Full4DGeometryFromDA3", display_name="Full4D Geometry From DA3", category="Full4D/depth",
            description="The output of core's Run Depth Anything 3 (mode multiview, the video's frames as views) as "
                        "Full4D geometry: intrinsics rescaled from DA3's working size to the frame size, poses "
                        "relative to frame 0, scale = median depth of frame 0.",
            inputs=[
                CORE_DA3_GEOMETRY.Input("da3_geometry", tooltip="From core's Run Depth Anything 3, mode multiview."),
                _estimate_inputs()[0],  # static_camera
                io.Int.Input("resolution", default=504, min=14, max=2520, step=14,
                             tooltip="The resolution Run Depth Anything 3 ran with (its intrinsics are at that "
                                     "working size)."),
                io.Combo.Input("resize_method", options=list(RESIZE_METHODS), default=RESIZE_METHODS[0],
                               tooltip="The resize_method Run Depth Anything 3 ran with."),
            ],
            outputs=_geometry_outputs(),
        )

    @classmethod
    def execute(cls, da3_geometry, static_camera, resolution, resize_method) -> io.NodeOutput:
        geometry = geometry_from_da3(da3_geometry, resolution, resize_method, static_camera=static_camera)
        return io.NodeOutput(geometry, depth_preview(geometry))


NODES: list[type[io.ComfyNode]] = [Full4DDA3Loader, Full4DDA3Depth]
if HAS_CORE_DA3:
    NODES += [Full4DDA3DepthFromCore, Full4DGeometryFromDA3]
else:
    logging.info(MISSING_CORE_DA3)
