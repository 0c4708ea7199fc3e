"""Core ComfyUI's Depth Anything 3 (0.33+: ``DA3_MODEL``, ``DA3_GEOMETRY``) as our source Geometry (SPEC 3).

Plain torch: what core's DA3 gives, read from its source (``comfy/ldm/depth_anything_3/model.py``,
``transform.py``, ``comfy_extras/nodes_depth_anything_3.py``), and the conversion to our conventions
(``geometry.cameras``: OpenCV, world-to-camera, K in pixels with pixel centres at ``+0.5``):

* core's network ``DepthAnything3Net(image (B, S, 3, h, w))`` returns ``depth`` and ``depth_conf`` with the views
  flattened, ``(B*S, h, w)``, and ``extrinsics`` (B, S, 3, 4) world-to-camera / ``intrinsics`` (B, S, 3, 3) at the
  working size (h, w) with the principal point ``(w/2, h/2)``, **only for S > 1** (the camera decoder is skipped for
  one view). ``CoreDA3Net`` gives it the depth_anything_3 package's layout (``depth (B, S, h, w)``, cameras always:
  a single view is run as two copies of itself), so ``depth.estimate_depth`` drives it unchanged.
* a ``DA3_GEOMETRY`` packet (``Run Depth Anything 3``, multiview mode) holds ``depth`` (S, H, W) already resized to
  the image size (bilinear), ``confidence`` (S, H, W), ``extrinsics`` (1, S, 3, 4) world-to-camera in DA3's world
  (its reference view, not necessarily frame 0), and ``intrinsics`` (1, S, 3, 3) **at the working size**
  ``(h, w) = depth.da3_input_size(H, W, resolution, resize_method)``, not at (H, W): ``K_HW = diag(W/w, H/h, 1) K_hw``
  (exact for a per-axis resize in the pixel-centre convention). Mono mode has no cameras; a one-view multiview
  run gets identity placeholders. Both are refused (``geometry_from_da3``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .depth import RESIZE_METHODS, _homogeneous, da3_input_size, source_geometry
from .source import Geometry

__all__ = ["CoreDA3Net", "geometry_from_da3", "RESIZE_METHODS"]


class CoreDA3Net(torch.nn.Module):
    """Core's ``DepthAnything3Net`` with the depth_anything_3 package's call and output layout (module doc)."""

    def __init__(self, net: torch.nn.Module, input_device: torch.device | None = None,
                 input_dtype: torch.dtype | None = None):
        super().__init__()
        self.net = net
        p = next(net.parameters())
        self.input_device = torch.device(input_device) if input_device is not None else p.device
        self.input_dtype = input_dtype or p.dtype

    def forward(self, x: Tensor, ref_view_strategy: str = "first") -> dict:
        """x (B, S, 3, h, w) normalised -> depth / depth_conf (B, S, h, w), extrinsics (B, S, 3, 4) w2c,
        intrinsics (B, S, 3, 3) at (h, w)."""
        B, S = x.shape[:2]
        xx = x.expand(B, 2, *x.shape[2:]) if S == 1 else x  # core decodes cameras only for S > 1
        out = self.net(xx, ref_view_strategy=ref_view_strategy)
        if "extrinsics" not in out or "intrinsics" not in out:
            raise ValueError("da3_model: this Depth Anything 3 model estimates no cameras (a Mono / Metric variant "
                             "without a camera decoder); load DA3-Small or DA3-Base")
        n = xx.shape[1]
        res = {k: out[k].reshape(B, n, *out[k].shape[1:])[:, :S] for k in ("depth", "depth_conf") if k in out}
        if "depth_conf" not in res:
            res["depth_conf"] = torch.full_like(res["depth"], 2.0)  # (confidence > 1 in DA3's parametrisation)
        res["extrinsics"], res["intrinsics"] = out["extrinsics"][:, :S], out["intrinsics"][:, :S]
        return res


def geometry_from_da3(packet: dict, resolution: int, resize_method: str = "upper_bound_resize",
                      static_camera: bool = True) -> Geometry:
    """Our Geometry from a core ``DA3_GEOMETRY`` packet of a video (views = frames, multiview mode).

    resolution / resize_method: the values ``Run Depth Anything 3`` ran with (they fix the working size the
    packet's intrinsics are at, module doc). Returns depth / conf (T, H, W) as given (invalid depth -> NaN, conf
    0), K (3, 3) = per-frame median of the intrinsics scaled to (H, W), w2c (T, 4, 4) relative to frame 0 (world =
    source camera at frame 0; identity for every frame when ``static_camera``), scale = median depth of frame 0.
    """
    if not isinstance(packet, dict) or "depth" not in packet:
        raise ValueError("da3_geometry: expected the DA3_GEOMETRY of core's Run Depth Anything 3 node")
    if "intrinsics" not in packet or "extrinsics" not in packet:
        raise ValueError(f"da3_geometry: has no cameras (mode {packet.get('mode')!r}); run Run Depth Anything 3 "
                         "with mode = multiview and a DA3-Small / Base model")
    depth = torch.as_tensor(packet["depth"]).float().cpu()
    T, H, W = depth.shape
    K = torch.as_tensor(packet["intrinsics"]).reshape(-1, 3, 3).double().cpu()
    E = torch.as_tensor(packet["extrinsics"]).reshape(-1, *packet["extrinsics"].shape[-2:]).cpu()
    if K.shape[0] != T or E.shape[0] != T:
        raise ValueError(f"da3_geometry: {K.shape[0]} intrinsics / {E.shape[0]} extrinsics for {T} depth maps")
    if bool((K[:, 0, 0] == 1).all() and (K[:, 0, 2] == 0).all()):
        raise ValueError("da3_geometry: the cameras are placeholders (core's DA3 estimates none for a single "
                         "image); give Run Depth Anything 3 at least two frames")
    h, w = da3_input_size(H, W, resolution, resize_method)
    pp = K[:, :2, 2].median(dim=0).values
    if not (0.75 * w < 2 * float(pp[0]) < 1.25 * w and 0.75 * h < 2 * float(pp[1]) < 1.25 * h):
        raise ValueError(f"resolution: DA3 ran at about {2 * float(pp[1]):.0f}x{2 * float(pp[0]):.0f} (h x w), not "
                         f"{h}x{w} as resolution={resolution}, resize_method={resize_method!r} give for {H}x{W} "
                         "images; set them to the values of Run Depth Anything 3")
    K = K.clone()
    K[:, 0] *= W / w
    K[:, 1] *= H / h
    conf = packet.get("confidence")
    conf = torch.ones_like(depth) if conf is None else torch.as_tensor(conf).float().cpu()
    valid = torch.isfinite(depth) & (depth > 0) & torch.isfinite(conf)
    depth = torch.where(valid, depth, torch.full_like(depth, float("nan")))
    conf = torch.where(valid, conf, torch.zeros_like(conf))
    Eh = _homogeneous(E[:, :3, :4].double())
    return source_geometry(depth, conf, K, Eh @ torch.linalg.inv(Eh[0]), static_camera)  # x_cam_i = E_i E_0^-1 x_cam_0
