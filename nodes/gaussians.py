"""Full4D nodes: 4D Gaussian Splatting fit (SPEC 6, 8), render along a rig / orbit, save PLY + 4D file."""

from __future__ import annotations

import hashlib
import os

import torch
from comfy_api.latest import io, ui

from comfyui_full4d.gaussians.pipeline import INIT_AUTO, INIT_MODES
from comfyui_full4d.host.paths import client_paths, output_dir, temp_dir
from comfyui_full4d.host.splat import EXPORT_FORMATS, HAS_SPLAT, core_format_error, core_frame_bytes
from comfyui_full4d.host.progress import progress, progress_text

from .types import DA3_MODEL, GEOMETRY, RIG, SCENE4D

CATEGORY = "Full4D/4dgs"


class Full4DFit4DGS(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Full4DFit4DGS", display_name="Full4D Fit 4D Gaussians", category=CATEGORY,
            description="Fits canonical 3D Gaussians + a HexPlane deformation field to the multi-view video grid "
                        "(SPEC 6), initialised from the fused point clouds of all views. Shows the training-view "
                        "PSNR while it runs and outputs it. Checkpoints in the temp folder keyed by the inputs; an "
                        "interrupted fit resumes. init is optional, so prompts saved before it existed still run (auto).",
            inputs=[
                io.Image.Input("images", tooltip="Multi-view video grid, view-major: all T frames of view 0, then "
                                                 "view 1, ... (V*T images, V = rig views)."),
                RIG.Input("rig", tooltip="The camera rig the views were generated for (scene units)."),
                GEOMETRY.Input("geometry", optional=True,
                               tooltip="Source geometry: its scale makes the rig metric; the synthetic scene's also "
                                       "carries the ground-truth depth of every view for the initialisation."),
                io.Combo.Input("init", options=list(INIT_MODES), default=INIT_AUTO, optional=True,
                               tooltip="Initial Gaussians (SPEC 6): the fused point clouds of all views, from the "
                                       "ground-truth depth (synthetic) or DA3 run on the views (aligned to the rig); "
                                       "'source: depth of frame 0' and 'random' start the other views empty (poor "
                                       "fits). 'auto' takes the best the connected inputs allow."),
                io.Int.Input("iterations", default=3000, min=1, max=100000, tooltip="Optimisation steps."),
                io.Float.Input("lr_means", default=1.6e-4, min=0.0, max=1.0, step=1e-5,
                               tooltip="Learning rate of the Gaussian centres (times the scene extent; decays "
                                       "100x over the fit)."),
                io.Float.Input("lr_planes", default=0.05, min=0.0, max=1.0, step=1e-3,
                               tooltip="Learning rate of the HexPlane feature planes (decays 10x over the fit). "
                                       "0.05 learns motion within a few hundred iterations; much higher diverges."),
                io.Float.Input("lambda_dssim", default=0.2, min=0.0, max=1.0, step=0.05,
                               tooltip="Weight of (1 - SSIM) against L1 in the photometric loss."),
                io.Float.Input("lambda_tv", default=2e-4, min=0.0, max=1.0, step=1e-4,
                               tooltip="Weight of the total-variation regulariser on the planes."),
                io.Int.Input("max_gaussians", default=120_000, min=100, max=2_000_000,
                             tooltip="Densification never exceeds this count (SPEC 6: 120,000)."),
                io.Float.Input("prune_opacity", default=0.015, min=0.0, max=0.5, step=0.005,
                               tooltip="Above 2/3 of max_gaussians, prune Gaussians with opacity below this."),
                io.Int.Input("sh_degree", default=3, min=0, max=3, tooltip="Spherical-harmonics degree of colour."),
                io.Int.Input("checkpoint_every", default=500, min=1, max=100000,
                             tooltip="Write a resumable checkpoint every this many iterations."),
                io.Boolean.Input("resume", default=True,
                                 tooltip="Continue from the checkpoint of an interrupted fit of the same inputs."),
                io.Float.Input("render_time", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Time (0 = first frame, 1 = last) of the orbit preview render."),
                io.Int.Input("orbit_frames", default=60, min=1, max=480,
                             tooltip="Cameras of the App. B interpolated orbit in the preview render."),
                DA3_MODEL.Input("da3_model", optional=True,
                                tooltip="Depth Anything 3 (Full4DDA3Loader): run on the views to initialise from "
                                        "all of them (init 'views: DA3 depth', or 'auto' without ground truth)."),
                io.Float.Input("lambda_fmd", default=0.0, min=0.0, max=10.0, step=0.01, optional=True,
                               tooltip="Weight of Flow Matching Distillation (SPEC 8); needs the fmd_* inputs, "
                                       "the source video and its latent. 0 = off."),
                io.Model.Input("fmd_model", optional=True, tooltip="FMD teacher: the patched MODEL (Full4DAdapterLoader)."),
                io.Vae.Input("fmd_vae", optional=True,
                             tooltip="FMD encoder: the VAE of fmd_model (the Wan2.2 or the Wan2.1 VAE)."),
                io.Conditioning.Input("fmd_positive", optional=True, tooltip="FMD: the positive text conditioning."),
                io.Image.Input("fmd_source", optional=True, tooltip="FMD: the source video (T frames)."),
                io.Latent.Input("fmd_source_latent", optional=True, tooltip="FMD: the VAE latent of the source video."),
                io.Boolean.Input("recalibrate", default=True, optional=True,
                                 tooltip="When DA3 runs on the views (init 'views: DA3 depth'): re-calibrate each "
                                         "generated view's pose and focal from DA3's estimate aligned to the rig "
                                         "(SPEC 6) where it agrees with the rig (within 0.2 of the rig's size, 20 "
                                         "deg); views where it does not keep the rig. The node text lists what "
                                         "changed. No effect with other inits."),
                *([io.Splat.Input("init_splat", optional=True,
                                  tooltip="Core SPLAT (ComfyUI 0.33+, e.g. File3DToSplat or Full4DSceneToSplat) in the "
                                          "rig's metric frame: its centres and base colours are the initial points "
                                          "(first batch item), in place of 'init'.")] if HAS_SPLAT else []),
            ],
            outputs=[SCENE4D.Output(display_name="scene4d", tooltip="The fitted 4D Gaussian scene."),
                     io.Image.Output(display_name="orbit", tooltip="Render of the interpolated orbit at render_time."),
                     io.Float.Output(display_name="psnr", tooltip="Mean PSNR (dB) of the fit's renders against all "
                                                                  "V*T training images.")],
        )

    @classmethod
    def execute(cls, images, rig, iterations, lr_means, lr_planes, lambda_dssim, lambda_tv, max_gaussians,
                prune_opacity, sh_degree, checkpoint_every, resume, render_time, orbit_frames,
                geometry=None, init=INIT_AUTO, da3_model=None, lambda_fmd=0.0, fmd_model=None, fmd_vae=None,
                fmd_positive=None, fmd_source=None, fmd_source_latent=None, recalibrate=True,
                init_splat=None) -> io.NodeOutput:
        from comfyui_full4d.gaussians.memory import fit_bytes
        from comfyui_full4d.gaussians.pipeline import fit_from_grid, node_fit_config
        from comfyui_full4d.host.device import compute_device, load_teacher, make_room, output_device
        from comfyui_full4d.host.fmd import fmd_from_inputs

        device = compute_device()
        cloud = None
        if init_splat is not None:
            from comfyui_full4d.gaussians.pipeline import init_points_cap
            from comfyui_full4d.gaussians.splat import splat_cloud
            from comfyui_full4d.host.splat import item

            first = item(init_splat, 0)
            cloud = splat_cloud(first["positions"], first["sh"], init_points_cap(max_gaussians))
        fmd = fmd_from_inputs(lambda_fmd, fmd_model, fmd_vae, fmd_positive, fmd_source, fmd_source_latent, geometry,
                              rig, images, device)
        V = rig.num_views
        need = fit_bytes(V, max(1, images.shape[0] // V), images.shape[1], images.shape[2], max_gaussians, sh_degree,
                         fmd is not None)
        if fmd is None:  # the diffusion model of an earlier node need not stay in VRAM during the fit
            make_room(need, device)
        else:  # the teacher stays loaded, with room for the fit next to it
            load_teacher(fmd_model, need)

        key = hashlib.sha256()
        key.update(images[:, ::4, ::4].contiguous().float().cpu().numpy().tobytes())
        key.update(rig.cameras.R.numpy().tobytes() + rig.cameras.t.numpy().tobytes())
        key.update(repr((iterations, lr_means, lr_planes, lambda_dssim, lambda_tv, max_gaussians, prune_opacity,
                         sh_degree, geometry is not None, init, da3_model is not None,
                         lambda_fmd if fmd is not None else 0.0, bool(recalibrate))).encode())
        if cloud is not None:
            key.update(cloud[0].numpy().tobytes() + cloud[1].numpy().tobytes())
        folder = os.path.join(temp_dir(), "full4d_4dgs")
        os.makedirs(folder, exist_ok=True)
        with client_paths():
            cfg = node_fit_config(iterations=iterations, lr_means=lr_means, lr_planes=lr_planes,
                                  lambda_dssim=lambda_dssim, lambda_tv=lambda_tv, max_gaussians=max_gaussians,
                                  prune_opacity=prune_opacity, sh_degree=sh_degree, lambda_fmd=lambda_fmd)
            scene, orbit, report = fit_from_grid(
                images, rig, cfg, geometry, init=init, da3_model=da3_model, init_cloud=cloud, fmd=fmd,
                checkpoint_path=os.path.join(folder, key.hexdigest()[:24] + ".safetensors"),
                checkpoint_every=checkpoint_every, resume=resume, render_time=render_time, orbit_frames=orbit_frames,
                on_step=progress(iterations), on_text=progress_text, device=device,
                recalibrate=bool(recalibrate))
        out = output_device()
        return io.NodeOutput(scene.to(out), orbit.to(out), report.psnr, ui=ui.PreviewText(report.text()))


class Full4DRender4DGS(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Full4DRender4DGS", display_name="Full4D Render 4D Gaussians", category=CATEGORY,
            description="Renders a 4D Gaussian scene from a rig (view-major V*T grid) or along its App. B "
                        "interpolated orbit (one image per orbit camera, time sweeping time_start -> time_end).",
            inputs=[
                SCENE4D.Input("scene4d", tooltip="A fitted 4D scene (Full4DFit4DGS)."),
                RIG.Input("rig", tooltip="Cameras (scene units) to render from."),
                io.Combo.Input("mode", options=["orbit", "rig grid"], default="orbit",
                               tooltip="orbit: the interpolated trajectory through the rig, time sweeping along it; "
                                       "rig grid: every rig camera at num_frames times (view-major)."),
                io.Int.Input("num_frames", default=60, min=1, max=1000,
                             tooltip="orbit: cameras on the trajectory; rig grid: frames per view."),
                io.Float.Input("time_start", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Start time (0 = the first fitted frame, 1 = the last)."),
                io.Float.Input("time_end", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="End time (equal to time_start for a bullet-time orbit)."),
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
            description="Writes one standard 3DGS PLY (or spz / ksplat: format) per frame and the whole 4D scene as one .safetensors file "
                        "into a numbered folder of the output folder. The PLYs are metric and record the scene's "
                        "scale in a header comment, so Full4D Splat Preview places the rig's cameras right. The folder appears only when the export is "
                        "complete (files are staged in a hidden '.<name>_NNNNN.partial...' folder next to it); "
                        "cancel or an error removes the staged files, so no half-written export is left.",
            inputs=[
                SCENE4D.Input("scene4d", tooltip="A fitted 4D scene."),
                io.String.Input("filename_prefix", default="full4d/scene",
                                tooltip="Output sub-path and name; a numbered folder <prefix>_NNNNN is created "
                                        "for each save, and only once all its files are written."),
                io.Int.Input("num_frames", default=9, min=1, max=1000,
                             tooltip="Frames (one file each), evenly spaced over the fitted time range."),
                io.Combo.Input("format", options=list(EXPORT_FORMATS), default="ply", optional=True,
                               tooltip="File per frame: ply (3DGS PLY, full SH, any ComfyUI); spz (Niantic, ~10x "
                                       "smaller) or ksplat (mkkellogg), base colour only, written by core's splat "
                                       "writers (ComfyUI 0.33+)."),
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


NODES: list[type[io.ComfyNode]] = [Full4DFit4DGS, Full4DRender4DGS, Full4DSave4DGS]
