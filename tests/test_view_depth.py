"""DA3 depth of the generated views aligned to the rig (SPEC 6 initialisation).

Reference: a stand-in "DA3" with DA3's forward signature returns the synthetic scene's exact
depth and cameras in a frame related to the rig by a random similarity it draws on every call
(known: depth / s, extrinsics moved accordingly, intrinsics deliberately wrong). The function
must recover the ray-cast metric depth, the drawn similarity, and the fused point cloud of the
ground truth. The real DA3 class (random-init fixture, loaded by ``load_da3``) checks the plumbing.
"""

from __future__ import annotations

import math

import pytest
import torch

from comfyui_full4d.geometry.cameras import Camera, look_at
from comfyui_full4d.geometry.depth import DA3Model, load_da3
from comfyui_full4d.gaussians.init import backproject_views
from comfyui_full4d.media.synthetic import make_capture, make_scene, render
from comfyui_full4d.geometry.view_depth import estimate_view_depth, view_chunks
from fixtures.da3 import fixture_da3_folder
from fixtures.da3_standin import StandInDA3, normalise

H, W = 56, 84  # multiples of 14: DA3's input size at process_res=84 is the frame size (no resize)


@pytest.fixture(scope="module")
def cap():
    return make_capture(num_views=6, num_frames=2, height=H, width=W, seed=0)


def _run(views, depth, cams, frames, scales=(0.37, 2.5, 0.8), **kw):
    truth = kw.pop("truth", None)  # the cameras that really took the views (default: cams)
    net = StandInDA3(views, depth, cams if truth is None else truth, scales=scales, collapse=kw.pop("collapse", False),
                     anchor_bias=kw.pop("anchor_bias", ()))
    out = estimate_view_depth(DA3Model(net, process_res=max(H, W)), views, cams, frames, **kw)
    return (*out, net.calls)


def _gt(depth, frames):
    return depth[:, list(frames)]


@pytest.mark.parametrize("batch", [8, 3])
def test_recovers_metric_depth_and_similarity(cap, batch):
    """Ring rig: the rig-aligned depth is the ray-cast metric depth; each pass's similarity is the drawn one
    (batch=3: chunks [0,1,4] [0,2,5] [0,3], each in its own frame and scale; [0,3] is two views -> collinear)."""
    cams, frames, steps = cap.metric_cameras, (1, 0), []
    depth, conf, info, calls = _run(cap.views, cap.depth, cams, frames, batch=batch,
                                    on_step=lambda d, t: steps.append((d, t)))
    C = len(view_chunks(6, batch))
    assert depth.shape == conf.shape == (6, 2, H, W) and depth.dtype == torch.float32
    torch.testing.assert_close(depth, _gt(cap.depth, frames), rtol=1e-4, atol=0)
    assert bool((conf == 2).all())
    assert steps == [(i, 2 * C) for i in range(1, 2 * C + 1)] and len(calls) == 2 * C
    assert info.scale.shape == info.residual.shape == (2, C) and info.rotation.shape == (2, C, 3, 3)
    assert info.chunks == tuple(tuple(c) for c in view_chunks(6, batch))
    for n, (v, s, R, t) in enumerate(calls):
        i, c = divmod(n, C)
        assert v == list(info.chunks[c]) and float(info.scale[i, c]) == pytest.approx(s, rel=1e-5)
        if len(v) >= 3:
            assert info.modes[i][c] == "similarity"
            torch.testing.assert_close(info.rotation[i, c], R, rtol=0, atol=1e-5)
            torch.testing.assert_close(info.translation[i, c], t, rtol=0, atol=1e-5 * (1 + float(t.norm())))
        else:
            assert info.modes[i][c] == "collinear" and bool(info.rotation[i, c].isnan().all())
    assert info.worst_residual < 1e-5
    for i, f in enumerate(frames):  # the fused point cloud of all views = the ground truth's
        got = backproject_views(depth[:, i], cap.views[:, f], cams, max_points=10**6)
        ref = backproject_views(cap.depth[:, f], cap.views[:, f], cams, max_points=10**6)
        torch.testing.assert_close(got[0], ref[0], rtol=0, atol=1e-4 * cap.scale)
        torch.testing.assert_close(got[1], ref[1])


def _cams(K, R, t):
    return Camera(K=K.expand(len(R), 3, 3).clone(), R=R.float(), t=t.float(), width=W, height=H)


def _render(cap, cams):
    return render(make_scene(0), cams, cap.times)


