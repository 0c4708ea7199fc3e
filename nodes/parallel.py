"""Full4DParallel: sample a Full-4D MODEL on several devices of this machine or a Ray cluster (docs/distributed.md)."""

from comfy_api.latest import io

from comfyui_full4d.host.paths import full_path, list_files
from comfyui_full4d.host.pool import parse_devices, with_pool

UNETS = "diffusion_models"
DTYPES = ["default", "float32", "float16", "bfloat16"]
DESCRIPTION = ("Runs Full4D Multi-View Sampler on several GPUs (or CPU workers) of this machine or of a Ray cluster, "
               "each loading the same model and adapter files: the prompt and its negative on different devices, "
               "and the views of a scene spread over devices. The result is the same as on one device. With one "
               "device or none the model passes through unchanged.")


class Full4DParallel(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Full4DParallel", display_name="Full4D Parallel (multi-GPU)", category="Full4D/diffusion",
            description=DESCRIPTION,
            inputs=[
                io.Model.Input("model", tooltip="The model from Full4D Adapter Loader."),
                io.Combo.Input("unet_name", options=list_files(UNETS),
                               tooltip="The diffusion model file this MODEL was loaded from (the workers load it "
                                       "again)."),
                io.String.Input("devices", default="0,1",
                                tooltip="CUDA devices, e.g. 0,1,2,3; cpu:N for N CPU workers; none or one device "
                                        "= one process (today's path)."),
                io.String.Input("layout", default="auto",
                                tooltip="How to share the work, CxU: C=2 puts the prompt and its negative on "
                                        "different devices, U = devices per scene (must divide the model's 24 "
                                        "attention heads and be at most the views). auto: picks one."),
                io.Combo.Input("weight_dtype", options=DTYPES, default="default",
                               tooltip="Weight dtype the workers load the model in (as Load Diffusion Model)."),
                io.String.Input("ray_address", default="", optional=True,
                                tooltip="Empty: worker processes of this machine. local: a private Ray on this "
                                        "machine; host:6379 / ray://host:10001 / auto: the actors of that Ray "
                                        "cluster (devices gpu:N or cpu:N; needs pip install ray)."),
            ],
            outputs=[io.Model.Output(tooltip="The model; Full4D Multi-View Sampler then runs it on the workers.")],
        )

    @classmethod
    def validate_inputs(cls, devices, layout, ray_address="", **kw):
        try:
            parse_devices(devices, ray=bool((ray_address or "").strip()))
        except ValueError as e:
            return str(e)
        return True

    @classmethod
    def execute(cls, model, unet_name, devices, layout, weight_dtype, ray_address="") -> io.NodeOutput:
        dtype = None if weight_dtype == "default" else weight_dtype
        return io.NodeOutput(with_pool(model, full_path(UNETS, unet_name), devices, layout, dtype, ray_address or ""))


NODES: list[type[io.ComfyNode]] = [Full4DParallel]
