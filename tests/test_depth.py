"""DA3 depth through the real depth_anything_3 classes (random-init da3-small fixture).

References: DA3's own InputProcessor (size + ImageNet normalisation) and direct calls of the
network, with its own ``affine_inverse`` for poses.
"""

from __future__ import annotations

import json
import shutil
import sys
import types

import numpy as np
import pytest
import torch

from comfyui_full4d.geometry.depth import DA3Model, da3_input_size, depth_preview, estimate_depth, load_da3
from comfyui_full4d.geometry.source import Geometry
from fixtures.da3 import fixture_da3, fixture_da3_folder, install_da3
from media import synthetic_frames

RES = 112  # DA3 process resolution used in tests (tiny, CPU)


@pytest.fixture(scope="module")
def net():
    return fixture_da3(0)


def _frames(T, H, W, seed=0):
    """Frames with uint8-exact values (so DA3's uint8 preprocessor sees the same image)."""
    return (synthetic_frames(T, H, W, seed) * 255).round() / 255


def _input_processor():
    """DA3's own InputProcessor. Its module imports ``parallel_utils``, which needs ``imageio`` (not a
    dependency here) only for its thread pool; without it a sequential stand-in is registered."""
    try:
        from depth_anything_3.utils.io.input_processor import InputProcessor
    except ModuleNotFoundError as e:
        if e.name != "imageio":
            raise
        mod = types.ModuleType("depth_anything_3.utils.parallel_utils")

        def parallel_execution(*args, action, **kw):
            n = next(len(a) for a in args if isinstance(a, list))
            kw = {k: v for k, v in kw.items() if k not in ("num_processes", "print_progress", "sequential", "desc")}
            return [action(*[a[i] if isinstance(a, list) else a for a in args], **kw) for i in range(n)]

        mod.parallel_execution = parallel_execution
        sys.modules[mod.__name__] = mod
        from depth_anything_3.utils.io.input_processor import InputProcessor
    return InputProcessor


def _direct(net, frames):
    """DA3 outputs for frames already at a DA3 size, preprocessed by DA3's own InputProcessor."""
    InputProcessor = _input_processor()
    imgs = [(f.numpy() * 255).round().astype(np.uint8) for f in frames]
    H, W = frames.shape[1:3]
    x, _, _ = InputProcessor()(imgs, process_res=max(H, W), process_res_method="upper_bound_resize", num_workers=1)
    with torch.inference_mode():
        out = net(x[None] if x.dim() == 4 else x, ref_view_strategy="first")
    return {k: out[k][0] for k in ("depth", "depth_conf", "extrinsics", "intrinsics")}


def test_input_size_matches_da3_preprocessor():
    InputProcessor = _input_processor()
    for H, W, res in [(384, 672, 504), (672, 384, 504), (64, 96, 112), (144, 176, 140), (100, 100, 98)]:
        img = np.zeros((H, W, 3), np.uint8)
        x, _, _ = InputProcessor()([img], process_res=res, process_res_method="upper_bound_resize", num_workers=1)
        assert da3_input_size(H, W, res) == tuple(x.shape[-2:]), (H, W, res)


