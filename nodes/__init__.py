"""All Full4D nodes. One module per concern; each exports ``NODES`` (a list of node classes)."""

from comfy_api.latest import ComfyExtension, io

from comfyui_full4d.host.paths import register

from . import (depth, evaluate, gaussians, grid, latents, multiview, parallel, preview, projection, rig, sampler,
               splat, synthetic, text, video)

register()  # the pack's model folders, and its embedded nano model in core's diffusion_models / vae lists

_MODULES = [synthetic, video, depth, rig, projection, latents, text, sampler, gaussians, preview, grid, evaluate,
            multiview, parallel, splat]

NODES: list[type[io.ComfyNode]] = [node for m in _MODULES for node in m.NODES]


class Full4DExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)
