"""Full4D nodes: layout of multi-view frame batches."""

from comfy_api.latest import io

from comfyui_full4d.media.grid import split_views, view_grid


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


NODES: list[type[io.ComfyNode]] = [Full4DViewGrid]
