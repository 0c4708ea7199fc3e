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
