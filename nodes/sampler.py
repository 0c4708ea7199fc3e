"""Full4D nodes: adapter loader, the multi-view sampler (SPEC 4, 5) and the training-free sampler
(base model only, docs/training-free.md). Base models: Wan2.2-TI2V-5B or a Wan2.1-class model (``patch.MODELS``)."""

import comfy.samplers
from comfy_api.latest import io

from comfyui_full4d.host.paths import FULL4D, list_files
from comfyui_full4d.host.patch import MODELS, NONE_ADAPTER, load_full4d
from comfyui_full4d.host.progress import progress
from comfyui_full4d.host.sampling import sample_rig
from comfyui_full4d.host.training_free import sample_rig_training_free
from comfyui_full4d.diffusion.ablation import Ablation
from comfyui_full4d.diffusion.training_free import TrainingFreeConfig

from .types import RIG

ABLATIONS = Ablation.NAMES


def _latent_inputs() -> list:
    """Conditioning and latents, shared by both multi-view samplers (in this order)."""
    return [
        io.Conditioning.Input("positive", tooltip="The text prompt: what every view should show."),
        io.Conditioning.Input("negative", tooltip="What the views should not show."),
        io.Latent.Input("source", tooltip="The source video encoded by VAE Encode."),
        io.Latent.Input("projections", tooltip="The source projected into each target camera, encoded one view at "
                                               "a time (Full4D VAE Encode Views)."),
    ]


def _sampling_inputs() -> list:
    """Seed, steps, CFG, shift, host sampler and scheduler, shared by both multi-view samplers."""
    return [
        io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                     tooltip="Random seed: another seed gives other views of the same scene."),
        io.Int.Input("steps", default=50, min=1, max=1000,
                     tooltip="Denoising steps: more are slower and usually cleaner."),
        io.Float.Input("cfg", default=5.0, min=0.0, max=100.0, step=0.1,
                       tooltip="How closely the views follow the text prompt; too high burns colours."),
        io.Float.Input("shift", default=5.0, min=0.01, max=100.0, step=0.01,
                       tooltip="Noise schedule shift: higher spends more steps on the overall layout "
                               "(Wan2.2-TI2V-5B uses 5, Wan2.1-class models 8)."),
        io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="euler",
                       tooltip="Sampling method (as in KSampler; euler works well)."),
        io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="simple",
                       tooltip="How the noise level falls over the steps (as in KSampler)."),
    ]


class Full4DAdapterLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Full4DAdapterLoader", display_name="Full4D Adapter Loader", category="Full4D/diffusion",
            description="Turns the video model (Wan2.2-TI2V-5B or a Wan2.1-class model) into a multi-view "
                        "model: adds the Full-4D adapter that lets the views see each other and their cameras. The "
                        "model you connect stays as it is; a changed copy comes out.",
            inputs=[
                io.Model.Input("model", tooltip=f"The diffusion model of {MODELS} (Load Diffusion Model)."),
                io.Combo.Input("adapter", options=[NONE_ADAPTER] + list_files(FULL4D), default=NONE_ADAPTER,
                               tooltip="Adapter file from models/full4d/. 'none (zero-init)' leaves the base model "
                                       "unchanged: each view is made on its own, so the views may disagree."),
            ],
            outputs=[io.Model.Output(tooltip="The model with the adapter attached.")],
        )

    @classmethod
    def execute(cls, model, adapter) -> io.NodeOutput:
        return io.NodeOutput(load_full4d(model, adapter))


