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
        io.Conditioning.Input("positive", tooltip="Text conditioning (umT5), shared by all views."),
        io.Conditioning.Input("negative", tooltip="Negative text conditioning for CFG."),
        io.Latent.Input("source", tooltip="VAE-encoded source video, one latent (1, C, T, h, w): C = 48 from the "
                                          "Wan2.2 VAE, 16 from the Wan2.1 VAE (the VAE of the model)."),
        io.Latent.Input("projections", tooltip="VAE-encoded projection renders of the V-1 target views, "
                                               "view-major batch (V-1, C, T, h, w), same VAE as the source."),
    ]


def _sampling_inputs() -> list:
    """Seed, steps, CFG, shift, host sampler and scheduler, shared by both multi-view samplers."""
    return [
        io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                     tooltip="Noise seed (noise is drawn for all views at once)."),
        io.Int.Input("steps", default=50, min=1, max=1000, tooltip="Sampling steps."),
        io.Float.Input("cfg", default=5.0, min=0.0, max=100.0, step=0.1, tooltip="Classifier-free guidance."),
        io.Float.Input("shift", default=5.0, min=0.01, max=100.0, step=0.01,
                       tooltip="Rectified-flow schedule shift: higher spends more steps at high noise "
                               "(Wan2.2-TI2V-5B uses 5; ComfyUI's default for Wan2.1 models is 8)."),
        io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="euler",
                       tooltip="Host sampler (the paper uses Euler)."),
        io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="simple",
                       tooltip="Host scheduler."),
    ]


class Full4DAdapterLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Full4DAdapterLoader", display_name="Full4D Adapter Loader", category="Full4D/diffusion",
            description="Attach the Full-4D adapter (camera encoders, fused time-view attention) to the MODEL of "
                        f"{MODELS}. Returns a patched copy; the input MODEL is unchanged.",
            inputs=[
                io.Model.Input("model", tooltip=f"The diffusion model of {MODELS} (Load Diffusion Model)."),
                io.Combo.Input("adapter", options=[NONE_ADAPTER] + list_files(FULL4D), default=NONE_ADAPTER,
                               tooltip="Adapter weights from models/full4d/. 'none (zero-init)' gives exactly the "
                                       "base model for every view (no cross-view attention effect)."),
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
            description="Generate the target views of the rig jointly: source view clean, each target view "
                        "conditioned on its projection latent and camera.",
            inputs=[
                io.Model.Input("model", tooltip="MODEL from Full4DAdapterLoader."),
                *_latent_inputs(),
                RIG.Input("rig", tooltip="The camera rig the projections were rendered into (view 0 = source)."),
                *_sampling_inputs(),
                io.Int.Input("views_per_pass", default=0, min=0, max=64,
                             tooltip="Target views sampled together with the source in one pass; 0 = all. "
                                     "Lower it when memory runs out: views in different passes do not attend "
                                     "to each other (less cross-view consistency)."),
                io.Boolean.Input("include_source", default=False,
                                 tooltip="Also return the source latent as the first view."),
                io.Combo.Input("ablation", options=list(ABLATIONS), default="full", optional=True,
                               tooltip="Paper Tab. 4 variants for evaluation: turn off the fused attention, the "
                                       "projection conditioning, or one rule of the attention mask. Keep 'full'."),
            ],
            outputs=[io.Latent.Output(tooltip="Target views, view-major batch (V-1 or V latents).")],
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
            description=f"Multi-view videos from the base model alone ({MODELS}, no adapter): each target view is "
                        "sampled by the base model as a video whose known pixels come from its projection render "
                        "(latent inpainting with a soft mask, RePaint style), released for the last steps so "
                        "the seams heal. Views are not coupled unless cross_view is on.",
            inputs=[
                io.Model.Input("model", tooltip=f"The diffusion model of {MODELS} straight from Load Diffusion "
                                                "Model (not through Full4DAdapterLoader)."),
                *_latent_inputs(),
                io.Mask.Input("masks", tooltip="Validity masks of the projection renders (Full4DProjectToCameras "
                                               "'masks', all V views, view 0 first), at the renders' size."),
                RIG.Input("rig", tooltip="The camera rig the projections were rendered into (view 0 = source)."),
                *_sampling_inputs(),
                io.Float.Input("stop", default=_TF.stop, min=0.0, max=1.0, step=0.01,
                               tooltip="Fraction of the steps during which the known (projected) region is replaced "
                                       "by the projection latent noised to the current level; the model finishes "
                                       "the rest freely so the seams heal. 1 = pinned to the end, 0 = no guidance."),
                io.Float.Input("start_sigma", default=_TF.start_sigma, min=0.01, max=1.0, step=0.01,
                               tooltip="1 = start from pure noise. Below 1: start from the projection latent noised "
                                       "to this level (SDEdit) and run only the steps below it."),
                io.Int.Input("views_per_pass", default=0, min=0, max=64,
                             tooltip="Target views sampled together in one pass; 0 = all. Lower it when memory "
                                     "runs out (without cross_view the views are independent anyway)."),
                io.Boolean.Input("include_source", default=False,
                                 tooltip="Also return the source latent as the first view."),
                io.Boolean.Input("cross_view", default=_TF.cross_view,
                                 tooltip="Experimental: each pass also holds the source view, and the base "
                                         "self-attention also sees the other views' tokens at the same frame. "
                                         "Untrained; may help or hurt consistency. More memory per pass."),
            ],
            outputs=[io.Latent.Output(tooltip="Target views, view-major batch (V-1 or V latents).")],
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
