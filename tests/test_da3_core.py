"""Core ComfyUI's Depth Anything 3 (0.33+: DA3_MODEL, DA3_GEOMETRY) as our Geometry.

References: an analytic scene written in core's packet layout (cameras at DA3's working size, an arbitrary DA3
world) must give back its own cameras, and its projection the analytic pixel shift; core's own DA3 nodes on a
tiny random-weight model built from a config must agree with our node that drives the same model. On 0.3.75 the
two nodes are absent and the pack loads.
"""

from __future__ import annotations

import pytest
import torch

from comfyui_full4d.geometry.da3_core import CoreDA3Net, geometry_from_da3
from comfyui_full4d.geometry.depth import da3_input_size
from comfyui_full4d.geometry.projection import project_to_cameras
from host import host_has

CORE_DA3 = host_has("comfy_extras/nodes_depth_anything_3.py")
needs_core_da3 = pytest.mark.skipif(not CORE_DA3, reason="the test host has no core DA3 nodes (0.3.75); run with "
                                    "FULL4D_TEST_HOST=<a ComfyUI 0.33 checkout>")


def _rot(axis: int, deg: float) -> torch.Tensor:
    a = torch.deg2rad(torch.tensor(deg, dtype=torch.float64))
    c, s = torch.cos(a), torch.sin(a)
    i, j = [k for k in range(3) if k != axis]
    R = torch.eye(3, dtype=torch.float64)
    R[i, i], R[i, j], R[j, i], R[j, j] = c, -s, s, c
    return R


def _rigid(R: torch.Tensor, t) -> torch.Tensor:
    M = torch.eye(4, dtype=torch.float64)
    M[:3, :3], M[:3, 3] = R, torch.as_tensor(t, dtype=torch.float64)
    return M


# frames 56x84; core ran at resolution 42 -> working size 28x42 (half): the packet's K is half of the true K
H, W, RES = 56, 84, 42
K_TRUE = torch.tensor([[60.0, 0, W / 2], [0, 60.0, H / 2], [0, 0, 1]], dtype=torch.float64)
W2C_TRUE = torch.stack([torch.eye(4, dtype=torch.float64), _rigid(_rot(1, 7.0), [0.3, -0.1, 0.2])])
Z = 5.0  # frame 0 sees a fronto-parallel plane at depth Z


def _packet(static_world=None) -> dict:
    """The analytic scene in core's DA3_GEOMETRY layout: depth at (H, W), K at the working size, w2c in a DA3
    world G (x_ours = G x_da3), so E_i = W2C_TRUE_i @ G."""
    G = _rigid(_rot(0, 20.0) @ _rot(2, -35.0), [1.0, 2.0, -0.5]) if static_world is None else static_world
    depth = torch.full((2, H, W), Z)
    depth[1] = 3.0 + torch.rand(H, W, generator=torch.Generator().manual_seed(0))
    depth[1, 0, :5] = float("nan")  # invalid depth -> NaN, confidence 0
    h, w = da3_input_size(H, W, RES)
    K_hw = K_TRUE.clone()
    K_hw[0] *= w / W
    K_hw[1] *= h / H
    E = (W2C_TRUE @ G)[:, :3].float()
    return {"depth": depth, "confidence": 1 + torch.rand(2, H, W), "image": torch.rand(2, H, W, 3),
            "mode": "multiview", "extrinsics": E[None], "intrinsics": K_hw.float().expand(1, 2, 3, 3).clone()}


def test_working_size_is_the_half_size_here_and_rounds_to_the_patch():
    assert da3_input_size(H, W, RES) == (28, 42)
    assert da3_input_size(100, 300, 504, "upper_bound_resize") == (168, 504)
    assert da3_input_size(100, 300, 504, "lower_bound_resize") == (504, 1512)
    with pytest.raises(ValueError, match="resize_method"):
        da3_input_size(H, W, RES, "nearest")


