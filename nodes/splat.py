"""Full4D nodes for core ComfyUI's SPLAT type (hosts that have it, 0.33+; none on 0.3.75)."""

from __future__ import annotations

import logging

from comfy_api.latest import io

from comfyui_full4d.host.splat import HAS_SPLAT, MISSING_SPLAT

from .gaussians import CATEGORY
from .types import SCENE4D


class Full4DSceneToSplat(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Full4DSceneToSplat", display_name="Full4D Scene To Splat", category=CATEGORY,
            description="The 4D scene's Gaussians at one time as a core SPLAT (for Save / Preview Splat and core's "
                        "splat tools); with num_frames > 1 a batch of splats evenly spaced over the fitted time range.",
            inputs=[
                SCENE4D.Input("scene4d", tooltip="A fitted 4D scene."),
                io.Float.Input("time", default=0.0, min=-1e6, max=1e6, step=0.01,
                               tooltip="Scene time of the splat (used when num_frames is 1)."),
                io.Int.Input("num_frames", default=1, min=1, max=1000,
                             tooltip="1: the splat at 'time'; more: one splat per frame over the time range "
                                     "(core's file writers take the first item of a batch)."),
            ],
            outputs=[io.Splat.Output(display_name="splat")],
        )

    @classmethod
    def execute(cls, scene4d, time, num_frames) -> io.NodeOutput:
        from comfyui_full4d.gaussians.splat import scene_times, splats_at
        from comfyui_full4d.host.splat import to_core

        return io.NodeOutput(to_core(splats_at(scene4d, scene_times(scene4d, time, num_frames))))


if HAS_SPLAT:
    NODES: list[type[io.ComfyNode]] = [Full4DSceneToSplat]
else:
    logging.info(MISSING_SPLAT)
    NODES = []
