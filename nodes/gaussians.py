"""Full4D nodes: 4D Gaussian Splatting fit (SPEC 6, 8) with its options and FMD teacher, render along a rig /
orbit, save PLY + 4D file."""

from __future__ import annotations

from comfy_api.latest import io, ui

from comfyui_full4d.gaussians.pipeline import INIT_AUTO, INIT_MODES, FitOptions
from comfyui_full4d.host.fitting import fit_rig, legacy_inputs, saved_inputs
from comfyui_full4d.host.fmd import fmd_teacher
from comfyui_full4d.host.paths import client_paths, output_dir
from comfyui_full4d.host.splat import EXPORT_FORMATS, HAS_SPLAT, core_format_error, core_frame_bytes
from comfyui_full4d.host.progress import progress

from .types import DA3_MODEL, FIT_OPTIONS, FMD_TEACHER, GEOMETRY, RIG, SCENE4D, render_path_inputs

CATEGORY = "Full4D/4dgs"
_OPT = FitOptions()


class Full4DFit4DGS(io.ComfyNode):
    """Prompts saved before the options and the FMD teacher had their own nodes name them as this node's inputs
    (lr_means, ..., lambda_fmd, fmd_model, ...): their links arrive as extra keyword arguments and their values
    are read from the prompt (``host.fitting.legacy_inputs``)."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Full4DFit4DGS", display_name="Full4D Fit 4D Gaussians", category=CATEGORY,
            description="Turns the multi-view video into a 4D scene of moving Gaussians (small soft coloured "
                        "blobs) that can be seen from any angle at any time. It starts from the 3D points of all "
                        "views, shows how closely it matches the views while it runs (training PSNR: higher is "
                        "sharper, about 30 dB is good) and picks up where it stopped if it was interrupted.",
            inputs=[
                io.Image.Input("images", tooltip="The multi-view video: all frames of view 0, then all frames of "
                                                 "view 1, and so on (VAE Decode after the multi-view sampler)."),
                RIG.Input("rig", tooltip="The cameras the views were made for."),
                io.Int.Input("iterations", default=3000, min=1, max=100000,
                             tooltip="Training steps. More give a sharper scene and take longer: 1000 for a quick "
                                     "look, 3000 for a good result."),
                io.Int.Input("max_gaussians", default=120_000, min=100, max=2_000_000,
                             tooltip="The most Gaussians the scene may grow to. More hold finer detail but need "
                                     "more memory and time (120,000 suits 672x384 views)."),
                io.Int.Input("orbit_frames", default=60, min=1, max=480,
                             tooltip="Frames of the orbit video this node outputs: a smooth camera path through "
                                     "the rig's cameras."),
                io.Float.Input("render_time", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="The moment the orbit video shows: 0 = the first frame, 1 = the last."),
                io.Boolean.Input("resume", default=True,
                                 tooltip="Continue an interrupted fit of the same inputs from its last checkpoint "
                                         "instead of starting over."),
                io.Combo.Input("init", options=list(INIT_MODES), default=INIT_AUTO, optional=True,
                               tooltip="Where the Gaussians start. auto takes the best the connected inputs allow: "
                                       "the depth of every view (ground truth, or Depth Anything 3 run on the "
                                       "views). 'source' and 'random' leave most of the scene empty at the start "
                                       "and give poor results."),
                GEOMETRY.Input("geometry", optional=True,
                               tooltip="Depth of the source video: gives the scene its real size (the synthetic "
                                       "scene's also holds the depth of every view to start from)."),
                DA3_MODEL.Input("da3_model", optional=True,
                                tooltip="Depth Anything 3 (Full4D Depth Anything 3 Loader): estimates the depth of "
                                        "every view so the fit starts from all of them."),
                FMD_TEACHER.Input("fmd_teacher", optional=True,
                                  tooltip="Optional (Full4D FMD Teacher): the diffusion model teaches the fit what "
                                          "views between the rig cameras look like. Much slower."),
                FIT_OPTIONS.Input("options", optional=True,
                                  tooltip="Optional finer settings (Full4D Fit Options): learning rates, loss "
                                          "weights, colour detail, checkpoints. Empty = the defaults."),
                *([io.Splat.Input("init_splat", optional=True,
                                  tooltip="A core SPLAT to start from instead of init: its points and colours (the "
                                          "first of a batch), placed in the rig's real-size frame.")]
                  if HAS_SPLAT else []),
            ],
            outputs=[SCENE4D.Output(display_name="scene4d", tooltip="The fitted 4D scene: render, save or preview it."),
                     io.Image.Output(display_name="orbit", tooltip="The orbit video's frames at render_time."),
                     io.Float.Output(display_name="psnr", tooltip="How closely the fit reproduces the input views, "
                                                                  "in dB (higher is better; about 30 is sharp).")],
            hidden=[io.Hidden.unique_id, io.Hidden.dynprompt],
        )

    @classmethod
    def execute(cls, images, rig, iterations, max_gaussians, orbit_frames, render_time, resume, init=INIT_AUTO,
                geometry=None, da3_model=None, fmd_teacher=None, options=None, init_splat=None,
                **old_links) -> io.NodeOutput:
        options, teacher = legacy_inputs(options, fmd_teacher, saved_inputs(cls.hidden), old_links)
        scene, orbit, report = fit_rig(images, rig, iterations=iterations, max_gaussians=max_gaussians, resume=resume,
                                       render_time=render_time, orbit_frames=orbit_frames, init=init,
                                       geometry=geometry, da3_model=da3_model, teacher=teacher, options=options,
                                       init_splat=init_splat)
        return io.NodeOutput(scene, orbit, report.psnr, ui=ui.PreviewText(report.text()))


class Full4DFitOptions(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Full4DFitOptions", display_name="Full4D Fit Options", category=CATEGORY,
            description="Finer settings of Full4D Fit 4D Gaussians, for experiments: connect to its options input. "
                        "Its defaults are what the fit uses without this node.",
            inputs=[
                io.Float.Input("lr_means", default=_OPT.lr_means, min=0.0, max=1.0, step=1e-5,
                               tooltip="How fast the Gaussians move while fitting (slows to 1/100 by the end). Too "
                                       "high smears detail; too low leaves blobs where they started."),
                io.Float.Input("lr_planes", default=_OPT.lr_planes, min=0.0, max=1.0, step=1e-3,
                               tooltip="How fast the fit learns motion. Higher learns it sooner; well above 0.05 the "
                                       "fit can blow up."),
                io.Float.Input("lambda_dssim", default=_OPT.lambda_dssim, min=0.0, max=1.0, step=0.05,
                               tooltip="How much the fit cares about texture and edges against plain colour error "
                                       "(0 = colour only)."),
                io.Float.Input("lambda_tv", default=_OPT.lambda_tv, min=0.0, max=1.0, step=1e-4,
                               tooltip="Smoothness of the motion: higher makes nearby parts move together (less "
                                       "wobble, less fine motion)."),
                io.Float.Input("prune_opacity", default=_OPT.prune_opacity, min=0.0, max=0.5, step=0.005,
                               tooltip="When the scene nears its Gaussian budget, faint Gaussians below this opacity "
                                       "are removed to make room."),
                io.Int.Input("sh_degree", default=_OPT.sh_degree, min=0, max=3,
                             tooltip="Colour that changes with the viewing angle (highlights, sheen): 0 = one colour "
                                     "per Gaussian, 3 = the most, and the most memory."),
                io.Int.Input("checkpoint_every", default=_OPT.checkpoint_every, min=1, max=100000,
                             tooltip="Save a checkpoint every this many steps; an interrupted fit continues from "
                                     "the last one."),
                io.Boolean.Input("recalibrate", default=_OPT.recalibrate,
                                 tooltip="When Depth Anything 3 runs on the views: move each view's camera to where "
                                         "DA3 sees it, where that is close to the rig. The node text lists what "
                                         "changed. No effect otherwise."),
            ],
            outputs=[FIT_OPTIONS.Output(display_name="options", tooltip="Connect to the fit's options input.")],
        )

    @classmethod
    def execute(cls, lr_means, lr_planes, lambda_dssim, lambda_tv, prune_opacity, sh_degree, checkpoint_every,
                recalibrate) -> io.NodeOutput:
        return io.NodeOutput(FitOptions(lr_means=lr_means, lr_planes=lr_planes, lambda_dssim=lambda_dssim,
                                        lambda_tv=lambda_tv, prune_opacity=prune_opacity, sh_degree=sh_degree,
                                        checkpoint_every=checkpoint_every, recalibrate=recalibrate))


class Full4DFMDTeacher(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Full4DFMDTeacher", display_name="Full4D FMD Teacher", category=CATEGORY,
            description="Lets the multi-view diffusion model teach the 4D fit what the views between the rig cameras "
                        "should look like (flow matching distillation). Connect it to Full4D Fit 4D Gaussians' "
                        "fmd_teacher input (with geometry connected there too). Every fit step then also runs the "
                        "model once, so the fit takes much longer.",
            inputs=[
                io.Model.Input("model", tooltip="The model that made the views (the MODEL of Full4D Adapter Loader)."),
                io.Vae.Input("vae", tooltip="That model's VAE (Load VAE); the source video is encoded with it."),
                io.Conditioning.Input("positive", tooltip="The text prompt the views were made with."),
                io.Image.Input("source", tooltip="The source video the views were made from."),
                io.Float.Input("weight", default=0.1, min=0.0, max=10.0, step=0.01,
                               tooltip="How strongly the teacher pulls the scene: 0 = off. Higher makes the views "
                                       "between the cameras more plausible but can cost sharpness on the input "
                                       "views."),
            ],
            outputs=[FMD_TEACHER.Output(display_name="teacher", tooltip="Connect to the fit's fmd_teacher input.")],
        )

    @classmethod
    def execute(cls, model, vae, positive, source, weight) -> io.NodeOutput:
        return io.NodeOutput(fmd_teacher(model, vae, positive, source, weight))


class Full4DRender4DGS(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Full4DRender4DGS", display_name="Full4D Render 4D Gaussians", category=CATEGORY,
            description="Renders a 4D scene as video: along a smooth closed camera path through the rig's cameras "
                        "while time runs from time_start to time_end, or from every rig camera (all frames of view "
                        "0, then view 1, ...).",
            inputs=[
                SCENE4D.Input("scene4d", tooltip="A fitted 4D scene (Full4D Fit 4D Gaussians)."),
                RIG.Input("rig", tooltip="The cameras to render from (or to lay the orbit through)."),
                *render_path_inputs(),
            ],
            outputs=[io.Image.Output(display_name="images", tooltip="Rendered frames.")],
        )

    @classmethod
    def execute(cls, scene4d, rig, mode, num_frames, time_start, time_end) -> io.NodeOutput:
        from comfyui_full4d.gaussians.pipeline import render_rig
        from comfyui_full4d.host.device import compute_device, output_device

        frames = render_rig(scene4d.to(compute_device()), rig, mode == "orbit", num_frames, time_start, time_end,
                            on_step=progress(num_frames))
        return io.NodeOutput(frames.to(output_device()))


class Full4DSave4DGS(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Full4DSave4DGS", display_name="Full4D Save 4D Gaussians", category=CATEGORY,
            description="Saves the 4D scene: one Gaussian splat file per frame (PLY, or spz / ksplat) that 3D "
                        "splat viewers open, and the whole scene as one .safetensors file, in a new numbered folder "
                        "of the output folder. The folder appears only once every file is written; a cancelled or "
                        "failed save leaves nothing behind. The files are real-size and record "
                        "their scale, so Full4D Splat Preview puts the cameras where they belong.",
            inputs=[
                SCENE4D.Input("scene4d", tooltip="A fitted 4D scene."),
                io.String.Input("filename_prefix", default="full4d/scene",
                                tooltip="Where to save, inside the output folder: each save makes a new folder "
                                        "<prefix>_00001, _00002, ..."),
                io.Int.Input("num_frames", default=9, min=1, max=1000,
                             tooltip="How many moments to save (one file each), evenly spread over the scene's "
                                     "time."),
                io.Combo.Input("format", options=list(EXPORT_FORMATS), default="ply", optional=True,
                               tooltip="File type per frame: ply (standard, full colour detail, any ComfyUI); spz "
                                       "(about 10x smaller) or ksplat, base colour only (ComfyUI 0.33 and later)."),
            ],
            outputs=[], is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, format="ply"):
        return core_format_error(format) or True

    @classmethod
    def execute(cls, scene4d, filename_prefix, num_frames, format="ply") -> io.NodeOutput:
        from comfyui_full4d.gaussians.export import export_scene

        frame_bytes = None if format == "ply" else core_frame_bytes(format)
        with client_paths():
            files = export_scene(scene4d, output_dir(), filename_prefix, num_frames, ext=format,
                                 frame_bytes=frame_bytes, on_step=progress(num_frames + 1))
        return io.NodeOutput(ui=ui.PreviewText("\n".join(files)))


NODES: list[type[io.ComfyNode]] = [Full4DFit4DGS, Full4DFitOptions, Full4DFMDTeacher, Full4DRender4DGS,
                                   Full4DSave4DGS]
