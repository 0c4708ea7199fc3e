"""Our 4D scene as core ComfyUI's SPLAT (0.33+) and back: the tensors match ``Scene4D.at``; core's own
writer + reader (SplatToFile3D / File3DToSplat) give back the same Gaussians; on 0.3.75 the node is absent."""

from __future__ import annotations

import pytest
import torch

from comfyui_full4d.gaussians.splat import gaussians_from_splat, scene_times, splats_at
from host import host_has
from test_gs_export import _scene

CORE_SPLAT = host_has("comfy_extras/nodes_gaussian_splat.py")
needs_core_splat = pytest.mark.skipif(not CORE_SPLAT, reason="the test host has no core SPLAT type (0.3.75); "
                                      "run with FULL4D_TEST_HOST=<a ComfyUI 0.33 checkout>")


def test_splats_at_stacks_the_deformed_gaussians_per_time():
    s = _scene(23, 3)
    times = scene_times(s, 0.0, 3)
    assert times == pytest.approx([0.0, 0.5, 1.0]) and scene_times(s, 0.25, 1) == [0.25]
    out = splats_at(s, times)
    assert out["positions"].shape == (3, 23, 3) and out["opacities"].shape == (3, 23, 1)
    assert out["sh"].shape == (3, 23, 16, 3)
    with torch.no_grad():
        means, quats, scales, op, sh = s.at(0.5)
    for got, want in zip([out[k][1] for k in ("positions", "rotations", "scales", "sh")], (means, quats, scales, sh)):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(out["opacities"][1, :, 0], op)
    assert not torch.equal(out["positions"][0], out["positions"][2])  # the deformation moves them
    with pytest.raises(ValueError, match="num_frames"):
        scene_times(s, 0.0, 0)


def test_gaussians_from_splat_inverts_the_activations():
    s = _scene(11, 1)
    g = s.gaussians
    q = g.quats / g.quats.norm(dim=-1, keepdim=True)
    back = gaussians_from_splat(g.means, torch.exp(g.log_scales), q, torch.sigmoid(g.opacity_logits)[:, None],
                                g.sh, sh_degree=1)
    torch.testing.assert_close(back.log_scales, g.log_scales, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(back.opacity_logits, g.opacity_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(back.sh, g.sh)
    wider = gaussians_from_splat(g.means, torch.exp(g.log_scales), q, torch.sigmoid(g.opacity_logits), g.sh[:, :1], 3)
    assert wider.sh_rest.shape == (11, 15, 3) and not wider.sh_rest.any()  # DC-only file: higher bands zero
    with pytest.raises(ValueError, match="no Gaussians"):
        gaussians_from_splat(*(torch.zeros(0, k) for k in (3, 3, 4, 1)), torch.zeros(0, 1, 3), 0)


@pytest.mark.server
def test_without_core_splat_the_node_is_absent_and_the_pack_loads(comfy_host):
    import nodes

    assert "Full4DFit4DGS" in nodes.NODE_CLASS_MAPPINGS
    if CORE_SPLAT:
        assert "Full4DSceneToSplat" in nodes.NODE_CLASS_MAPPINGS
    else:
        assert "Full4DSceneToSplat" not in nodes.NODE_CLASS_MAPPINGS
        from comfyui_full4d.host.splat import HAS_SPLAT, MISSING_SPLAT

        assert not HAS_SPLAT and "no core SPLAT type" in MISSING_SPLAT


@needs_core_splat
@pytest.mark.server
@pytest.mark.parametrize("fmt", ["ply", "spz"])
def test_scene_to_core_splat_round_trips_through_cores_writer_and_reader(comfy_host, fmt):
    s = _scene(64, 3, seed=4)
    splat = comfy_host.node("Full4DSceneToSplat").execute(scene4d=s, time=0.5, num_frames=1).result[0]
    file3d = comfy_host.node("SplatToFile3D").execute(splat=splat, format=fmt).result[0]
    back = comfy_host.node("File3DToSplat").execute(model_3d=file3d).result[0]
    with torch.no_grad():
        means, quats, scales, op, sh = s.at(0.5)
    # PLY is float32; SPZ quantises (positions 24-bit fixed point, log scales / rotations / alpha / colour
    # 8 bit) and keeps the DC colour only
    tol = {"ply": dict(pos=1e-6, scale=1e-5, rot=2e-3, op=1e-5, sh=1e-6),  # rot in radians (float32 acos near 1)
           "spz": dict(pos=2e-3, scale=0.1, rot=0.1, op=0.01, sh=0.05)}[fmt]
    rel = lambda a, b: float(((a - b).abs() / b.abs().clamp_min(1e-3)).max())
    assert float((back.positions[0] - means).abs().max()) < tol["pos"] * max(1.0, float(means.abs().max()))
    assert rel(back.scales[0], scales) < tol["scale"]
    # rotation angle between the two (q and -q are one rotation): 2 acos |<q, q'>|
    angle = 2 * torch.acos((back.rotations[0] * quats).sum(-1).abs().clamp(max=1.0))
    assert float(angle.max()) < tol["rot"]
    assert float((back.opacities[0, :, 0] - op).abs().max()) < tol["op"]
    k = back.sh.shape[2]
    assert k == (16 if fmt == "ply" else 1)
    assert float((back.sh[0] - sh[:, :k]).abs().max()) < tol["sh"] * max(1.0, float(sh[:, :1].abs().max()))


@needs_core_splat
@pytest.mark.server
def test_scene_to_splat_gives_one_item_per_frame(comfy_host):
    s = _scene(9, 0, seed=2)
    splat = comfy_host.node("Full4DSceneToSplat").execute(scene4d=s, time=0.0, num_frames=4).result[0]
    assert splat.positions.shape == (4, 9, 3) and splat.sh.shape == (4, 9, 1, 3)
    with torch.no_grad():
        torch.testing.assert_close(splat.positions[3], s.at(1.0)[0])
