"""Full4D nodes: point-cloud projection guidance (SPEC 3)."""

from comfy_api.latest import io

from comfyui_full4d.host.device import compute_device, output_device
from comfyui_full4d.host.progress import progress
from comfyui_full4d.geometry.projection import project_rig_batch

from .types import GEOMETRY, RIG


class Full4DProjectToCameras(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Full4DProjectToCameras", display_name="Full4D Project To Cameras", category="Full4D/guidance",
            description="Lift every confident source pixel to 3D with its depth and z-buffer the points into each "
                        "rig camera: the spatial guidance of the multi-view model (holes black, mask 0).",
            inputs=[
                io.Image.Input("source", tooltip="Source video (T frames) at the geometry's size."),
                GEOMETRY.Input("geometry", tooltip="Depth, confidence, intrinsics and poses of the source."),
                RIG.Input("rig", tooltip="Target cameras in scene units (view 0 = the source)."),
                io.Int.Input("width", default=0, min=0, max=4096, step=8,
                             tooltip="Render width; 0 = the rig's width."),
                io.Int.Input("height", default=0, min=0, max=4096, step=8,
                             tooltip="Render height; 0 = the rig's height."),
                io.Float.Input("conf_threshold", default=0.0, min=0.0, max=100.0, step=0.05,
                               tooltip="Project only pixels whose depth confidence is above this."),
                io.Int.Input("point_radius", default=0, min=0, max=4,
                             tooltip="Splat each point to a (2r+1)^2 pixel square (fills small holes)."),
            ],
            outputs=[io.Image.Output(display_name="renders",
                                     tooltip="What each camera sees of the source: all frames of view 0 (the source), "
                                             "then view 1, ...; holes black."),
                     io.Mask.Output(display_name="masks", tooltip="White where the source covers a view, black in its "
                                                                  "holes (one mask per frame of each view)."),
                     io.Image.Output(display_name="contact_sheet", tooltip="Rows = views, columns = frames.")],
        )

    @classmethod
    def validate_inputs(cls, width, height):
        if (width == 0) != (height == 0):
            return f"set both width and height, or leave both 0 (got width={width}, height={height})"
        return True

    @classmethod
    def execute(cls, source, geometry, rig, width, height, conf_threshold, point_radius) -> io.NodeOutput:
        size = (height, width) if width and height else None
        out = project_rig_batch(source.to(compute_device()), geometry, rig, size, conf_threshold, point_radius,
                                on_step=progress(geometry.num_frames))  # z-buffers on the host's device
        return io.NodeOutput(*(x.to(output_device()) for x in out))


NODES: list[type[io.ComfyNode]] = [Full4DProjectToCameras]
