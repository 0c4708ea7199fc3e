"""Full4D nodes: evaluation of generated views (SPEC 9; metrics in comfyui_full4d.media.metrics)."""

from comfy_api.latest import io, ui

from comfyui_full4d.media.metrics import evaluation_report


class Full4DEvaluate(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Full4DEvaluate", display_name="Full4D Evaluate", category="Full4D/evaluation",
            description="PSNR / SSIM against ground truth, SIFT feature matches with the input video at the same "
                        "timestamp, photometric reprojection error against the projection renders, temporal "
                        "flicker. Returns a table image and the numbers as JSON.",
            inputs=[
                io.Image.Input("source", tooltip="The input video (T frames)."),
                io.Image.Input("views", tooltip="Generated target views (all frames of view 1, then "
                                                "view 2, ...), the same size as the source."),
                io.Image.Input("ground_truth", optional=True,
                               tooltip="True target views in the same layout (synthetic scenes or held-out "
                                       "cameras); enables PSNR and SSIM."),
                io.Image.Input("projections", optional=True,
                               tooltip="Point-cloud projection renders of the source into the target views "
                                       "(same layout); with the masks enables the reprojection error."),
                io.Mask.Input("projection_masks", optional=True,
                              tooltip="Validity masks of the projection renders (same layout)."),
                io.String.Input("label", default="output", tooltip="Row label in the table and the JSON."),
                io.Boolean.Input("skip_source_view", default=False, optional=True,
                                 tooltip="On: the inputs hold every view of the rig, view 0 the source (a sampler's "
                                         "decoded output, the scene's true views, the projections); view 0 is "
                                         "left out so only the new views are scored."),
            ],
            outputs=[io.Image.Output(display_name="table"), io.String.Output(display_name="json")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, source, views, label, ground_truth=None, projections=None, projection_masks=None,
                skip_source_view=False) -> io.NodeOutput:
        table, text = evaluation_report(source, views, ground_truth, projections, projection_masks, label,
                                        skip_source_view)
        return io.NodeOutput(table, text, ui=ui.PreviewText(text))


NODES: list[type[io.ComfyNode]] = [Full4DEvaluate]
