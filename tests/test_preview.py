"""Preview (issue 7): F4DP quantisation round trip against the analytic error bounds, the JS decoder vs the
Python decoder, the always-loaded web/ size budget, no innerHTML in the widget, and the node in the host."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from comfyui_full4d.gaussians.preview import BYTES_PER_GAUSSIAN, HEADER_BYTES, decode_frames, encode_frames

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "web"


def _frames(n=500, t=4, seed=0):
    r = np.random.default_rng(seed)
    base = r.normal(size=(n, 3)) * [2.0, 1.0, 3.0]
    return [dict(means=torch.tensor(base + 0.1 * k), quats=torch.tensor(r.normal(size=(n, 4))),
                 scales=torch.tensor(np.exp(r.uniform(-6, -1, size=(n, 3)))), opacities=torch.tensor(r.random(n)),
                 colors=torch.tensor(r.random((n, 3)))) for k in range(t)]


def test_round_trip_error_within_bounds():
    fr = _frames()
    buf = encode_frames(fr, fps=12.0)
    assert len(buf) == HEADER_BYTES + 4 * 500 * BYTES_PER_GAUSSIAN
    head, out = decode_frames(buf)
    assert (head["n"], head["num_frames"], head["fps"]) == (500, 4, 12.0)
    allm = np.concatenate([f["means"].numpy() for f in fr])
    ext = allm.max(0) - allm.min(0)
    smin, smax = head["log_scale_range"]
    for a, b in zip(fr, out):
        assert np.all(np.abs(b["means"] - a["means"].numpy()) <= ext / 131070 * 1.01 + 1e-6)
        assert np.abs(b["colors"] - a["colors"].numpy()).max() <= 1 / 510 + 1e-6
        assert np.abs(b["opacities"] - a["opacities"].numpy()).max() <= 1 / 510 + 1e-6
        assert np.abs(np.log(b["scales"]) - np.log(a["scales"].numpy())).max() <= (smax - smin) / 510 * 1.01 + 1e-5
        qa = a["quats"].numpy() / np.linalg.norm(a["quats"].numpy(), axis=1, keepdims=True)
        # q and -q are the same rotation; the quantiser keeps the sign, so compare directly
        assert np.abs(b["quats"] - qa).max() < 0.02
        # exactly the nearest i8 grid point (|error| <= 1/254 per component before renormalising), renormalised
        ref = np.round(qa * 127) / 127
        ref /= np.linalg.norm(ref, axis=1, keepdims=True)
        assert np.abs(b["quats"] - ref).max() < 1e-6


def test_bad_input_messages():
    with pytest.raises(ValueError, match="frames is empty"):
        encode_frames([])
    fr = _frames(n=10, t=2)
    fr[1]["means"] = fr[1]["means"][:5]
    with pytest.raises(ValueError, match="means"):
        encode_frames(fr)
    with pytest.raises(ValueError, match="magic"):
        decode_frames(b"nope" * 20)


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
def test_js_decoder_matches_python(tmp_path):
    fr = _frames(n=50, t=2, seed=3)
    (tmp_path / "a.f4dp").write_bytes(encode_frames(fr))
    script = (f"import('{(WEB / 'lib' / 'splat_renderer.mjs').as_uri()}').then(m => {{"
              f"const b = require('fs').readFileSync('{tmp_path / 'a.f4dp'}');"
              "const d = m.decodeF4DP(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));"
              "console.log(JSON.stringify({P: Array.from(d.frames[1].P), C: Array.from(d.frames[1].C)}));})")
    res = json.loads(subprocess.run(["node", "-e", script], capture_output=True, text=True, check=True).stdout)
    _, out = decode_frames((tmp_path / "a.f4dp").read_bytes())
    np.testing.assert_allclose(np.array(res["P"]).reshape(-1, 3), out[1]["means"], atol=1e-5)
    # covariance R S S^T R^T from the Python-decoded frame (independent numpy construction)
    w, x, y, z = out[1]["quats"].T.astype(np.float64)
    R = np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                  2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                  2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], 1).reshape(-1, 3, 3)
    M = R * out[1]["scales"][:, None, :]
    S = M @ M.transpose(0, 2, 1)
    ref = S[:, [0, 0, 0, 1, 1, 2], [0, 1, 2, 1, 2, 2]]
    np.testing.assert_allclose(np.array(res["C"]).reshape(-1, 6), ref, rtol=1e-3, atol=1e-9)


def test_always_loaded_web_budget():
    total = sum(p.stat().st_size for p in WEB.rglob("*.js"))
    assert 0 < total < 100_000, f"*.js under web/ is {total} bytes (loaded on every page); budget 100 KB"


def test_widget_never_uses_inner_html():
    for p in list(WEB.rglob("*.js")) + list(WEB.rglob("*.mjs")):
        src = p.read_text()
        assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", src), p


def _write_ply(path: Path, n: int, seed: int = 0) -> dict:
    r = np.random.default_rng(seed)
    names = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
             "rot_0", "rot_1", "rot_2", "rot_3"]
    v = r.normal(size=(n, len(names))).astype("<f4")
    head = "ply\nformat binary_little_endian 1.0\nelement vertex %d\n" % n
    head += "".join(f"property float {k}\n" for k in names) + "end_header\n"
    path.write_bytes(head.encode() + v.tobytes())
    return dict(zip(names, v.T))


def _temp_json(comfy_host, item: dict) -> dict:
    return json.loads((comfy_host.base / "temp" / item["subfolder"] / item["cameras"]).read_text())


@pytest.mark.server
def test_node_ply_and_rig(comfy_host, tmp_path):
    from comfyui_full4d.geometry.source import Geometry
    from comfyui_full4d.media.synthetic import make_capture

    (comfy_host.output_dir / "preview_test").mkdir(parents=True, exist_ok=True)
    cols = _write_ply(comfy_host.output_dir / "preview_test" / "s.ply", 200)
    cap = make_capture(num_views=4, num_frames=2, height=16, width=24)
    cls = comfy_host.node("Full4DSplatPreview")
    out = cls.execute(scene4d=None, ply_path="preview_test/s.ply", rig=cap.rig, num_frames=3, fps=8.0)
    item = out.ui["full4d_preview"][0]
    assert item["type"] == "temp" and item["frames"] == 1
    buf = (comfy_host.base / "temp" / item["subfolder"] / item["filename"]).read_bytes()
    _, fr = decode_frames(buf)
    np.testing.assert_allclose(fr[0]["means"][:, 0], cols["x"], atol=1e-3 * np.ptp(cols["x"]))
    np.testing.assert_allclose(fr[0]["colors"][:, 0], np.clip(0.5 + 0.28209479 * cols["f_dc_0"], 0, 1), atol=3e-3)
    np.testing.assert_allclose(fr[0]["opacities"], 1 / (1 + np.exp(-cols["opacity"])), atol=3e-3)
    cams = _temp_json(comfy_host, item)
    assert len(cams["rig"]) == 4 and len(cams["orbit"]) > 4
    # a PLY that records no scale, no geometry: the rig in its scene units, and the node says so
    assert item["scale"] == cams["scale"] == 1.0 and "no geometry" in item["scale_note"]
    c0 = cap.rig.cameras
    eye1 = -(c0.R[1].double().T @ c0.t[1].double())
    np.testing.assert_allclose(cams["rig"][1]["eye"], eye1.numpy(), atol=1e-6)
    # with a geometry: its scale places the cameras (metric eyes), named in the note
    geo = Geometry(depth=torch.ones(1, 4, 4), K=torch.eye(3), w2c=torch.eye(4)[None], scale=3.5)
    out = cls.execute(scene4d=None, ply_path="preview_test/s.ply", rig=cap.rig, num_frames=3, fps=8.0, geometry=geo)
    item = out.ui["full4d_preview"][0]
    cams = _temp_json(comfy_host, item)
    assert item["scale"] == 3.5 and "geometry input" in item["scale_note"]
    np.testing.assert_allclose(cams["rig"][1]["eye"], 3.5 * eye1.numpy(), atol=1e-6)
    assert item["background"] is None  # a PLY carries no background: the widget's own
    with pytest.raises(ValueError, match="ply_path"):
        cls.execute(scene4d=None, ply_path="missing.ply", rig=None)
    # only files inside the output folder: no absolute paths, no '..', no symlinks leading out
    _write_ply(tmp_path / "outside.ply", 10)
    (comfy_host.output_dir / "preview_test" / "link.ply").symlink_to(tmp_path / "outside.ply")
    for bad in (str(tmp_path / "outside.ply"), "../outside.ply", "preview_test/link.ply", "preview_test/*.ply"):
        with pytest.raises(ValueError, match="ply_path"):
            cls.execute(scene4d=None, ply_path=bad, rig=None)
    with pytest.raises(ValueError, match="scene4d"):
        cls.execute(scene4d=None, ply_path="", rig=None)


@pytest.mark.server
def test_node_places_the_cameras_by_the_scenes_own_scale(comfy_host):
    """A scene4d's cameras are at its own scale (what Full4DRender4DGS renders with), not a geometry's."""
    from comfyui_full4d.geometry.source import Geometry
    from comfyui_full4d.media.synthetic import make_capture

    cap = make_capture(num_views=3, num_frames=1, height=16, width=24)
    sc = _scene()
    sc.extras["scale"] = 2.5
    geo = Geometry(depth=torch.ones(1, 4, 4), K=torch.eye(3), w2c=torch.eye(4)[None], scale=7.0)
    out = comfy_host.node("Full4DSplatPreview").execute(scene4d=sc, ply_path="", rig=cap.rig, num_frames=2,
                                                        fps=8.0, geometry=geo)
    item = out.ui["full4d_preview"][0]
    cams = _temp_json(comfy_host, item)
    assert item["scale"] == 2.5 and "scene's own" in item["scale_note"] and "7 is not used" in item["scale_note"]
    np.testing.assert_allclose(cams["center"], 2.5 * cap.rig.center.double().numpy(), rtol=1e-6)


@pytest.mark.server
def test_node_sends_the_scene_background(comfy_host):
    """A scene's background colour (the fit's, used by its renders) goes to the widget with the frames."""
    sc = _scene()
    sc.extras["background"] = [0.25, 0.5, 0.75]
    out = comfy_host.node("Full4DSplatPreview").execute(scene4d=sc, ply_path="", rig=None, num_frames=2, fps=8.0)
    assert out.ui["full4d_preview"][0]["background"] == [0.25, 0.5, 0.75]


def _scene():
    """A small Scene4D with a non-zero deformation."""
    from comfyui_full4d.gaussians.model import Gaussians, HexPlane, HexPlaneConfig, Scene4D

    torch.manual_seed(0)
    n = 64
    g = Gaussians(means=torch.randn(n, 3), quats=torch.randn(n, 4), log_scales=torch.randn(n, 3) - 3,
                  opacity_logits=torch.randn(n), sh_dc=torch.randn(n, 1, 3), sh_rest=torch.zeros(n, 0, 3))
    hp = HexPlane(HexPlaneConfig(feature_dim=4, base_res=4, time_res=4, multires=(1,), hidden=8))
    with torch.no_grad():
        for p in hp.parameters():
            p.normal_(0, 0.3)  # make the deformation non-zero so frames differ
    return Scene4D(gaussians=g, hexplane=hp, time_range=(0.0, 1.0), aabb=torch.tensor([[-3.0] * 3, [3.0] * 3]),
                   sh_degree=0)


def test_scene_frames_match_scene_at():
    from comfyui_full4d.gaussians.preview import scene_frames

    sc = _scene()
    g = sc.gaussians
    fr = scene_frames(sc, [0.0, 1.0])
    m1 = sc.at(1.0)[0]
    torch.testing.assert_close(fr[1]["means"], m1.detach())
    torch.testing.assert_close(fr[0]["colors"], (0.5 + 0.28209479 * g.sh_dc[:, 0]).clamp(0, 1))
    assert (fr[1]["means"] - fr[0]["means"]).abs().max() > 0  # the deformation moves the Gaussians
    _, dec = decode_frames(encode_frames(fr))
    ext = (torch.cat([fr[0]["means"], fr[1]["means"]]).amax(0) - torch.cat([fr[0]["means"], fr[1]["means"]]).amin(0))
    assert np.all(np.abs(dec[1]["means"] - m1.detach().numpy()) <= ext.numpy() / 131070 * 1.01 + 1e-6)


@pytest.mark.parametrize("scale", [1.0, 3.7])
def test_cameras_json_are_the_cameras_that_saw_the_scene(scale):
    """The widget's cameras place every point of the metric scene where the camera that rendered it saw it: the
    synthetic capture's ground-truth depth of each view, lifted to the world with the capture's own metric
    cameras (its renders' cameras), projects through the JSON camera (eye, R, K) onto the pixel it came from.
    The orbit passes through the rig's cameras (its knots), and the rig's look-at point (``center``, metric)
    is in the middle of every ring camera's image."""
    from comfyui_full4d.gaussians.preview import cameras_json
    from comfyui_full4d.media.synthetic import make_capture

    cap = make_capture(num_views=4, num_frames=1, height=24, width=40)
    rig = cap.rig
    cam = cap.metric_cameras  # the cameras that rendered cap.views at cap.scale
    k = scale / cap.scale  # a world k times larger: depth * k, scale * k (as Full4DTestScene)
    out = cameras_json(rig, cap.scale * k, orbit_n=20)
    v, u = np.meshgrid(np.arange(0, 24, 5) + 0.5, np.arange(0, 40, 7) + 0.5, indexing="ij")
    pix = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], 1)

    def project(c: dict, X: np.ndarray) -> np.ndarray:
        xc = (X - np.array(c["eye"])) @ np.reshape(c["R"], (3, 3)).T
        fx, fy, cx, cy = c["K"]
        return np.stack([fx * xc[:, 0] / xc[:, 2] + cx, fy * xc[:, 1] / xc[:, 2] + cy], 1)

    world = []
    for i in range(4):
        z = cap.depth[i, 0].double().numpy()[v.astype(int), u.astype(int)].ravel() * k
        K, R, t = (x.double().numpy() for x in (cam.K.expand(4, 3, 3)[i], cam.R[i], cam.t[i] * k))
        X = (z[:, None] * (pix @ np.linalg.inv(K).T) - t) @ R  # R^T (x_cam - t)
        c = out["rig"][i]
        assert (c["width"], c["height"]) == (40, 24) and c["name"] == rig.names[i]
        np.testing.assert_allclose(project(c, X), pix[:, :2], atol=1e-4)
        world.append(X)
    eyes = np.array([c["eye"] for c in out["rig"]])
    knots = np.array([c["eye"] for c in out["orbit"][::5]])  # 20 cameras through 4 keys: every 5th is a key
    assert np.abs(knots[:, None] - eyes[None]).max(-1).min(1).max() < 1e-6 * max(1.0, scale)
    centre = np.array(out["center"])
    for c in out["rig"][1:]:
        np.testing.assert_allclose(project(c, centre[None])[0], [20, 12], atol=1e-4)
    assert out["scale"] == pytest.approx(cap.scale * k)


