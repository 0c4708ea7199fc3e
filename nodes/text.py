"""Full4D node: the fixed text conditioning of the embedded nano Full-4D model (no text encoder needed)."""

from comfy_api.latest import io

from comfyui_full4d.diffusion.nano import empty_context


class Full4DEmptyText(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Full4DEmptyText", display_name="Full4D Empty Text (nano model)", category="Full4D/diffusion",
            description="The one text conditioning the pack's built-in nano model was trained with, so its graphs "
                        "run without a text encoder file. Connect it to both positive and negative. Real Wan "
                        "models need a real prompt from a text encoder (CLIP Text Encode) instead.",
            inputs=[],
            outputs=[io.Conditioning.Output(tooltip="Empty conditioning for the nano model.")],
        )

    @classmethod
    def execute(cls) -> io.NodeOutput:
        return io.NodeOutput([[empty_context(), {}]])


NODES: list[type[io.ComfyNode]] = [Full4DEmptyText]