def test_packet_gives_back_the_scenes_cameras_at_the_frame_size():
    geo = geometry_from_da3(_packet(), RES, static_camera=False)
    torch.testing.assert_close(geo.K.double(), K_TRUE, rtol=0, atol=1e-5)  # not the working-size K
    torch.testing.assert_close(geo.w2c.double(), W2C_TRUE, rtol=0, atol=1e-5)  # world = camera of frame 0
    assert torch.isnan(geo.depth[1, 0, :5]).all() and (geo.conf[1, 0, :5] == 0).all()
    assert geo.scale == pytest.approx(Z)
    static = geometry_from_da3(_packet(), RES, static_camera=True)
    assert torch.equal(static.w2c, torch.eye(4).expand(2, 4, 4)) and torch.equal(static.K, geo.K)


def test_projection_of_the_converted_geometry_is_the_analytic_shift():
    """Frame 0 (a plane at depth Z) seen from a camera moved by tx: every pixel moves by fx * tx / Z = 3 px."""
    geo = geometry_from_da3(_packet(), RES, static_camera=False)
    img = torch.rand(1, H, W, 3, generator=torch.Generator().manual_seed(1))
    tx = 3 * Z / 60.0
    w2c_dst = _rigid(torch.eye(3, dtype=torch.float64), [tx, 0, 0]).float()[None]
    renders, masks = project_to_cameras(img, geo.depth[:1], geo.K, geo.w2c[0], geo.K[None], w2c_dst)
    assert masks[0, 0, :, 3:].all() and not masks[0, 0, :, :3].any()
    torch.testing.assert_close(renders[0, 0, :, 3:], img[0, :, :-3], rtol=0, atol=0)


def test_working_size_rescale_is_per_axis_when_the_factors_differ():
    """Frames 50x90 at resolution 42 run at 28x42: the x row of K scales by W/w = 90/42 and the y row by
    H/h = 50/28, two different factors (every other packet here is scaled by 2 on both axes). A packet written from
    a known K (fx 70, fy 66, principal point the frame centre) gives that K back, not one with the factors swapped."""
    Hn, Wn = 50, 90
    h, w = da3_input_size(Hn, Wn, RES)
    assert (h, w) == (28, 42) and Wn / w != Hn / h
    K_true = torch.tensor([[70.0, 0, Wn / 2], [0, 66.0, Hn / 2], [0, 0, 1]], dtype=torch.float64)
    K_hw = torch.diag(torch.tensor([w / Wn, h / Hn, 1.0], dtype=torch.float64)) @ K_true  # DA3's: at (h, w)
    E = torch.stack([torch.eye(4, dtype=torch.float64), _rigid(_rot(1, 5.0), [0.2, 0.0, 0.1])])[:, :3].float()
    packet = {"depth": torch.full((2, Hn, Wn), 4.0), "confidence": torch.ones(2, Hn, Wn), "mode": "multiview",
              "extrinsics": E[None], "intrinsics": K_hw.float().expand(1, 2, 3, 3).clone()}
    geo = geometry_from_da3(packet, RES, static_camera=False)
    torch.testing.assert_close(geo.K.double(), K_true, rtol=1e-6, atol=1e-5)


def test_packet_errors_name_what_to_change():
    p = _packet()
    with pytest.raises(ValueError, match="resolution"):  # ran at 4x the size the inputs say
        geometry_from_da3(p, RES * 4)
    mono = {k: v for k, v in p.items() if k not in ("extrinsics", "intrinsics")}
    with pytest.raises(ValueError, match="multiview"):
        geometry_from_da3({**mono, "mode": "mono"}, RES)
    with pytest.raises(ValueError, match="at least two frames"):
        geometry_from_da3({**p, "intrinsics": torch.eye(3).expand(1, 2, 3, 3)}, RES)


class _FlatNet(torch.nn.Module):
    """Stands in for core's DepthAnything3Net layout: views flattened, cameras only for S > 1."""

    def __init__(self, cameras: bool = True):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))
        self.cameras = cameras

    def forward(self, x, ref_view_strategy="saddle_balanced"):
        B, S, _, h, w = x.shape
        depth = x[:, :, 0].reshape(B * S, h, w) * self.w + 2  # view-dependent
        out = {"depth": depth, "depth_conf": depth + 1}
        if self.cameras and S > 1:
            out["extrinsics"] = torch.arange(S, dtype=x.dtype).view(1, S, 1, 1).expand(B, S, 3, 4)
            out["intrinsics"] = torch.eye(3).expand(B, S, 3, 3)
        return out


