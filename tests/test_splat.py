"""Our 4D scene as core ComfyUI's SPLAT (0.33+) and back: the tensors match ``Scene4D.at``; core's own
writer + reader (SplatToFile3D / File3DToSplat) give back the same Gaussians; on 0.3.75 the node is absent."""

from __future__ import annotations

import pytest
import torch

from comfyui_full4d.gaussians.splat import gaussians_from_splat, scene_times, splat_cloud, splats_at
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
        assert_round_trip(back, s.at(0.5), fmt)


# PLY is float32; SPZ quantises (positions 24-bit fixed point, log scales / rotations / alpha / colour 8 bit) and
# KSPLAT (level 0) colour and alpha (8 bit); both keep the DC colour only. rot in radians (float32 acos near 1)
ROUND_TRIP_TOL = {"ply": dict(pos=1e-6, scale=1e-5, rot=2e-3, op=1e-5, sh=1e-6),
                  "spz": dict(pos=2e-3, scale=0.1, rot=0.25, op=0.01, sh=0.05),
                  "ksplat": dict(pos=1e-6, scale=1e-5, rot=2e-3, op=0.01, sh=0.05)}


def assert_round_trip(back, at, fmt: str) -> None:
    """back: a core SPLAT read back from a file of format fmt (item 0); at: ``Scene4D.at(t)`` it was written from."""
    means, quats, scales, op, sh = at
    tol = ROUND_TRIP_TOL[fmt]
    rel = lambda a, b: float(((a - b).abs() / b.abs().clamp_min(1e-3)).max())
    assert float((back.positions[0] - means).abs().max()) < tol["pos"] * max(1.0, float(means.abs().max()))
    assert rel(back.scales[0], scales) < tol["scale"]
    # rotation angle between the two (q and -q are one rotation): 2 acos |<q, q'>|
    angle = 2 * torch.acos((back.rotations[0] * quats).sum(-1).abs().clamp(max=1.0))
    assert float(angle.max()) < tol["rot"] and float(angle.mean()) < tol["rot"] / 5
    assert float((back.opacities[0, :, 0] - op).abs().max()) < tol["op"]
    k = back.sh.shape[2]
    assert k == (sh.shape[1] if fmt == "ply" else 1)
    assert float((back.sh[0] - sh[:, :k]).abs().max()) < tol["sh"] * max(1.0, float(sh[:, :1].abs().max()))


@needs_core_splat
@pytest.mark.server
def test_scene_to_splat_gives_one_item_per_frame(comfy_host):
    s = _scene(9, 0, seed=2)
    splat = comfy_host.node("Full4DSceneToSplat").execute(scene4d=s, time=0.0, num_frames=4).result[0]
    assert splat.positions.shape == (4, 9, 3) and splat.sh.shape == (4, 9, 1, 3)
    with torch.no_grad():
        torch.testing.assert_close(splat.positions[3], s.at(1.0)[0])


def test_splat_cloud_takes_centres_and_base_colours():
    from comfyui_full4d.gaussians.sh import SH_C0

    g = torch.Generator().manual_seed(1)
    pos, sh = torch.randn(50, 3, generator=g), torch.randn(50, 4, 3, generator=g)
    pts, cols = splat_cloud(pos, sh, max_points=100)
    torch.testing.assert_close(pts, pos)
    torch.testing.assert_close(cols, (sh[:, 0] * SH_C0 + 0.5).clamp(0, 1))  # 3DGS DC colour, rest ignored
    few, few_cols = splat_cloud(pos, sh, max_points=20)
    assert few.shape == (20, 3) and few_cols.shape == (20, 3)
    assert all(any(torch.equal(p, q) for q in pos) for p in few)  # a subset of the centres
    pos[3] = float("nan")
    assert splat_cloud(pos, sh, 100)[0].shape == (49, 3)
    with pytest.raises(ValueError, match="init_splat"):
        splat_cloud(torch.zeros(0, 3), torch.zeros(0, 1, 3), 10)


def _small_fit_cfg(iters: int):
    from comfyui_full4d.gaussians import DensifyConfig, FitConfig, HexPlaneConfig

    return FitConfig(iterations=iters, sh_degree=0, hexplane=HexPlaneConfig(feature_dim=4, base_res=8, time_res=2,
                     multires=(1,), hidden=16), densify=DensifyConfig(start=100, stop=100, interval=100,
                     max_gaussians=2000))