def test_preview_scale_says_where_it_comes_from(tmp_path):
    """A Save4DGS PLY records its scale (header comment; else the 4D file beside it); a PLY without either (core's
    writers) takes the geometry's, else 1; a scene its own. Each case names its source."""
    from comfyui_full4d.gaussians.export import save_scene4d, write_ply
    from comfyui_full4d.gaussians.preview import ply_recorded_scale, preview_scale

    g = _scene().gaussians
    args = (g.means, g.quats, g.log_scales, g.opacity_logits, g.sh)
    for d in "abc":
        (tmp_path / d).mkdir()
    commented = write_ply(str(tmp_path / "a" / "f.ply"), *args, comments=("full4d_scale 2.75",))
    assert preview_scale(ply_path=commented, geometry_scale=9.0) == (
        2.75, "scale 2.75 m per rig unit, from the PLY header; the geometry's 9 is not used")
    bare = write_ply(str(tmp_path / "b" / "f.ply"), *args)
    assert ply_recorded_scale(bare) == (None, "")
    s, note = preview_scale(ply_path=bare, geometry_scale=1.5)
    assert s == 1.5 and "geometry input" in note
    s, note = preview_scale(ply_path=bare)
    assert s == 1.0 and "no geometry" in note
    sc = _scene()
    sc.extras["scale"] = 4.25
    save_scene4d(sc, str(tmp_path / "b" / "scene4d.safetensors"))
    assert ply_recorded_scale(bare) == (4.25, "scene4d.safetensors beside the PLY")
    assert ply_recorded_scale(bare, root=str(tmp_path / "a")) == (None, "")  # the 4D file lies outside the root
    assert preview_scale(scene=sc)[0] == 4.25
    bad = write_ply(str(tmp_path / "c" / "f.ply"), *args, comments=("full4d_scale -1",))
    with pytest.raises(ValueError, match="ply_path: .* full4d_scale"):
        preview_scale(ply_path=bad)
    with pytest.raises(ValueError, match="comments"):
        write_ply(str(tmp_path / "d.ply"), *args, comments=("two\nlines",))