@pytest.mark.parametrize("xs", [(-0.3, 0.0, 0.25), (0.0, 0.3)])
def test_collinear_rig_scale_from_spreads(cap, xs):
    """A dolly (and a 2-view) rig: rotation undetermined, scale from the ratio of spreads; depth still exact."""
    C = torch.tensor([[x, 0.0, 0.0] for x in xs], dtype=torch.float64) * cap.scale
    R = torch.eye(3, dtype=torch.float64).expand(len(xs), 3, 3)
    cams = _cams(cap.metric_cameras.K[0], R, -C)
    views, gt = _render(cap, cams)
    depth, _, info, calls = _run(views, gt, cams, (0,))
    torch.testing.assert_close(depth, _gt(gt, (0,)), rtol=1e-4, atol=0)
    assert info.modes == (("collinear",),) and float(info.scale[0, 0]) == pytest.approx(calls[0][1], rel=1e-5)
    assert bool(info.rotation.isnan().all() and info.translation.isnan().all()) and info.worst_residual < 1e-5


def _rotation_only(yaws_deg):
    eye = torch.zeros(len(yaws_deg), 3, dtype=torch.float64)
    a = torch.tensor(yaws_deg, dtype=torch.float64).deg2rad()
    R, t = look_at(eye, torch.stack([a.sin(), torch.zeros_like(a), a.cos()], -1))
    return R, t


def test_rotation_only_rig_needs_reference_depth(cap):
    """Coincident centres: no reference -> a clear error before DA3 runs; with view 0's metric depth
    (any size) the median ratio sets the scale."""
    R, t = _rotation_only([0.0, 20.0, -25.0])
    cams = _cams(cap.metric_cameras.K[0], R, t)
    views, gt = _render(cap, cams)
    with pytest.raises(ValueError, match="reference_depth"):
        _run(views, gt, cams, (0, 1))
    depth, _, info, _ = _run(views, gt, cams, (0, 1), reference_depth=gt[0])  # (F, H, W)
    torch.testing.assert_close(depth, gt, rtol=1e-4, atol=0)
    assert info.modes == (("reference",), ("reference",)) and bool(info.residual.isnan().all())
    half = torch.nn.functional.interpolate(gt[0, :1, None], scale_factor=0.5, mode="nearest")[0, 0]  # (H/2, W/2)
    depth, _, info, calls = _run(views, gt, cams, (0,), reference_depth=half)
    assert float(info.scale[0, 0]) == pytest.approx(calls[0][1], rel=0.02)


def test_coincident_chunk_takes_scale_from_anchor(cap):
    """batch=3 over 5 views: chunk [0,1,3] on the ring (similarity), chunk [0,2,4] rotation-only at the
    source: its scale comes from matching its view 0 to the first chunk's metric view-0 depth."""
    ring = cap.metric_cameras
    R0, t0 = _rotation_only([30.0, -30.0])
    R = torch.cat([ring.R[:2].double(), R0[:1], ring.R[3:4].double(), R0[1:]])
    t = torch.cat([ring.t[:2].double(), t0[:1], ring.t[3:4].double(), t0[1:]])
    cams = _cams(ring.K[0], R, t)
    views, gt = _render(cap, cams)
    depth, _, info, calls = _run(views, gt, cams, (1,), batch=3)
    assert info.chunks == ((0, 1, 3), (0, 2, 4)) and info.modes == (("similarity", "reference"),)
    torch.testing.assert_close(depth, _gt(gt, (1,)), rtol=1e-4, atol=0)
    assert [float(s) for s in info.scale[0]] == pytest.approx([calls[0][1], calls[1][1]], rel=1e-5)


def test_da3_cameras_at_one_point(cap):
    """DA3 collapsing the cameras: an error naming reference_depth, or the reference fallback if given."""
    with pytest.raises(ValueError, match="DA3 put the cameras at one point.*reference_depth"):
        _run(cap.views, cap.depth, cap.metric_cameras, (0,), collapse=True)
    depth, _, info, _ = _run(cap.views, cap.depth, cap.metric_cameras, (0,), collapse=True,
                             reference_depth=cap.depth[0, 0])
    torch.testing.assert_close(depth, _gt(cap.depth, (0,)), rtol=1e-4, atol=0)
    assert info.modes == (("reference",),)


def test_chunked_equals_unchunked_view0_from_the_first_chunk(cap):
    """DA3's view-0 estimate differs with the batch it rides in (the stand-in scales the call's first view by
    1.0, 1.3, 0.7): the chunked result (batch=3) must equal the unchunked one (one call, factor 1.0): view 0
    from the first chunk, every later chunk's anchor dropped."""
    cams = cap.metric_cameras
    one, _, _, _ = _run(cap.views, cap.depth, cams, (0,), batch=8, anchor_bias=(1.0, 1.3, 0.7))
    chunked, _, info, _ = _run(cap.views, cap.depth, cams, (0,), batch=3, anchor_bias=(1.0, 1.3, 0.7))
    assert len(info.chunks) == 3
    torch.testing.assert_close(chunked, one, rtol=1e-4, atol=0)


