"""Flow Matching Distillation wired to the host's models (SPEC 8).

``host_fmd`` builds the ``FMDConfig`` the 4DGS fit takes (``comfyui_full4d.gaussians.fmd``).
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

from dataclasses import replace

import torch
from torch import Tensor

from ..diffusion.adapter import camera_features
from ..geometry.cameras import Camera, Rig
from ..gaussians.fmd import FMDConfig
from ..geometry.source import Geometry
from ..geometry.projection import project_rig
from .sampling import predict_x0


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
    to_model = model.model.process_latent_in  # VAE latent -> the model's normalised latent space
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


def fmd_from_inputs(lambda_fmd: float, model, vae, positive, source, source_latent, geometry, rig: Rig,
                    images: Tensor, device: torch.device | str | None = None) -> FMDConfig | None:
    """The Fit4DGS node's optional FMD inputs -> FMDConfig, or None when FMD is off (lambda 0).

    Raises ValueError naming the missing input when lambda_fmd > 0 but an input is not connected.
    """
    if not lambda_fmd > 0:
        return None
    needed = {"fmd_model": model, "fmd_vae": vae, "fmd_positive": positive, "fmd_source": source,
              "fmd_source_latent": source_latent, "geometry": geometry}
    missing = [k for k, v in needed.items() if v is None]
    if missing:
        raise ValueError(f"lambda_fmd = {lambda_fmd} needs these inputs connected: {', '.join(missing)} "
                         "(or set lambda_fmd to 0)")
    H, W = int(images.shape[1]), int(images.shape[2])
    cam0 = rig.cameras[0].resized(W, H) if (rig.cameras.width, rig.cameras.height) != (W, H) else rig.cameras[0]
    return host_fmd(model, vae, positive, source_latent["samples"], source, geometry, cam0, device)
