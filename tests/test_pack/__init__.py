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


class _Ext(ComfyExtension):
    async def get_node_list(self):
        return [Full4DTestConditioning]


async def comfy_entrypoint():
    return _Ext()
