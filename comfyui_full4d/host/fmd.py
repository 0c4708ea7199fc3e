"""Flow Matching Distillation wired to the host's models (SPEC 8).

``host_fmd`` builds the ``FMDConfig`` the 4DGS fit takes (``comfyui_full4d.gaussians.fmd``); ``fmd_teacher``
bundles its pieces for the FULL4D_FMD_TEACHER socket (``FMDTeacher``) and ``fmd_config`` turns that into the
config at fit time (``legacy_teacher``: the same from a prompt saved with the Fit node's old ``fmd_*`` inputs).
The whole FMD step (noise, teacher call, loss) runs in the model's normalised latent space, the
space rectified flow was trained in (``host.training.HostTrainModel.encode``, SPEC 5):
``z = process_latent_in(VAE(frames))`` with the host's latent format (Wan2.2 and Wan2.1: per-channel
``(z - mean) / std``). Noising the raw VAE latent instead would give the model noise it never saw
and weight the loss by ``std^2`` per channel.

* ``encode_fn(frames (T, H, W, 3))``: the host VAE's ``encode`` (differentiable; the fit leaves
  inference mode) followed by the model's ``process_latent_in``, giving ``z`` (1, C, T', h, w) in the
  model's space (``process_latent_in`` is affine, so gradients pass);
* ``velocity_fn(z_tau, tau, camera)``: the frozen multi-view model on a two-view scene (the
  source + this interpolated camera, conditioned on the source's projection render into the
  camera and on its camera numbers), through ``host.sampling.predict_x0(..., model_space=True)``:
  ``v = (z_tau - z0_hat) / tau``, so the fit's ``z0_hat = z_tau - tau v`` is the model's.

Cameras arrive metric (the fit's units); the adapter's camera numbers and the projection use
scene units (``t / scale``, SPEC 3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch
from torch import Tensor

from ..diffusion.adapter import camera_features
from ..geometry.cameras import Camera, Rig
from ..gaussians.fmd import FMDConfig
from ..geometry.source import Geometry
from ..geometry.projection import project_rig
from .sampling import predict_x0


def _autograd_weights(module: torch.nn.Module) -> None:
    """ComfyUI runs every node, its loaders too, under ``torch.inference_mode()``: a VAE loaded by a node has
    inference tensors as weights, which autograd cannot save, so the fit's gradient through ``vae.encode`` fails
    ("Inference tensors cannot be saved for backward") wherever the weights are not copied to another device first
    (the CPU). Replace each such parameter and buffer of ``module`` by a normal copy (same values, frozen); once,
    one tensor at a time."""
    with torch.inference_mode(False):
        for mod in module.modules():
            for name, p in list(mod._parameters.items()):
                if p is not None and p.is_inference():
                    mod._parameters[name] = torch.nn.Parameter(p.clone(), requires_grad=False)
            for name, b in list(mod._buffers.items()):
                if b is not None and b.is_inference():
                    mod._buffers[name] = b.clone()


def _per_channel_affine(fn: Callable[[Tensor], Tensor], channels: int) -> Callable[[Tensor], Tensor]:
    """``fn`` (the model's ``process_latent_in``: ``z -> a z + b`` per channel, as every video latent format of the
    host has it) as ``a z + b`` with ``a``, ``b`` (1, C, 1, 1, 1) read off ``fn(0)`` and ``fn(1)``: the host's latent
    format holds its means and scales as tensors made when a node loaded the model, under inference mode, which
    autograd cannot save for the gradient through the encoder (the same failure as ``_autograd_weights``')."""
    with torch.inference_mode(False), torch.no_grad():
        zero = torch.zeros(1, channels, 1, 1, 1)
        b = fn(zero).float().clone()
        a = fn(zero + 1).float().clone() - b

    def affine(z: Tensor) -> Tensor:
        return z * a.to(z) + b.to(z)

    return affine


def host_fmd(model, vae, positive: list, source_latent: Tensor, source: Tensor, geometry: Geometry,
             source_camera: Camera, device: torch.device | str | None = None, **kw) -> FMDConfig:
    """model: patched MODEL (Full4DAdapterLoader); vae: host VAE; positive: CONDITIONING;
    source_latent (1, C, T', h, w) VAE latent of ``source`` (T, H, W, 3) (as VAEEncode returns it); geometry: its depth;
    source_camera: the rig's view 0 in scene units (K at the fit's image size). ``device``: where the
    projection of the source into each FMD camera runs (the fit's; default the source's). ``kw`` go to FMDConfig.
    """
    if device is not None:
        source = source.to(device)
    if source_latent.dim() != 5 or source_latent.shape[0] != 1:
        raise ValueError(f"source_latent: expected one video latent (1, C, T, h, w), got {tuple(source_latent.shape)}")
    scale = float(geometry.scale)
    _autograd_weights(vae.first_stage_model)
    # VAE latent -> the model's normalised latent space
    to_model = _per_channel_affine(model.model.process_latent_in, int(source_latent.shape[1]))
    source_z = to_model(source_latent.float())

    def encode_fn(frames: Tensor) -> Tensor:
        return to_model(vae.encode(frames))

    @torch.no_grad()
    def velocity_fn(z_tau: Tensor, tau: float, camera: Camera) -> Tensor:
        cam = replace(camera, t=camera.t / scale).to(source_camera.K.device)  # metric -> scene units, beside view 0
        pair = Camera(K=torch.stack([source_camera.K, cam.K]).float(), R=torch.stack([source_camera.R, cam.R]).float(),
                      t=torch.stack([source_camera.t, cam.t]).float(), width=cam.width, height=cam.height)
        renders, _ = project_rig(source, geometry, Rig(cameras=pair), size=(cam.height, cam.width))
        proj = to_model(vae.encode(renders[1]))  # (1, C, T', h, w)
        cams = camera_features(pair.R, pair.t)
        z0_hat = predict_x0(model, positive, source_z, proj, cams, z_tau.detach(), float(tau), model_space=True)
        return (z_tau - z0_hat.to(z_tau)) / max(float(tau), 1e-6)

    return FMDConfig(encode_fn=encode_fn, velocity_fn=velocity_fn, **kw)


@dataclass(frozen=True)
class FMDTeacher:
    """What the FULL4D_FMD_TEACHER socket carries (Full4DFMDTeacher): the frozen multi-view model (patched MODEL),
    its VAE, the positive CONDITIONING, the source video (T, H, W, 3) and its VAE latent (1, C, T', h, w) (any
    video VAE: Wan2.2's 48 channels, a Wan2.1-class 16), and the FMD loss weight ``lambda_fmd`` (0 = off)."""

    model: Any
    vae: Any
    positive: list
    source: Tensor
    source_latent: Tensor
    weight: float


def fmd_teacher(model, vae, positive: list, source: Tensor, weight: float) -> FMDTeacher:
    """Full4DFMDTeacher: the teacher with the source encoded by ``vae`` as core VAE Encode does (its first three
    channels). ValueError naming the input when the source is not a video or the VAE does not give one video
    latent."""
    if not (math.isfinite(float(weight)) and weight >= 0):
        raise ValueError(f"weight must be a finite number >= 0, got {weight}")
    if source.dim() != 4 or source.shape[-1] < 3:
        raise ValueError(f"source: expected video frames (T, H, W, 3), got {tuple(source.shape)}")
    latent = vae.encode(source[..., :3])
    if latent.dim() != 5 or latent.shape[0] != 1:
        raise ValueError(f"vae: the source video encodes to {tuple(latent.shape)}, not one video latent "
                         "(1, C, T, h, w); connect the video VAE of the model (Wan2.2 or Wan2.1 class)")
    return FMDTeacher(model, vae, positive, source, latent, float(weight))


# The Fit node's FMD inputs before Full4DFMDTeacher existed (saved prompts still carry them).
LEGACY_FMD_INPUTS = ("lambda_fmd", "fmd_model", "fmd_vae", "fmd_positive", "fmd_source", "fmd_source_latent")


def legacy_teacher(lambda_fmd: float = 0.0, fmd_model=None, fmd_vae=None, fmd_positive=None, fmd_source=None,
                   fmd_source_latent=None) -> FMDTeacher | None:
    """The teacher a prompt saved with the Fit node's old FMD inputs describes (``LEGACY_FMD_INPUTS``; the latent
    as core VAE Encode gives it), or None when FMD is off (``lambda_fmd`` 0). ValueError naming the inputs that
    are missing when ``lambda_fmd`` > 0."""
    if not float(lambda_fmd) > 0:
        return None
    given = {"fmd_model": fmd_model, "fmd_vae": fmd_vae, "fmd_positive": fmd_positive, "fmd_source": fmd_source,
             "fmd_source_latent": fmd_source_latent}
    missing = [k for k, v in given.items() if v is None]
    if missing:
        raise ValueError(f"lambda_fmd = {lambda_fmd} needs these inputs connected: {', '.join(missing)} "
                         "(or set lambda_fmd to 0; new graphs connect a Full4D FMD Teacher node instead)")
    return FMDTeacher(fmd_model, fmd_vae, fmd_positive, fmd_source, fmd_source_latent["samples"], float(lambda_fmd))


def fmd_config(teacher: FMDTeacher | None, geometry, rig: Rig, images: Tensor,
               device: torch.device | str | None = None) -> FMDConfig | None:
    """The fit's FMDConfig from a teacher, or None when there is none or its weight is 0. The teacher projects
    the source into each orbit camera with its depth, so the fit needs ``geometry``: ValueError without it.
    images (V*T, H, W, 3): the fit's grid (the FMD cameras take its size)."""
    if teacher is None or not teacher.weight > 0:
        return None
    if geometry is None:
        raise ValueError("fmd_teacher needs the geometry input connected too (the source's depth, e.g. from "
                         "Full4D DA3 Depth): the teacher sees the source projected into each camera")
    H, W = int(images.shape[1]), int(images.shape[2])
    cam0 = rig.cameras[0].resized(W, H) if (rig.cameras.width, rig.cameras.height) != (W, H) else rig.cameras[0]
    return host_fmd(teacher.model, teacher.vae, teacher.positive, teacher.source_latent, teacher.source, geometry,
                    cam0, device)