class Full4DSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Full4DSampler", display_name="Full4D Multi-View Sampler", category="Full4D/diffusion",
            description="Makes a video for every camera of the rig at once, each guided by the source projected "
                        "into it and by its camera, while the source video itself stays as it is.",
            inputs=[
                io.Model.Input("model", tooltip="The model from Full4D Adapter Loader."),
                *_latent_inputs(),
                RIG.Input("rig", tooltip="The cameras the projections were made for (view 0 = the source)."),
                *_sampling_inputs(),
                io.Int.Input("views_per_pass", default=0, min=0, max=64,
                             tooltip="Views made together in one pass; 0 = all. Lower it when memory runs out: "
                                     "views made in different passes cannot see each other and agree less."),
                io.Boolean.Input("include_source", default=False,
                                 tooltip="Also output the source video as the first view."),
                io.Combo.Input("ablation", options=list(ABLATIONS), default="full", optional=True,
                               tooltip="For research comparisons only: switch off one part of the model (the views "
                                       "seeing each other, the projection guidance, or one rule of which views "
                                       "see which). Keep 'full'."),
            ],
            outputs=[io.Latent.Output(tooltip="One latent video per view, in camera order (VAE Decode them).")],
        )

    @classmethod
    def execute(cls, model, positive, negative, source, projections, rig, seed, steps, cfg, shift, sampler_name,
                scheduler, views_per_pass, include_source, ablation="full") -> io.NodeOutput:
        return io.NodeOutput(sample_rig(model, positive, negative, source, projections, rig, ablation=ablation,
                                        seed=seed, steps=steps,
                                        cfg=cfg, shift=shift, sampler_name=sampler_name, scheduler=scheduler,
                                        views_per_pass=views_per_pass, include_source=include_source,
                                        on_step=progress(steps)))


_TF = TrainingFreeConfig()


class Full4DTrainingFreeSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Full4DTrainingFreeSampler", display_name="Full4D Training-Free Multi-View Sampler",
            category="Full4D/diffusion",
            description="Multi-view videos from the public Wan2.2-TI2V-5B (or a Wan2.1-class model) alone (no "
                        "adapter): the model fills in each view around what the source shows from that camera (its "
                        "projection), then is left free for the last steps so the seams heal. The views are made independently, so what "
                        "no camera of the source saw can differ between views.",
            inputs=[
                io.Model.Input("model", tooltip="The video model straight from Load Diffusion Model "
                                                "(not through Full4D Adapter Loader)."),
                *_latent_inputs(),
                io.Mask.Input("masks", tooltip="Where each projection has pixels (the masks of Full4D Project To "
                                               "Cameras)."),
                RIG.Input("rig", tooltip="The cameras the projections were made for (view 0 = the source)."),
                *_sampling_inputs(),
                io.Float.Input("stop", default=_TF.stop, min=0.0, max=1.0, step=0.01,
                               tooltip="Share of the steps during which the projected pixels are kept; the model "
                                       "finishes the rest freely so the seams heal. 1 = kept to the end, 0 = no "
                                       "guidance."),
                io.Float.Input("start_sigma", default=_TF.start_sigma, min=0.01, max=1.0, step=0.01,
                               tooltip="1 = start from pure noise. Below 1: start from the noised projection, "
                                       "keeping more of it the lower the value (fewer steps run)."),
                io.Int.Input("views_per_pass", default=0, min=0, max=64,
                             tooltip="Views made together in one pass; 0 = all. Lower it when memory runs out "
                                     "(without cross_view the views are independent anyway)."),
                io.Boolean.Input("include_source", default=False,
                                 tooltip="Also output the source video as the first view."),
                io.Boolean.Input("cross_view", default=_TF.cross_view,
                                 tooltip="Experimental: let each view look at the other views (and the source) at "
                                         "the same moment while it is made. Untrained: may help or hurt agreement "
                                         "between views. Needs more memory."),
            ],
            outputs=[io.Latent.Output(tooltip="One latent video per view, in camera order (VAE Decode them).")],
        )

    @classmethod
    def execute(cls, model, positive, negative, source, projections, masks, rig, seed, steps, cfg, shift,
                sampler_name, scheduler, stop, start_sigma, views_per_pass, include_source,
                cross_view) -> io.NodeOutput:
        config = TrainingFreeConfig(stop=stop, start_sigma=start_sigma, cross_view=cross_view)
        return io.NodeOutput(sample_rig_training_free(
            model, positive, negative, source, projections, masks, rig, seed=seed, steps=steps, cfg=cfg, shift=shift,
            sampler_name=sampler_name, scheduler=scheduler, config=config, views_per_pass=views_per_pass,
            include_source=include_source, on_step=progress(steps)))


NODES: list[type[io.ComfyNode]] = [Full4DAdapterLoader, Full4DSampler, Full4DTrainingFreeSampler]
