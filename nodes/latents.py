"""Full4D nodes: VAE encoding of multi-view batches (each view its own video)."""

import torch
from comfy_api.latest import io

from comfyui_full4d.media.grid import split_views
from comfyui_full4d.host.progress import progress


def encode_views(vae, images: torch.Tensor, num_views: int, skip_source: bool) -> dict:
    """images (V*T, H, W, 3) view-major -> LATENT samples (V or V-1, C, T_lat, h, w).

    The host's VAEEncode would treat the whole batch as one long video and mix views across
    time; here every view is encoded as its own clip, in view order.
    """
    views = split_views(images, num_views)
    views = views[1:] if skip_source else views
    if views.shape[0] == 0:
        raise ValueError("num_views: skip_source leaves no view to encode (need num_views >= 2)")
    step = progress(views.shape[0])
    out = []
    for i, v in enumerate(views):
        out.append(vae.encode(v[..., :3]))
        step(i + 1, views.shape[0])
    return {"samples": torch.cat(out, 0)}


class Full4DVAEEncodeViews(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Full4DVAEEncodeViews", display_name="Full4D VAE Encode Views", category="Full4D/diffusion",
            description="Encodes a multi-view video with the video VAE one view at a time (core VAE Encode would "
                        "run the views together as one long clip and blend them).",
            inputs=[
                io.Image.Input("images", tooltip="All frames of view 0, then view 1, ... (e.g. the projections)."),
                io.Vae.Input("vae", tooltip="The video model's VAE (Load VAE): the Wan2.2 VAE, or the "
                                           "Wan2.1 VAE for Wan2.1-class models."),
                io.Int.Input("num_views", default=6, min=1, max=64, tooltip="How many views the frames hold."),
                io.Boolean.Input("skip_source", default=True,
                                 tooltip="Leave out view 0 (the source): the sampler wants only the target views."),
            ],
            outputs=[io.Latent.Output(display_name="latent", tooltip="One latent video per view, in view order.")],
        )

    @classmethod
    def execute(cls, images, vae, num_views, skip_source) -> io.NodeOutput:
        return io.NodeOutput(encode_views(vae, images, num_views, skip_source))


NODES: list[type[io.ComfyNode]] = [Full4DVAEEncodeViews]