def test_da3_view_init_runs_on_the_metric_cameras(cap):
    """The node path's DA3 init aligns DA3 to the rig's metric cameras (``rig.metric(scale)``), so its
    fused cloud is the ground-truth depth's (same pixels, same seed) in metres."""
    from comfyui_full4d.gaussians.pipeline import INIT_VIEWS_DA3, INIT_VIEWS_GT, init_points

    geo = cap.geometry()
    da3 = DA3Model(StandInDA3(cap.views, cap.depth, cap.metric_cameras, scales=(0.37,)), process_res=max(H, W))
    got = init_points(cap.views, cap.rig, geo, cap.scale, INIT_VIEWS_DA3, da3, max_points=2000)
    ref = init_points(cap.views, cap.rig, geo, cap.scale, INIT_VIEWS_GT, max_points=2000)
    assert got.mode == INIT_VIEWS_DA3 and len(got.points) == len(ref.points)
    torch.testing.assert_close(got.points, ref.points, rtol=0, atol=1e-3 * cap.scale)


def test_view_chunks():
    assert view_chunks(4, 8) == [[0, 1, 2, 3]]
    assert view_chunks(9, 8) == [[0, 1, 3, 5, 7], [0, 2, 4, 6, 8]]
    assert view_chunks(32, 8) == [[0] + list(range(1 + c, 32, 5)) for c in range(5)]
    assert all(len(c) <= 8 for c in view_chunks(32, 8))


@pytest.mark.parametrize("change,match", [
    (dict(views=torch.rand(6, 2, H, W)), "views must be a non-empty \\(V, T, H, W, 3\\)"),
    (dict(cams=slice(0, 5)), "cameras must be a batched Camera \\(V=6,\\).*got \\(5,\\)"),
    (dict(size=(W // 2, H // 2)), "cameras are 42x28 but the views are 84x56"),
    (dict(frames=(0, 2)), "frames \\[2\\] out of range.*T=2"),
    (dict(frames=()), "frames must be a non-empty"),
    (dict(frames=(0.5,)), "frames must be a non-empty sequence of integer"),
    (dict(batch=1), "batch must be an integer >= 2"),
    (dict(reference_depth=torch.rand(3, H, W)), "reference_depth must be .*\\(F=1, H, W\\).*got \\(3, 56, 84\\)"),
])
def test_bad_inputs(cap, change, match):
    change = dict(change)
    views, cams = change.pop("views", cap.views), cap.metric_cameras
    if "cams" in change:
        cams = cams[change.pop("cams")]
    if "size" in change:
        cams = cams.resized(*change.pop("size"))
    kw = {"frames": (0,), **change}
    net = StandInDA3(cap.views, cap.depth, cap.metric_cameras)
    with pytest.raises(ValueError, match=match):
        estimate_view_depth(DA3Model(net, process_res=84), views, cams, kw.pop("frames"), **kw)
    assert not net.calls


def test_real_da3_end_to_end(cap):
    """The real DA3 class (random-init da3-small loaded from disk by load_da3) on the synthetic capture,
    chunked: shapes, NaN-or-positive depth, a positive finite scale per pass, and the plumbing: depth / s
    is the network's own depth for that pass, s the Umeyama fit of its camera centres (DA3's own
    ``affine_inverse``) to the rig's."""
    from depth_anything_3.utils.geometry import affine_inverse

    model = load_da3(fixture_da3_folder(), process_res=84)
    cams, steps = cap.metric_cameras, []
    depth, conf, info = estimate_view_depth(model, cap.views, cams, (0, 1), batch=4,
                                            on_step=lambda d, t: steps.append((d, t)))
    assert depth.shape == conf.shape == (6, 2, H, W) and steps == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert info.chunks == ((0, 1, 3, 5), (0, 2, 4))
    assert not bool(torch.isinf(depth).any()) and bool((depth[torch.isfinite(depth)] > 0).all())
    assert bool(torch.isfinite(depth).any(dim=(2, 3)).all()) and bool((conf >= 0).all())
    assert bool(torch.isfinite(info.scale).all() and (info.scale > 0).all())
    assert bool(torch.isfinite(info.residual).all()) and info.modes == (("similarity", "similarity"),) * 2
    from comfyui_full4d.geometry.align import umeyama

    for c, idx in enumerate(info.chunks):
        x = normalise(cap.views[list(idx), 1])[None]
        with torch.inference_mode():
            out = model.net(x, ref_view_strategy="first")
        bottom = torch.tensor([[[0, 0, 0, 1.0]]], dtype=torch.float64).expand(len(idx), 1, 4)
        E = torch.cat([out["extrinsics"][0].double(), bottom], 1)  # (n, 4, 4) w2c
        s, _, _ = umeyama(affine_inverse(E)[:, :3, 3], cams.center[list(idx)].double())
        assert float(info.scale[1, c]) == pytest.approx(s, rel=1e-4)
        keep = list(idx) if c == 0 else list(idx[1:])
        raw = out["depth"][0][0 if c == 0 else 1:].float()
        torch.testing.assert_close(depth[keep, 1] / float(info.scale[1, c]), raw, rtol=1e-4, atol=1e-6)
    assert math.isfinite(info.worst_residual)
