"""Full4D nodes: the procedural synthetic 4D scene (embedded demo input with exact ground truth)."""

from comfy_api.latest import io

from comfyui_full4d.host.progress import progress
from comfyui_full4d.media.synthetic import make_capture, render_truth

from .types import GEOMETRY, RIG, TRUTH, render_path_inputs


class Full4DSyntheticScene(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Full4DSyntheticScene", display_name="Full4D Synthetic 4D Scene", category="Full4D/inputs",
            description="Render a procedural moving scene (no files needed) from a ring of cameras: the source "
                        "video, the ground-truth views, the rig and the exact source depth.",
            inputs=[
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1,
                             tooltip="Scene seed (object placement, motion phases, colours)."),
                io.Int.Input("num_views", default=6, min=2, max=16,
                             tooltip="Cameras in the ring, including the source (view 0)."),
                io.Int.Input("num_frames", default=9, min=1, max=257,
                             tooltip="Frames of video; video models want 4k+1 (5, 9, 13, 17, 21, ...)."),
                io.Int.Input("width", default=160, min=8, max=2048, step=8, tooltip="Frame width in pixels."),
                io.Int.Input("height", default=96, min=8, max=2048, step=8, tooltip="Frame height in pixels."),
                io.Float.Input("radius", default=1.0, min=0.9, max=2.5, step=0.05,
                               tooltip="Ring radius in scene units (1 = the source's distance to the scene centre)."),
                io.Float.Input("elevation", default=0.0, min=-10.0, max=75.0, step=1.0,
                               tooltip="Ring elevation above the horizontal plane, degrees."),
                io.Float.Input("fov", default=50.0, min=20.0, max=70.0, step=1.0,
                               tooltip="Vertical field of view of every camera, degrees."),
            ],
            outputs=[
                io.Image.Output(display_name="source", tooltip="Source video (T frames), view 0 of the ring."),
                io.Image.Output(display_name="views", tooltip="What every camera sees: all frames of view 0, then "
                                                              "view 1, ..."),
                RIG.Output(display_name="rig", tooltip="The ring rig in scene units (view 0 = source)."),
                GEOMETRY.Output(display_name="geometry", tooltip="The exact depth of the source (and of every "
                                                                 "view) and its camera."),
                io.Float.Output(display_name="fps", tooltip="Frame rate of the rendered video."),
                GEOMETRY.Output(display_name="source_geometry",
                                tooltip="The source view's exact depth and camera only: what a depth estimator "
                                        "(Depth Anything 3) gives from the source video. Use it to run the method "
                                        "from the source alone."),
                TRUTH.Output(display_name="truth", tooltip="The scene itself, to render the true picture from any "
                                                           "camera (Full4D Render Truth) and score a result."),
            ],
        )

    @classmethod
    def execute(cls, seed, num_views, num_frames, width, height, radius, elevation, fov) -> io.NodeOutput:
        cap = make_capture(num_views=num_views, num_frames=num_frames, height=height, width=width, seed=seed,
                           fov_y_deg=fov, radius=radius, elevation_deg=elevation,
                           on_step=progress(num_views * num_frames))
        return io.NodeOutput(cap.source, cap.view_major, cap.rig, cap.geometry(), cap.fps, cap.source_geometry(),
                             cap.truth)


class Full4DRenderTruth(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Full4DRenderTruth", display_name="Full4D Render Truth", category="Full4D/evaluation",
            description="The true picture of a synthetic scene from a rig's cameras or along its orbit, with the "
                        "same cameras and times as Full4D Render 4D Gaussians, to score a fitted scene against.",
            inputs=[
                TRUTH.Input("truth", tooltip="The synthetic scene (Full4D Synthetic 4D Scene)."),
                RIG.Input("rig", tooltip="Cameras (the rig the scene was fitted with, or any other)."),
                *render_path_inputs(),
            ],
            outputs=[io.Image.Output(display_name="images", tooltip="The true frames.")],
        )

    @classmethod
    def execute(cls, truth, rig, mode, num_frames, time_start, time_end) -> io.NodeOutput:
        return io.NodeOutput(render_truth(truth, rig, mode == "orbit", num_frames, time_start, time_end,
                                          on_step=progress(num_frames if mode == "orbit" else num_frames * rig.num_views)))


NODES: list[type[io.ComfyNode]] = [Full4DSyntheticScene, Full4DRenderTruth]