def test_fit_from_grid_starts_from_an_init_cloud():
    """The given cloud replaces the init modes: after one step the fit's Gaussians sit at its points with its
    colours (not at the ground-truth init the geometry would give), and the report names the init."""
    from comfyui_full4d.gaussians import backproject_views
    from comfyui_full4d.gaussians.pipeline import INIT_SPLAT, fit_from_grid
    from comfyui_full4d.gaussians.sh import sh_to_rgb0
    from comfyui_full4d.media.synthetic import make_capture

    cap = make_capture(3, 2, 24, 40)
    pts, _ = backproject_views(cap.depth[:, 0], cap.views[:, 0], cap.metric_cameras, max_points=300)
    g = torch.Generator().manual_seed(0)
    pts = pts + 0.05 * torch.randn(pts.shape, generator=g)  # not where any init mode would put them
    cols = torch.rand(pts.shape, generator=g)
    scene, _, rep = fit_from_grid(cap.view_major, cap.rig, _small_fit_cfg(1), cap.geometry(), init_cloud=(pts, cols),
                                  checkpoint_every=100)
    assert rep.init == INIT_SPLAT and len(scene) == len(pts)
    got = scene.gaussians
    order = lambda x: x[torch.argsort(x[:, 0] * 1e4 + x[:, 1])]
    torch.testing.assert_close(order(got.means.detach()), order(pts), atol=1e-2, rtol=0)
    torch.testing.assert_close(sh_to_rgb0(got.sh_dc.detach()[:, 0]).mean(0), cols.mean(0), atol=0.05, rtol=0)


@needs_core_splat
@pytest.mark.server
def test_fit_node_initialises_from_a_core_splat(comfy_host):
    """Our scene -> core SPLAT -> core PLY file -> core SPLAT -> the Fit node's init_splat."""
    from comfyui_full4d.media.synthetic import make_capture

    cap = make_capture(3, 2, 24, 40)
    from comfyui_full4d.gaussians import backproject_views
    from comfyui_full4d.gaussians.sh import rgb_to_sh0

    pts, cols = backproject_views(cap.depth[:, 0], cap.views[:, 0], cap.metric_cameras, max_points=300)
    s = _scene(len(pts), 0, seed=5)
    s.gaussians.means, s.gaussians.sh_dc = pts.clone(), rgb_to_sh0(cols)[:, None].clone()
    for p in s.hexplane.parameters():
        p.data.zero_()  # no deformation: the splat's centres are exactly pts
    splat = comfy_host.node("Full4DSceneToSplat").execute(scene4d=s, time=0.0, num_frames=1).result[0]
    file3d = comfy_host.node("SplatToFile3D").execute(splat=splat, format="ply").result[0]
    core = comfy_host.node("File3DToSplat").execute(model_3d=file3d).result[0]
    fit = comfy_host.node("Full4DFit4DGS")
    out = fit.execute(images=cap.view_major, rig=cap.rig, iterations=1, lr_means=1.6e-4, lr_planes=0.05,
                      lambda_dssim=0.2, lambda_tv=2e-4, max_gaussians=2000, prune_opacity=0.015, sh_degree=0,
                      checkpoint_every=500, resume=False, render_time=0.0, orbit_frames=1,
                      geometry=cap.geometry(), init_splat=core)
    scene = out.result[0]
    assert "init: core splat" in str(out.ui.as_dict()) and len(scene) == len(pts)
    torch.testing.assert_close(scene.gaussians.means.detach().sort(0).values, pts.sort(0).values, atol=1e-2, rtol=0)


