"""Full4D nodes: layout of multi-view frame batches."""

from comfy_api.latest import io

from comfyui_full4d.media.grid import split_views, stack_videos, view_grid


class Full4DViewGrid(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Full4DViewGrid", display_name="Full4D View Grid", category="Full4D/utils",
            description="Tiles a multi-view video (all frames of view 0, then view 1, ...) into one video with "
                        "the views side by side.",
            inputs=[
                io.Image.Input("images", tooltip="View-major frames: all T frames of view 0, then view 1, ..."),
                io.Int.Input("num_views", default=6, min=1, max=64, tooltip="How many views the frames hold."),
                io.Int.Input("columns", default=0, min=0, max=64,
                             tooltip="Views per row; 0 = about square."),
                io.Int.Input("gap", default=4, min=0, max=64, tooltip="Black gap between tiles in pixels."),
            ],
            outputs=[io.Image.Output(display_name="grid")],
        )

    @classmethod
    def execute(cls, images, num_views, columns, gap) -> io.NodeOutput:
        return io.NodeOutput(view_grid(split_views(images, num_views), columns, gap))


class Full4DStackVideos(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Full4DStackVideos", display_name="Full4D Stack Videos", category="Full4D/utils",
            description="Put up to four videos side by side (or one above the other) in one video, each with a "
                        "label, to compare them at a glance. Shorter videos loop.",
            inputs=[
                io.Image.Input("video_1", tooltip="First panel (a video, e.g. a View Grid)."),
                io.Image.Input("video_2", optional=True, tooltip="Second panel."),
                io.Image.Input("video_3", optional=True, tooltip="Third panel."),
                io.Image.Input("video_4", optional=True, tooltip="Fourth panel."),
                io.String.Input("labels", default="", tooltip="Panel labels, separated by '|' (empty: none)."),
                io.Combo.Input("direction", options=["top to bottom", "left to right"], default="top to bottom",
                               tooltip="How the panels are placed."),
                io.Int.Input("gap", default=4, min=0, max=64, tooltip="Black gap between panels in pixels."),
            ],
            outputs=[io.Image.Output(display_name="video")],
        )

    @classmethod
    def execute(cls, video_1, labels, direction, gap, video_2=None, video_3=None, video_4=None) -> io.NodeOutput:
        videos = [v for v in (video_1, video_2, video_3, video_4) if v is not None]
        names = [x.strip() for x in labels.split("|")] if labels.strip() else []
        return io.NodeOutput(stack_videos(videos, names, direction == "top to bottom", gap))


NODES: list[type[io.ComfyNode]] = [Full4DViewGrid, Full4DStackVideos]
