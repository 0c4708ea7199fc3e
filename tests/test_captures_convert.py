"""``python -m comfyui_full4d.training.cli convert``: capture folders -> training scenes (streaming,
resumable), checked against the readers' own selection, the training loader's validation, and a few
training steps of the real trainer on the converted output (tiny Wan2.2, DA3 depth as ``--da3``)."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
import torch

from comfyui_full4d.training import captures as C
from comfyui_full4d.training import cli
from comfyui_full4d.training import dataset as ds
from comfyui_full4d.training.captures.convert import ConvertOptions, convert
from comfyui_full4d.training.captures.load import read_view, resized_cameras, select
from comfyui_full4d.media.video import VideoWriter
from fixtures import captures as fx


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    cap = fx.capture()
    root = tmp_path_factory.mktemp("convert_src")
    fx.write_n3dv(root / "n3dv" / "coffee", cap)
    fx.write_recammaster(root / "multicam" / "f24_aperture5" / "scene1", cap)
    fx.write_panoptic(root / "panoptic", cap, seed=0)
    fx.write_dycheck(root / "dycheck", cap, seed=0)
    return root


def _mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_convert_all_formats_streams_valid_scenes_and_resumes(data, tmp_path):
    out = tmp_path / "out"
    opts = ConvertOptions(size=(32, 64))
    seen = []
    res = dict(convert(data, out, "auto", opts, on_step=lambda d, t: seen.append((d, t)), log=lambda s: None))
    assert res == {"dycheck": "converted", "multicam-f24_aperture5-scene1": "converted", "n3dv-coffee": "converted",
                   "panoptic": "converted"}
    assert seen[-1][0] == seen[-1][1] == 5 * (3 + 4 + 4 + 4)  # frames: DyCheck's hand-held camera is left out
    scenes = ds.find_scenes(out)
    assert [s.root.name for s in scenes] == sorted(res)
    for scene in scenes:
        cap = C.open_capture(json.loads((scene.root / "cameras.json").read_text())["source"]["source"])
        sel = select(cap, "", num_frames=0, snap=False)
        assert scene.names == sel.names and scene.num_frames == 5 and scene.fps == pytest.approx(sel.fps)
        cams = resized_cameras(sel, (32, 64))
        torch.testing.assert_close(scene.cameras.K, cams.K.float())
        torch.testing.assert_close(scene.cameras.R, cams.R.float())
        torch.testing.assert_close(scene.cameras.t, cams.t.float())
        for v, view in enumerate(sel.views):
            want = torch.stack(list(read_view(view, sel.indices, (32, 64))))
            got = ds.read_video(scene.videos[v])
            assert float((got - want).abs().max()) <= 0.5 / 255 + 1e-6  # lossless up to 8-bit rounding
    # against the synthetic truth: the Panoptic scene (distorted lenses, cm) holds metric pinhole cameras
    # and undistorted frames of the ring
    cap = fx.capture()
    pan = ds.load_scene(out / "panoptic")
    metric = cap.metric_cameras
    from comfyui_full4d.media.video import crop_intrinsics, resize_center_crop

    torch.testing.assert_close(pan.cameras.K, crop_intrinsics(metric.K.double(), (64, 64), (32, 64)).float())
    torch.testing.assert_close(pan.cameras.t, metric.t, atol=1e-5, rtol=0)
    for v in range(4):
        assert float((ds.read_video(pan.videos[v]) - resize_center_crop(cap.views[v], (32, 64))).abs().mean()) < 0.01
    # a rerun skips everything
    before = {s.root.name: _mtimes(s.root) for s in scenes}
    res = dict(convert(data, out, "auto", opts, log=lambda s: None))
    assert set(res.values()) == {"done before"}
    assert {s.root.name: _mtimes(s.root) for s in scenes} == before
    # interrupted mid-scene: cameras.json not yet written, one video missing, a stale temp file
    pan = out / "panoptic"
    (pan / "cameras.json").unlink()
    (pan / "00_02.mp4").unlink()
    (pan / ".00_03.mp4.tmp999").write_bytes(b"partial")
    res = dict(convert(data, out, "auto", opts, log=lambda s: None))
    assert res["panoptic"] == "converted" and res["n3dv-coffee"] == "done before"
    after = _mtimes(pan)
    assert after["00_00.mp4"] == before["panoptic"]["00_00.mp4"] and after["00_02.mp4"] > 0  # only the gap rewritten
    ds.load_scene(pan)
    # other options into the same folder are refused, not mixed in
    res = dict(convert(data / "panoptic", out, "panoptic", ConvertOptions(size=(32, 32)), log=lambda s: None))
    assert res["panoptic"].startswith("error:") and "converted with other options" in res["panoptic"]


def test_convert_cli_moving_cameras_and_exit_codes(data, tmp_path, capsys):
    src = tmp_path / "rc" / "f24_aperture5"
    shutil.copytree(data / "multicam" / "f24_aperture5" / "scene1", src / "scene1")
    cap = fx.capture()
    metric = cap.metric_cameras
    fx.write_recammaster(src / "scene2", cap, moving={2: fx.hand_held_poses(metric[2:3], 5)})
    argv = ["convert", str(src), str(tmp_path / "o1"), "--format", "recammaster", "--height", "32", "--width", "32"]
    assert cli.main(argv) == 1  # scene2 has a moving camera
    out = capsys.readouterr()
    assert "scene2: error:" in out.err + out.out and "cam03" in out.err + out.out
    assert (tmp_path / "o1" / "scene1" / "cameras.json").is_file()
    assert cli.main(argv[:2] + [str(tmp_path / "o2")] + argv[3:] + ["--moving", "drop"]) == 0
    assert ds.load_scene(tmp_path / "o2" / "scene2").names == ("cam01", "cam02", "cam04")
    assert "2 of 2 capture(s) converted" in capsys.readouterr().out
    assert cli.main(["convert", str(data / "panoptic"), str(tmp_path / "o3"), "--metres-per-unit", "2.5",
                    "--views", "00_01,00_03"]) == 0
    sc = ds.load_scene(tmp_path / "o3" / "panoptic")
    torch.testing.assert_close(sc.cameras.t[1], metric.t[3] * 2.5, atol=1e-5, rtol=0)
    with pytest.raises(SystemExit):
        cli.main(["convert", str(data), str(tmp_path / "o4"), "--height", "32"])


def test_video_writer_is_atomic(tmp_path):
    dest = tmp_path / "v.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(dest, 16.0, lossless=True) as w:
            w.write(torch.rand(16, 24, 3))
            raise RuntimeError("cancelled")
    assert list(tmp_path.iterdir()) == []
    with VideoWriter(dest, 16.0, lossless=True) as w:
        frames = torch.rand(3, 16, 24, 3)
        for f in frames:
            w.write(f)
        with pytest.raises(ValueError, match="frame 3 is 8x24"):
            w.write(torch.rand(8, 24, 3))
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]
    assert float((ds.read_video(dest) - frames).abs().max()) <= 0.5 / 255 + 1e-6


@pytest.mark.slow
@pytest.mark.server
def test_converted_capture_trains_with_the_trainer(data, tmp_path, comfy_host, monkeypatch, capsys):
    """The user's path: convert, then ``python -m comfyui_full4d.training.train --data OUT --da3 FOLDER``
    (source depth from DA3, here the random-init fixture; the host's full-size Wan loaders cannot
    load the tiny model, so only ``load_train_model`` is swapped, as test_train does)."""
    pytest.importorskip("comfyui_full4d.geometry.projection")
    from fixtures.da3 import fixture_da3_folder
    from fixtures.wan import load_tiny_wan, tiny_wan_vae

    from comfyui_full4d.training import train as tr
    from comfyui_full4d.host import training as ht

    out = tmp_path / "data"
    assert cli.main(["convert", str(data / "panoptic"), str(out), "--height", "64", "--width", "64"]) == 0
    ctx = torch.randn(1, 4, 4096, generator=torch.Generator().manual_seed(0))
    vae = tiny_wan_vae()
    monkeypatch.setattr(ht, "load_train_model",
                        lambda model_path, vae_path, cfg, **kw: ht.HostTrainModel(load_tiny_wan(), vae, ctx))
    argv = ["--data", str(out), "--out", str(tmp_path / "run"), "--model", "m.safetensors", "--vae", "v.safetensors",
            "--da3", str(fixture_da3_folder()), "--steps", "2", "--frames", "5", "--views", "3", "--height", "64",
            "--width", "64", "--bf16", "false", "--device", "cpu", "--lr", "1e-3"]
    assert tr.main(argv) == 0
    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert all(float(r["loss"]) > 0 and torch.isfinite(torch.tensor(float(r["loss"]))) for r in rows)
    assert (tmp_path / "run" / "adapter.safetensors").stat().st_size > 0
    assert list((out / "panoptic" / "cache").glob("clip_*.safetensors"))  # DA3 projections were made and cached
