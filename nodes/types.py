"""Custom socket types of the pack (objects passed between Full4D nodes)."""

from comfy_api.latest import io

# comfyui_full4d.geometry.cameras.Rig
RIG = io.Custom("FULL4D_RIG")
# comfyui_full4d.geometry.source.Geometry (depth, confidence, K, per-frame poses)
GEOMETRY = io.Custom("FULL4D_GEOMETRY")
# a loaded Depth Anything 3 network (comfyui_full4d.geometry.depth)
DA3_MODEL = io.Custom("FULL4D_DA3_MODEL")
# comfyui_full4d.gaussians.Scene4D
SCENE4D = io.Custom("FULL4D_SCENE4D")
# comfyui_full4d.media.synthetic.SyntheticTruth: a synthetic scene's ground truth, for scoring only
TRUTH = io.Custom("FULL4D_TRUTH")
# core ComfyUI's Depth Anything 3 sockets (0.33+, comfy_extras/nodes_depth_anything_3.py); used only where the host
# has them (comfyui_full4d.host.depth.HAS_CORE_DA3)
CORE_DA3_MODEL = io.Custom("DA3_MODEL")
CORE_DA3_GEOMETRY = io.Custom("DA3_GEOMETRY")
# comfyui_full4d.gaussians.pipeline.FitOptions (Full4DFitOptions -> Full4DFit4DGS)
FIT_OPTIONS = io.Custom("FULL4D_FIT_OPTIONS")
# comfyui_full4d.host.fmd.FMDTeacher (Full4DFMDTeacher -> Full4DFit4DGS)
FMD_TEACHER = io.Custom("FULL4D_FMD_TEACHER")


def render_path_inputs() -> list:
    """The camera path and times of a render (Full4DRender4DGS, and Full4DRenderTruth, which must render the truth
    from the same cameras at the same times: ``geometry.rig.render_jobs``)."""
    return [
        io.Combo.Input("mode", options=["orbit", "rig grid"], default="orbit",
                       tooltip="orbit: one video along a smooth path through the rig's cameras while time runs; rig "
                               "grid: every rig camera at num_frames moments (all frames of view 0 first)."),
        io.Int.Input("num_frames", default=60, min=1, max=1000,
                     tooltip="orbit: frames of the video; rig grid: frames per camera."),
        io.Float.Input("time_start", default=0.0, min=0.0, max=1.0, step=0.01,
                       tooltip="The first moment shown (0 = the first frame of the scene, 1 = the last)."),
        io.Float.Input("time_end", default=1.0, min=0.0, max=1.0, step=0.01,
                       tooltip="The last moment shown; the same as time_start freezes time while the camera moves "
                               "(bullet time)."),
    ]