def test_core_net_wrapper_restores_the_view_axis_and_runs_one_view_as_two():
    x = torch.randn(1, 3, 3, 14, 28)
    out = CoreDA3Net(_FlatNet())(x)
    assert out["depth"].shape == (1, 3, 14, 28) and out["extrinsics"].shape == (1, 3, 3, 4)
    torch.testing.assert_close(out["depth"][0, 2], x[0, 2, 0] + 2)
    one = CoreDA3Net(_FlatNet())(x[:, :1])
    assert one["depth"].shape == (1, 1, 14, 28) and one["intrinsics"].shape == (1, 1, 3, 3)
    torch.testing.assert_close(one["depth"][0, 0], x[0, 0, 0] + 2)
    with pytest.raises(ValueError, match="DA3-Small or DA3-Base"):
        CoreDA3Net(_FlatNet(cameras=False))(x)


# ---- core's DA3 on the host (0.33+) ------------------------------------------------------------------------


@pytest.mark.server
def test_without_core_da3_the_nodes_are_absent_and_the_pack_loads(comfy_host):
    import nodes

    assert "Full4DDA3Depth" in nodes.NODE_CLASS_MAPPINGS
    for node_id in ("Full4DDA3DepthFromCore", "Full4DGeometryFromDA3"):
        assert (node_id in nodes.NODE_CLASS_MAPPINGS) == CORE_DA3
    if not CORE_DA3:
        from comfyui_full4d.host.depth import HAS_CORE_DA3, MISSING_CORE_DA3

        assert not HAS_CORE_DA3 and "no core Depth Anything 3" in MISSING_CORE_DA3


@needs_core_da3
@pytest.mark.server
def test_working_size_matches_cores_preprocessing(comfy_host):
    from comfy.ldm.depth_anything_3.preprocess import compute_target_size

    for h, w, res in [(56, 84, 42), (384, 672, 504), (672, 384, 504), (100, 100, 98), (70, 200, 140)]:
        for method in ("upper_bound_resize", "lower_bound_resize"):
            assert da3_input_size(h, w, res, method) == compute_target_size(h, w, res, method), (h, w, res, method)


def _tiny_core_da3(comfy_host) -> str:
    """A DA3-Small-shaped core DepthAnything3Net (vits backbone, DualDPT head with a narrow neck, camera encoder
    and decoder) with seeded random weights, saved where core's Load Depth Anything 3 finds it."""
    import comfy.ops
    from comfy.ldm.depth_anything_3.model import DepthAnything3Net
    from safetensors.torch import save_file

    name = "tiny_da3_small.safetensors"
    folder = comfy_host.models_dir / "geometry_estimation"
    if (folder / name).is_file():
        return name
    net = DepthAnything3Net(backbone_name="vits", out_layers=(5, 7, 9, 11), alt_start=4, qknorm_start=4,
                            rope_start=4, cat_token=True, head_type="dualdpt", head_dim_in=768, head_output_dim=2,
                            head_features=16, head_out_channels=(8, 16, 32, 64), has_cam_enc=True, has_cam_dec=True,
                            dtype=torch.float32, operations=comfy.ops.disable_weight_init)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for pname, p in net.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.02 + (1.0 if pname.endswith("norm.weight") else 0.0))
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.clone().contiguous() for k, v in net.state_dict().items()}, str(folder / name))
    return name