def test_matches_direct_da3_call(net):
    """Frames at DA3's size: depth/conf/K equal the network's own outputs, poses relative to frame 0."""
    H, W = da3_input_size(70, 112, RES)
    frames = _frames(3, H, W)
    ref = _direct(net, frames)
    geo = estimate_depth(DA3Model(net, process_res=RES), frames, batch=3, static_camera=False)
    torch.testing.assert_close(geo.depth, ref["depth"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(geo.conf, ref["depth_conf"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(geo.K, ref["intrinsics"].median(dim=0).values, rtol=1e-5, atol=1e-4)
    from depth_anything_3.utils.geometry import affine_inverse

    E = torch.cat([ref["extrinsics"], torch.tensor([[[0, 0, 0, 1.0]]]).expand(3, 1, 4)], dim=1)
    rel = E @ affine_inverse(E[0])
    torch.testing.assert_close(geo.w2c, rel, rtol=0, atol=1e-5)
    torch.testing.assert_close(geo.w2c[0], torch.eye(4), rtol=0, atol=0)
    assert geo.scale == pytest.approx(float(ref["depth"][0].median()), rel=1e-5)


def test_static_geometry_at_frame_size(net):
    """Other frame sizes: K scaled to (H, W) (principal point at the centre), identity poses, positive scale."""
    frames = _frames(3, 64, 96)
    geo = estimate_depth(DA3Model(net, process_res=RES), frames, batch=3, static_camera=True)
    assert isinstance(geo, Geometry) and geo.depth.shape == (3, 64, 96) and geo.conf.shape == (3, 64, 96)
    assert torch.equal(geo.w2c, torch.eye(4).expand(3, 4, 4))
    assert geo.K[0, 2] == pytest.approx(48.0) and geo.K[1, 2] == pytest.approx(32.0)
    h, w = da3_input_size(64, 96, RES)
    x = torch.nn.functional.interpolate(frames.permute(0, 3, 1, 2), size=(h, w), mode="bilinear",
                                        antialias=True, align_corners=False)
    raw = _direct(net, x.permute(0, 2, 3, 1).clamp(0, 1))["intrinsics"].median(dim=0).values
    assert float(geo.K[0, 0]) == pytest.approx(float(raw[0, 0]) * 96 / w, rel=1e-2)
    assert float(geo.K[1, 1]) == pytest.approx(float(raw[1, 1]) * 64 / h, rel=1e-2)
    assert geo.scale > 0 and geo.scale == pytest.approx(float(geo.depth[0].median()))
    assert bool(torch.isfinite(geo.depth).all())


def test_chunks_anchor_on_frame0(net):
    """batch=3 over 5 frames: chunk [0,1,2] as is; chunk [0,3,4] rescaled by frame 0's median depth."""
    H, W = da3_input_size(70, 112, RES)
    frames = _frames(5, H, W, seed=2)
    steps = []
    geo = estimate_depth(DA3Model(net, process_res=RES), frames, batch=3, static_camera=False,
                         on_step=lambda d, t: steps.append((d, t)))
    assert steps == [(3, 5), (5, 5)]
    a, b = _direct(net, frames[[0, 1, 2]]), _direct(net, frames[[0, 3, 4]])
    s = float(a["depth"][0].median() / b["depth"][0].median())
    torch.testing.assert_close(geo.depth[:3], a["depth"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(geo.depth[3:], b["depth"][1:] * s, rtol=1e-4, atol=1e-5)
    from depth_anything_3.utils.geometry import affine_inverse

    E = torch.cat([b["extrinsics"], torch.tensor([[[0, 0, 0, 1.0]]]).expand(3, 1, 4)], dim=1)
    rel = E @ affine_inverse(E[0])
    rel[:, :3, 3] *= s
    torch.testing.assert_close(geo.w2c[3:], rel[1:], rtol=0, atol=1e-5)


class _Holes(torch.nn.Module):
    """Wraps DA3 and makes the top two rows of every depth map NaN and one pixel -inf."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, **kw):
        out = self.net(x, **kw)
        out.depth[..., :2, :] = float("nan")
        out.depth[..., 5, 5] = float("-inf")
        return out


def test_nan_depth_masked_and_warned(net):
    frames = _frames(2, 56, 84)
    with pytest.warns(UserWarning, match="NaN/inf"):
        geo = estimate_depth(DA3Model(_Holes(net), process_res=84), frames, batch=2)
    assert bool(torch.isnan(geo.depth[:, 0]).all()) and bool((geo.conf[:, 0] == 0).all())
    assert bool(torch.isnan(geo.depth[:, 5, 5]).all())
    assert bool(torch.isfinite(geo.depth[:, 10:]).all()) and np.isfinite(geo.scale) and geo.scale > 0
    prev = depth_preview(geo)
    assert prev.shape == (2, 56, 84, 3) and bool((prev[:, 0] == 0).all())


def test_depth_preview_near_is_bright():
    d = torch.linspace(1, 10, 40)[None, None, :].expand(2, 8, 40).clone()
    d[:, 0, 0] = float("nan")
    geo = Geometry.static(d, torch.eye(3))
    prev = depth_preview(geo)
    assert prev.shape == (2, 8, 40, 3) and float(prev.min()) >= 0 and float(prev.max()) <= 1
    lum = prev[0, 4] @ torch.tensor([0.299, 0.587, 0.114])
    assert bool((lum[1:] <= lum[:-1] + 1e-6).all()) and float(lum[0] - lum[-1]) > 0.5
    assert torch.equal(prev[:, 0, 0], torch.zeros(2, 3))


@pytest.mark.slow
def test_load_from_folder_reproduces_in_memory(net, tmp_path):
    folder = install_da3(tmp_path / "models")
    assert folder == tmp_path / "models" / "depth_anything_3" / "da3-small"
    model = load_da3(folder, process_res=RES)
    assert model.name == "da3-small"
    frames = _frames(2, 64, 96, seed=4)
    a = estimate_depth(DA3Model(net, process_res=RES), frames, batch=2, static_camera=False)
    b = estimate_depth(model, frames, batch=2, static_camera=False)
    for x, y in [(a.depth, b.depth), (a.conf, b.conf), (a.K, b.K), (a.w2c, b.w2c)]:
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_weight_errors(tmp_path):
    from safetensors.torch import load_file, save_file

    empty = tmp_path / "depth_anything_3" / "da3-small"
    empty.mkdir(parents=True)
    with pytest.raises(ValueError, match=r"da3-small.*model\.safetensors.*config\.json"):
        load_da3(empty)
    src = fixture_da3_folder()
    # wrong architecture for these weights
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "model.safetensors").symlink_to(src / "model.safetensors")
    (wrong / "config.json").write_text(json.dumps({"model_name": "da3-base"}))
    with pytest.raises(ValueError, match=r"do not match the 'da3-base' network.*wrong-shape"):
        load_da3(wrong)
    # a key missing and one with the wrong shape
    sd = load_file(str(src / "model.safetensors"))
    sd.pop("head.scratch.output_conv1.weight")
    sd["cam_dec.fc_t.bias"] = torch.zeros(4)
    bad = tmp_path / "bad"
    bad.mkdir()
    save_file(sd, str(bad / "model.safetensors"))
    shutil.copy(src / "config.json", bad / "config.json")
    with pytest.raises(ValueError, match=r"1 missing, 0 unexpected, 1 wrong-shape"):
        load_da3(bad)
    # not safetensors at all, and an unknown registry name
    (bad / "model.safetensors").write_bytes(b"garbage" * 10)
    with pytest.raises(ValueError, match="cannot be read as safetensors"):
        load_da3(bad)
    (bad / "config.json").write_text(json.dumps({"model_name": "da3-tiny"}))
    with pytest.raises(ValueError, match="da3-tiny.*registry"):
        load_da3(bad)


def test_bad_frames(net):
    m = DA3Model(net, process_res=RES)
    with pytest.raises(ValueError, match="frames"):
        estimate_depth(m, torch.zeros(2, 64, 96))
    with pytest.raises(ValueError, match="batch must be >= 2"):
        estimate_depth(m, torch.zeros(3, 64, 96, 3), batch=1)


# ---- nodes (in-process host) --------------------------------------------------------------------


def test_da3_nodes(comfy_host, net):
    install_da3(comfy_host.models_dir)
    loader, depth = comfy_host.node("Full4DDA3Loader"), comfy_host.node("Full4DDA3Depth")
    assert loader.validate_inputs(model="da3-small") is True
    msg = loader.validate_inputs(model="da3-huge")
    assert "models/depth_anything_3/da3-huge/" in msg and "model.safetensors" in msg and "da3-small" in msg
    (model,) = loader.execute(model="da3-small").result
    assert model.name == "da3-small"
    frames = _frames(3, 64, 96, seed=6)
    geo, preview = depth.execute(da3_model=model, images=frames, static_camera=True, batch=2,
                                 process_res=RES).result
    ref = estimate_depth(DA3Model(net, process_res=RES), frames, batch=2, static_camera=True)
    torch.testing.assert_close(geo.depth, ref.depth, rtol=0, atol=0)
    assert torch.equal(geo.w2c, ref.w2c) and geo.scale == ref.scale
    torch.testing.assert_close(preview, depth_preview(ref), rtol=0, atol=0)
    assert preview.shape == (3, 64, 96, 3)


@pytest.mark.server
@pytest.mark.slow
def test_da3_nodes_in_a_prompt(comfy_host):
    """Full4DLoadVideo -> DA3 loader + depth -> SaveImage of the preview, through the host's executor."""
    from media import synthetic_video

    install_da3(comfy_host.models_dir)
    synthetic_video(comfy_host.input_dir / "full4d_depth.mp4", T=5, H=64, W=96)
    prompt = {
        "1": {"class_type": "Full4DLoadVideo", "inputs": {"file": "full4d_depth.mp4", "num_frames": 5, "start": 0,
                                                           "stride": 1, "width": 96, "height": 64}},
        "2": {"class_type": "Full4DDA3Loader", "inputs": {"model": "da3-small"}},
        "3": {"class_type": "Full4DDA3Depth", "inputs": {"da3_model": ["2", 0], "images": ["1", 0],
                                                          "static_camera": False, "batch": 3, "process_res": RES}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 1], "filename_prefix": "full4d_depth"}},
    }
    out = comfy_host.run(prompt)
    assert len(out["4"]["images"]) == 5
    (geo,), _ = comfy_host.outputs("3")
    assert geo.depth.shape == (5, 64, 96) and torch.equal(geo.w2c[0], torch.eye(4)) and geo.scale > 0
