"""Full4D nodes: rig (presets + plot) and the App. B interpolated orbit."""

from comfy_api.latest import io

from comfyui_full4d.geometry.rig import PRESETS, interpolate_rig_cameras
from comfyui_full4d.geometry.rig_plot import rig_with_plot

from .types import GEOMETRY, RIG

_CUSTOM_HELP = ('JSON list of target cameras in scene units (x right, y down, z forward from the source; '
                '1 unit = median source depth): [{"eye": [x, y, z], "target": [x, y, z], "fov_y_deg": 50, '
                '"name": "left"}, ...]. Only "eye" is required; target defaults to the scene centre (0, 0, 1). '
                'The source camera is added as view 0.')


class Full4DCameraRig(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        cams = [io.Load3DCamera.Input(f"camera_{i}", optional=True,
                                      tooltip="Extra camera placed in the 3D viewer (Load3D's camera_info); "
                                              "appended to the preset. Positions are read in scene units.")
                for i in range(1, 4)]
        return io.Schema(
            node_id="Full4DCameraRig", display_name="Full4D Camera Rig", category="Full4D/rig",
            description="A camera rig in scene units (view 0 = the source camera) and a top-down + side plot "
                        "of its frusta over the source's scene points.",
            inputs=[
                io.Combo.Input("preset", options=list(PRESETS), default="ring",
                               tooltip="ring: num_views cameras on a circle around the scene; paper6: 6 views 60 "
                                       "degrees apart; arc: num_views spread over arc_span from the source camera; "
                                       "custom: the cameras of custom_json."),
                io.Int.Input("num_views", default=6, min=2, max=32,
                             tooltip="Cameras including the source (ring and arc presets)."),
                io.Float.Input("radius", default=1.0, min=0.05, max=10.0, step=0.05,
                               tooltip="Orbit radius in scene units (1 = median depth of the first source frame)."),
                io.Float.Input("elevation", default=0.0, min=-80.0, max=80.0, step=1.0,
                               tooltip="Orbit elevation above the horizontal plane, degrees."),
                io.Float.Input("arc_span", default=90.0, min=-360.0, max=360.0, step=5.0,
                               tooltip="Arc preset: azimuth of the last camera from the source, degrees "
                                       "(positive = towards the source's right)."),
                io.String.Input("custom_json", default="", multiline=True, tooltip=_CUSTOM_HELP),
                io.Int.Input("width", default=672, min=16, max=4096, step=8,
                             tooltip="Image width of the rig cameras when no geometry is connected."),
                io.Int.Input("height", default=384, min=16, max=4096, step=8,
                             tooltip="Image height of the rig cameras when no geometry is connected."),
                io.Float.Input("fov", default=50.0, min=10.0, max=120.0, step=1.0,
                               tooltip="Vertical field of view, degrees, when no geometry is connected "
                                       "(otherwise the source intrinsics are used)."),
                GEOMETRY.Input("geometry", optional=True,
                               tooltip="Source geometry: gives the intrinsics and size, and the plotted points."),
                io.Image.Input("source", optional=True, tooltip="Source video; its first frame colours the plot."),
                *cams,
            ],
            outputs=[RIG.Output(display_name="rig", tooltip="The camera rig (scene units)."),
                     io.Image.Output(display_name="plot", tooltip="Top-down (x-z) | side (z, up) plot.")],
        )

    @classmethod
    def execute(cls, preset, num_views, radius, elevation, arc_span, custom_json, width, height, fov,
                geometry=None, source=None, camera_1=None, camera_2=None, camera_3=None) -> io.NodeOutput:
        rig, plot = rig_with_plot(preset, width, height, fov, num_views, radius, elevation, arc_span, custom_json,
                                  [camera_1, camera_2, camera_3], geometry, source)
        return io.NodeOutput(rig, plot)


class Full4DInterpolateRig(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Full4DInterpolateRig", display_name="Full4D Orbit Through Rig",
            category="Full4D/rig",
            description="A smooth closed camera path through the rig's cameras, taken in order around the scene: "
                        "the cameras of an orbit video.",
            inputs=[RIG.Input("rig", tooltip="The cameras the path passes through (at least 2 in different places)."),
                    io.Int.Input("n", default=120, min=2, max=4096,
                                 tooltip="Cameras on the path, evenly spaced: the frames of an orbit video.")],
            outputs=[RIG.Output(display_name="rig",
                                tooltip="The path's cameras, starting at the first rig camera around the scene.")],
        )

    @classmethod
    def execute(cls, rig, n) -> io.NodeOutput:
        return io.NodeOutput(interpolate_rig_cameras(rig, n))


NODES: list[type[io.ComfyNode]] = [Full4DCameraRig, Full4DInterpolateRig]