@needs_core_da3
@pytest.mark.server
def test_core_da3_model_and_output_give_one_geometry(comfy_host):
    """Core's DA3_MODEL through our node and core's own Run Depth Anything 3 -> our converter: frames already
    at the working size (no resize on either side), so both see the same network input and must agree."""
    from media import synthetic_frames

    (model,) = comfy_host.node("LoadDA3Model").execute(model_name=_tiny_core_da3(comfy_host),
                                                       weight_dtype="fp32").result
    frames = synthetic_frames(3, 28, 42, 3)
    ours, preview = comfy_host.node("Full4DDA3DepthFromCore").execute(
        da3_model=model, images=frames, static_camera=False, batch=8, process_res=42).result
    mode = {"mode": "multiview", "ref_view_strategy": "first", "pose_method": "cam_dec"}
    (packet,) = comfy_host.node("DA3Inference").execute(da3_model=model, image=frames, resolution=42,
                                                        resize_method="upper_bound_resize", mode=mode).result
    theirs, _ = comfy_host.node("Full4DGeometryFromDA3").execute(
        da3_geometry=packet, static_camera=False, resolution=42, resize_method="upper_bound_resize").result
    assert ours.depth.shape == (3, 28, 42) and preview.shape == (3, 28, 42, 3)
    torch.testing.assert_close(ours.depth, theirs.depth, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.K, theirs.K, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.w2c, theirs.w2c, rtol=1e-4, atol=1e-4)
    assert ours.K[0, 2] == pytest.approx(21.0) and ours.K[1, 2] == pytest.approx(14.0)
    # frames at twice the working size: the principal point is the frame's centre in both paths (K rescaled)
    big = synthetic_frames(2, 56, 84, 4)
    geo, _ = comfy_host.node("Full4DDA3DepthFromCore").execute(da3_model=model, images=big, static_camera=True,
                                                                batch=8, process_res=42).result
    (packet,) = comfy_host.node("DA3Inference").execute(da3_model=model, image=big, resolution=42,
                                                        resize_method="upper_bound_resize", mode=mode).result
    assert tuple(packet["intrinsics"][0, 0, :2, 2].tolist()) == (21.0, 14.0)  # core's K: at the working size
    conv, _ = comfy_host.node("Full4DGeometryFromDA3").execute(
        da3_geometry=packet, static_camera=True, resolution=42, resize_method="upper_bound_resize").result
    for g in (geo, conv):
        assert g.depth.shape == (2, 56, 84) and tuple(g.K[:2, 2].tolist()) == (42.0, 28.0)
    assert float(conv.K[0, 0]) == pytest.approx(2 * float(packet["intrinsics"][0, :, 0, 0].median()), rel=1e-5)


@needs_core_da3
@pytest.mark.server
def test_core_packet_at_a_working_size_of_unequal_factors(comfy_host):
    """Core's Run Depth Anything 3 on 50x90 frames at resolution 42 (working size 28x42: x factor 90/42, y factor
    50/28): our converter scales each row of core's K by its own axis, so the principal point is the frame centre
    and fx, fy are core's times W/w and H/h."""
    from media import synthetic_frames

    (model,) = comfy_host.node("LoadDA3Model").execute(model_name=_tiny_core_da3(comfy_host),
                                                       weight_dtype="fp32").result
    frames = synthetic_frames(2, 50, 90, 5)
    mode = {"mode": "multiview", "ref_view_strategy": "first", "pose_method": "cam_dec"}
    (packet,) = comfy_host.node("DA3Inference").execute(da3_model=model, image=frames, resolution=42,
                                                        resize_method="upper_bound_resize", mode=mode).result
    assert tuple(packet["intrinsics"][0, 0, :2, 2].tolist()) == (21.0, 14.0)  # core's K: at the working size
    geo, _ = comfy_host.node("Full4DGeometryFromDA3").execute(
        da3_geometry=packet, static_camera=True, resolution=42, resize_method="upper_bound_resize").result
    assert geo.depth.shape == (2, 50, 90) and tuple(geo.K[:2, 2].tolist()) == pytest.approx((45.0, 25.0))
    Kc = packet["intrinsics"][0].double()
    assert float(geo.K[0, 0]) == pytest.approx(90 / 42 * float(Kc[:, 0, 0].median()), rel=1e-5)
    assert float(geo.K[1, 1]) == pytest.approx(50 / 28 * float(Kc[:, 1, 1].median()), rel=1e-5)
