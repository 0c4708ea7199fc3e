"""Full4D nodes: browser preview of a 4D Gaussian scene (issue 7). The node writes one quantised "F4DP"
buffer (comfyui_full4d.gaussians.preview) and the cameras' JSON (``cameras_json``: the cameras Full4DRender4DGS
renders from, metric) to the temp folder and returns them in its UI output; web/full4d_preview.js fetches them
with /view and renders them (docs/preview.md)."""

from __future__ import annotations

import glob
import hashlib
import json
import os

from comfy_api.latest import io

from comfyui_full4d.common.io import write_bytes
from comfyui_full4d.host.device import compute_device
from comfyui_full4d.host.paths import client_paths, safe_join, output_dir, temp_dir
from comfyui_full4d.gaussians.preview import (cameras_json, encode_frames, preview_scale, read_ply_gaussians,
                                               scene_frames)

from .types import GEOMETRY, RIG, SCENE4D

SUBFOLDER = "full4d_preview"


class Full4DSplatPreview(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Full4DSplatPreview", display_name="Full4D Splat Preview", category="Full4D/preview",
            description="Interactive 4D Gaussian preview in the node: drag to orbit about the rig's look-at point, "
                        "right-drag to pan, wheel to zoom, a time slider, and one button per rig camera (plus the "
                        "orbit) showing the scene as Full4D Render 4D Gaussians renders it from that camera. The "
                        "line under the buttons says which scale placed the cameras.",
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
                GEOMETRY.Input("geometry", optional=True,
                               tooltip="Source geometry (its scale, metres per rig unit) for a PLY that records no "
                                       "scale, e.g. one written by core's Save / SplatToFile3D: places the rig's "
                                       "cameras in the PLY's metric world. Not needed for scene4d or for the "
                                       "PLYs of Full4D Save 4D Gaussians (they carry their scale)."),
            ],
            outputs=[],
        )

    @classmethod
    def execute(cls, scene4d=None, ply_path="", rig=None, num_frames=21, fps=16.0, geometry=None) -> io.NodeOutput:
        if scene4d is not None:
            t0, t1 = scene4d.time_range
            n = int(num_frames)
            times = [t0 + (t1 - t0) * i / max(n - 1, 1) for i in range(n)]
            frames = scene_frames(scene4d.to(compute_device()), times)  # deformed on the host's device
            scale, note = preview_scale(scene=scene4d, geometry_scale=None if geometry is None else geometry.scale)
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
                scale, note = preview_scale(ply_path=paths[0], root=output_dir(),
                                            geometry_scale=None if geometry is None else geometry.scale)
        else:
            raise ValueError("Full4DSplatPreview needs scene4d connected or ply_path set")
        buf = encode_frames(frames, fps=fps)
        if rig is not None:
            cams = cameras_json(rig, scale)
        else:
            cams, note = {"rig": [], "orbit": [], "center": None, "scale": scale}, "no rig connected: free view"
        cams_bytes = json.dumps(cams).encode()
        folder = os.path.join(temp_dir(), SUBFOLDER)
        os.makedirs(folder, exist_ok=True)
        name = hashlib.sha1(buf).hexdigest()[:20] + ".f4dp"
        cams_name = hashlib.sha1(cams_bytes).hexdigest()[:20] + ".json"
        write_bytes(os.path.join(folder, name), buf)
        write_bytes(os.path.join(folder, cams_name), cams_bytes)
        # the scene's background colour (its renders' and exports'), drawn where no splat covers a pixel
        background = scene4d.extras.get("background") if scene4d is not None else None
        return io.NodeOutput(ui={"full4d_preview": [{"filename": name, "subfolder": SUBFOLDER, "type": "temp",
                                                     "bytes": len(buf), "frames": len(frames),
                                                     "background": background, "cameras": cams_name,
                                                     "scale": scale, "scale_note": note}]})


NODES: list[type[io.ComfyNode]] = [Full4DSplatPreview]
