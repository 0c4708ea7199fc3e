"""Full4DParallel: sample a Full-4D MODEL on several devices of this machine or a Ray cluster (docs/distributed.md)."""

from comfy_api.latest import io

from comfyui_full4d.host.paths import full_path, list_files
from comfyui_full4d.host.pool import parse_devices, with_pool

UNETS = "diffusion_models"
DTYPES = ["default", "float32", "float16", "bfloat16"]
DESCRIPTION = ("Full4DSampler then runs in worker processes, one per device, each loading the same model and adapter "
               "files: cond / uncond on different devices (CFG split), the views of a scene spread over devices "
               "(Ulysses); same result as one device. One device or none: the model passes through unchanged.")


class Full4DParallel(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Full4DParallel", display_name="Full4D Parallel (multi-GPU)", category="Full4D/diffusion",
            description=DESCRIPTION,
            inputs=[
                io.Model.Input("model", tooltip="MODEL from Full4DAdapterLoader."),
                io.Combo.Input("unet_name", options=list_files(UNETS),
                               tooltip="The diffusion model file this MODEL was loaded from (the workers load it "
                                       "again)."),
                io.String.Input("devices", default="0,1",
                                tooltip="CUDA devices, e.g. 0,1,2,3; cpu:N for N CPU workers; none or one device "
                                        "= one process (today's path)."),
                io.String.Input("layout", default="auto",
                                tooltip="CxU: C=2 splits cond / uncond, U = devices per scene (must divide the "
                                        "24 heads and be at most the views). auto: CFG split when even."),
                io.Combo.Input("weight_dtype", options=DTYPES, default="default",
                               tooltip="Weight dtype the workers load the model in (as Load Diffusion Model)."),
                io.String.Input("ray_address", default="", optional=True,
                                tooltip="Empty: worker processes of this machine. local: a private Ray on this "
                                        "machine; host:6379 / ray://host:10001 / auto: the actors of that Ray "
                                        "cluster (devices gpu:N or cpu:N; needs pip install ray)."),
            ],
            outputs=[io.Model.Output(tooltip="The model, sampled by the workers in Full4DSampler.")],
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