def test_ply_scales_are_log_scales_in_the_preview(tmp_path):
    """A 3DGS PLY written by an independent writer (plyfile) with Gaussians of known sizes 0.01 .. 0.5 scene units
    stores ``scale_* = log(size)``; the preview (read_ply_gaussians -> F4DP -> the decoder the JS mirrors) draws those
    sizes, within the u8 log-scale quantisation ((max - min) / 510 in log units), and the opacity sigmoid(logit)."""
    from plyfile import PlyData, PlyElement

    from comfyui_full4d.gaussians.preview import read_ply_gaussians

    r = np.random.default_rng(3)
    n = 300
    sizes = np.exp(r.uniform(np.log(0.01), np.log(0.5), size=(n, 3)))
    names = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
             "rot_0", "rot_1", "rot_2", "rot_3"]
    cols = np.concatenate([r.normal(size=(n, 3)), r.normal(size=(n, 3)) * 0.5, r.normal(size=(n, 1)), np.log(sizes),
                           r.normal(size=(n, 4))], 1).astype("<f4")
    vertex = np.empty(n, dtype=[(k, "<f4") for k in names])
    for i, k in enumerate(names):
        vertex[k] = cols[:, i]
    PlyData([PlyElement.describe(vertex, "vertex")], text=False, byte_order="<").write(str(tmp_path / "s.ply"))
    frame = read_ply_gaussians(str(tmp_path / "s.ply"))
    header, (back,) = decode_frames(encode_frames([frame]))
    smin, smax = header["log_scale_range"]
    assert smin == pytest.approx(np.log(sizes.astype("<f4")).min(), abs=1e-4)
    np.testing.assert_allclose(np.log(back["scales"]), np.log(sizes), rtol=0, atol=(smax - smin) / 510 + 1e-5)
    np.testing.assert_allclose(back["opacities"], 1 / (1 + np.exp(-cols[:, 6])), rtol=0, atol=1 / 510 + 1e-6)
