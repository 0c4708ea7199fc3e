"""Test-only node pack linked into the test server's custom_nodes/ (never part of the product).

The host's Wan text-encoder loader only accepts the full-size umT5-XXL, so server tests get their
CONDITIONING from here: a seeded random ``(1, L, 4096)`` tensor in the host's conditioning format.
"""

import torch
from comfy_api.latest import ComfyExtension, io


class Full4DTestConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="Full4DTestConditioning", category="testing",
                         inputs=[io.Int.Input("seed", default=0), io.Int.Input("length", default=8, min=1)],
                         outputs=[io.Conditioning.Output()])

    @classmethod
    def execute(cls, seed, length) -> io.NodeOutput:
        g = torch.Generator().manual_seed(seed)
        return io.NodeOutput([[torch.randn(1, length, 4096, generator=g) * 0.1, {}]])


class Full4DTestLatents(io.ComfyNode):
    """Seeded random latents standing in for VAE-encoded videos (the host's VAE loader only builds
    the full-size Wan2.2 VAE): a source (1, 48, T, h, w) and V-1 projections (V-1, 48, T, h, w)."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="Full4DTestLatents", category="testing",
                         inputs=[io.Int.Input("seed", default=0), io.Int.Input("num_views", default=3, min=2),
                                 io.Int.Input("frames", default=2, min=1), io.Int.Input("height", default=4, min=2),
                                 io.Int.Input("width", default=6, min=2)],
                         outputs=[io.Latent.Output(display_name="source"), io.Latent.Output(display_name="projections")])

    @classmethod
    def execute(cls, seed, num_views, frames, height, width) -> io.NodeOutput:
        g = torch.Generator().manual_seed(seed)
        src = torch.randn(1, 48, frames, height, width, generator=g)
        proj = torch.randn(num_views - 1, 48, frames, height, width, generator=g)
        return io.NodeOutput({"samples": src}, {"samples": proj})


class _Ext(ComfyExtension):
    async def get_node_list(self):
        return [Full4DTestConditioning, Full4DTestLatents]


async def comfy_entrypoint():
    return _Ext()