def _padded_batch(lengths: tuple[int, ...], width: int, seed: int = 0, counts: bool = True):
    """A SPLAT-like batch as core builds one of items of different sizes (``MergeSplat``: every tensor zero-padded
    to the longest item, ``counts`` the real lengths): the object and each item's real rows."""
    from types import SimpleNamespace

    from comfyui_full4d.gaussians.splat import SPLAT_KEYS

    g = torch.Generator().manual_seed(seed)
    tails = {"positions": (3,), "scales": (3,), "rotations": (4,), "opacities": (1,), "sh": (4, 3)}
    items = [{k: torch.rand(n, *tails[k], generator=g) + 0.5 for k in SPLAT_KEYS} for n in lengths]
    padded = {k: torch.zeros(len(lengths), width, *tails[k]) for k in SPLAT_KEYS}
    for i, it in enumerate(items):
        for k in SPLAT_KEYS:
            padded[k][i, :len(it[k])] = it[k]
    return SimpleNamespace(**padded, counts=torch.tensor(lengths) if counts else None), items


@pytest.mark.server
def test_taking_one_item_of_a_padded_splat_keeps_its_count(comfy_host):
    """Core's SPLAT pads a batch to its largest item and carries ``counts``: item i is exactly its counts[i] real
    Gaussians, never the padding (two items of 5 and 9 Gaussians, padded to 11). Without counts every row is real."""
    from comfyui_full4d.host.splat import item

    splat, items = _padded_batch((5, 9), 11)
    for i, want in enumerate(items):
        got = item(splat, i)
        for k, v in want.items():
            assert got[k].shape == v.shape, (i, k)
            torch.testing.assert_close(got[k], v, rtol=0, atol=0)
    whole, _ = _padded_batch((11, 11), 11, counts=False)
    assert item(whole, 1)["positions"].shape == (11, 3)
    with pytest.raises(ValueError, match="item 2"):
        item(splat, 2)


@pytest.mark.server
def test_fit_node_inits_from_the_first_items_real_gaussians(comfy_host):
    """The Fit node's init_splat takes item 0 of a padded batch (5 real Gaussians of 12 rows; the padding's zero
    rows are finite points at the origin): the fit starts from exactly those 5 (called directly, so on any host)."""
    from comfyui_full4d.media.synthetic import make_capture

    cap = make_capture(3, 2, 24, 40)
    splat, items = _padded_batch((5, 12), 12, seed=3)
    near = torch.Generator().manual_seed(1)
    splat.positions[0, :5] = cap.geometry().scale * (1 + 0.1 * torch.randn(5, 3, generator=near))
    items[0]["positions"] = splat.positions[0, :5].clone()
    out = comfy_host.node("Full4DFit4DGS").execute(
        images=cap.view_major, rig=cap.rig, iterations=1, lr_means=1.6e-4, lr_planes=0.05, lambda_dssim=0.2,
        lambda_tv=2e-4, max_gaussians=2000, prune_opacity=0.015, sh_degree=0, checkpoint_every=500, resume=False,
        render_time=0.0, orbit_frames=1, geometry=cap.geometry(), init_splat=splat)
    scene = out.result[0]
    assert len(scene) == 5
    torch.testing.assert_close(scene.gaussians.means.detach().sort(0).values, items[0]["positions"].sort(0).values,
                               atol=1e-2, rtol=0)


@needs_core_splat
@pytest.mark.server
def test_core_merged_batch_items_keep_their_counts(comfy_host):
    """Core's own padded batch: MergeSplat of a two-item SPLAT with counts (4, 7) and a uniform two-item one (3 each)
    gives items of 7 and 10 Gaussians padded to 10; each item we take is the two inputs' items concatenated."""
    from comfy_api.latest import Types

    from comfyui_full4d.gaussians.splat import SPLAT_KEYS
    from comfyui_full4d.host.splat import item

    a_like, a_items = _padded_batch((4, 7), 7, seed=5)
    b_like, b_items = _padded_batch((3, 3), 3, seed=6, counts=False)
    a = Types.SPLAT(*(getattr(a_like, k) for k in SPLAT_KEYS), counts=a_like.counts)
    b = Types.SPLAT(*(getattr(b_like, k) for k in SPLAT_KEYS))
    merged = comfy_host.node("MergeSplat").execute(splats={"splat0": a, "splat1": b}).result[0]
    assert merged.positions.shape[:2] == (2, 10) and merged.counts.tolist() == [7, 10]
    for i in range(2):
        got = item(merged, i)
        for k in SPLAT_KEYS:
            torch.testing.assert_close(got[k], torch.cat([a_items[i][k], b_items[i][k]]), rtol=0, atol=0)
