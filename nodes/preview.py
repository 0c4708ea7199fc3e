"""Full4D nodes: browser preview of a 4D Gaussian scene (issue 7). The node writes one quantised "F4DP"
buffer (comfyui_full4d.gaussians.preview) to the temp folder and returns it in its UI output; web/full4d_preview.js
fetches it with /view and renders it."""

from __future__ import annotations

import glob
import hashlib
import json
import os

from comfy_api.latest import io

from comfyui_full4d.common.io import write_bytes
from comfyui_full4d.host.device import compute_device
from comfyui_full4d.host.paths import client_paths, safe_join, output_dir, temp_dir
from comfyui_full4d.gaussians.preview import cameras_json, encode_frames, read_ply_gaussians, scene_frames

from .types import RIG, SCENE4D

SUBFOLDER = "full4d_preview"


class Full4DSplatPreview(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Full4DSplatPreview", display_name="Full4D Splat Preview", category="Full4D/preview",
            description="Interactive 4D Gaussian preview in the node (orbit/pan/zoom, time slider, rig cameras).",
            is_output_node=True,
            inputs=[
                SCENE4D.Input("scene4d", optional=True, tooltip="A fitted 4D scene (Full4DFit4DGS)."),
                io.String.Input("ply_path", default="", optional=True,
                                tooltip="Static 3DGS PLY: absolute path or a path relative to the output folder "
                                        "(used when scene4d is not connected); a pattern with '*' (e.g. "
                                        "scene/frame_*.ply) gives one frame per file, sorted by name."),
                RIG.Input("rig", optional=True, tooltip="Rig whose cameras get jump buttons and an orbit."),
                io.Int.Input("num_frames", default=21, min=1, max=240, tooltip="Time samples sent to the browser."),
                io.Float.Input("fps", default=16.0, min=0.1, max=120.0,
                               tooltip="Playback rate of the play button (frames per second); a change applies "
                                       "at once, without running the graph again."),
            ],
            outputs=[],
        )

    @classmethod
    def execute(cls, scene4d=None, ply_path="", rig=None, num_frames=21, fps=16.0) -> io.NodeOutput:
        if scene4d is not None:
            t0, t1 = scene4d.time_range
            n = int(num_frames)
            times = [t0 + (t1 - t0) * i / max(n - 1, 1) for i in range(n)]
            frames = scene_frames(scene4d.to(compute_device()), times)  # deformed on the host's device
        elif ply_path:
            with client_paths():
                p = safe_join(output_dir(), ply_path, "ply_path")
                paths = sorted(glob.glob(p)) if "*" in p else ([p] if os.path.isfile(p) else [])
                for q in paths:  # a file matched by a pattern may itself be a symlink leading out
                    safe_join(output_dir(), os.path.relpath(q, os.path.realpath(output_dir())), "ply_path")
                if not paths:
                    raise ValueError(f"ply_path={ply_path!r}: no such file in the output folder; give a path "
                                     f"relative to it (a '*' pattern loads one PLY per frame)")
                frames = [read_ply_gaussians(q) for q in paths]
        else:
            raise ValueError("Full4DSplatPreview needs scene4d connected or ply_path set")
        buf = encode_frames(frames, fps=fps)
        name = hashlib.sha1(buf).hexdigest()[:20] + ".f4dp"
        folder = os.path.join(temp_dir(), SUBFOLDER)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, name)
        write_bytes(path, buf)
        cams = cameras_json(rig) if rig is not None else {"rig": [], "orbit": [], "center": None}
        # the scene's background colour (its renders' and exports'), drawn where no splat covers a pixel
        background = scene4d.extras.get("background") if scene4d is not None else None
        return io.NodeOutput(ui={"full4d_preview": [{"filename": name, "subfolder": SUBFOLDER, "type": "temp",
                                                     "bytes": len(buf), "frames": len(frames),
                                                     "background": background}],
                                 "full4d_cameras": [json.dumps(cams)]})


NODES: list[type[io.ComfyNode]] = [Full4DSplatPreview]
