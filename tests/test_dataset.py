"""Dataset folder format: round trip from the synthetic generator, validation errors naming the
file and field, clip sampling, relative cameras, cached projection renders vs ground truth."""

import json
import random
import shutil

import pytest
import torch

from comfyui_full4d.training import cli, dataset
from comfyui_full4d.media.synthetic import make_capture


@pytest.fixture(scope="module")
def capture():
    return make_capture(num_views=3, num_frames=9, height=32, width=48, seed=0)


@pytest.fixture()
def scene(tmp_path, capture):
    return dataset.write_synthetic_scene(tmp_path / "scene", capture)


def test_roundtrip(scene, capture):
    assert scene.num_views == 3 and scene.num_frames == 9
    for v in range(3):
        frames = dataset.read_video(scene.videos[v])
        assert (frames - capture.views[v]).abs().max() <= 0.5 / 255 + 1e-6  # lossless up to 8-bit rounding
    metric = capture.rig.metric(capture.scale)
    torch.testing.assert_close(scene.cameras.R, metric.R)
    torch.testing.assert_close(scene.cameras.t, metric.t)
    assert dataset.read_video(scene.videos[0], 4, 5).shape == (5, 32, 48, 3)


def _edit(root, fn):
    path = root / "cameras.json"
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))


def test_rejects_unequal_frame_counts(scene, capture):
    dataset.write_video(scene.root / "cam01.mp4", capture.views[1][:7])
    with pytest.raises(ValueError, match=r"cameras.json: cameras\[\*\].video: unequal frame counts.*cam01.mp4: 7"):
        dataset.load_scene(scene.root)


def test_rejects_missing_camera(scene):
    (scene.root / "cam02.mp4").unlink()
    with pytest.raises(ValueError, match=r"cameras.json: cameras\[2\].video: camera 'cam02'.*missing"):
        dataset.load_scene(scene.root)


def test_rejects_video_without_camera_entry(scene):
    _edit(scene.root, lambda m: m["cameras"].pop(2))
    with pytest.raises(ValueError, match=r"cameras.json: cameras: videos \['cam02.mp4'\] have no camera entry"):
        dataset.load_scene(scene.root)


def test_rejects_missing_field(scene):
    _edit(scene.root, lambda m: m["cameras"][1].pop("K"))
    with pytest.raises(ValueError, match=r"cameras\[1\].K: is missing"):
        dataset.load_scene(scene.root)


def test_rejects_non_orthonormal_rotation(scene):
    def scale_r(m):
        m["cameras"][1]["R"] = [[1.1 * x for x in row] for row in m["cameras"][1]["R"]]
    _edit(scene.root, scale_r)
    with pytest.raises(ValueError, match=r"cameras.json: cameras\[1\].R: camera 'cam01': rotation is not orthonormal"):
        dataset.load_scene(scene.root)

    def reflect(m):
        m["cameras"][1]["R"] = [[1, 0, 0], [0, 1, 0], [0, 0, -1]]
    _edit(scene.root, reflect)
    with pytest.raises(ValueError, match=r"cameras\[1\].R.*det"):
        dataset.load_scene(scene.root)


def test_rejects_mixed_resolutions(scene, capture):
    small = torch.nn.functional.interpolate(capture.views[2].permute(0, 3, 1, 2), size=(16, 24)).permute(0, 2, 3, 1)
    dataset.write_video(scene.root / "cam02.mp4", small)

    def fix_size(m):
        m["cameras"][2]["width"], m["cameras"][2]["height"] = 24, 16
    with pytest.raises(ValueError, match=r"cameras\[2\].width/height: camera 'cam02' says 48x32 but cam02.mp4 is 24x16"):
        dataset.load_scene(scene.root)
    _edit(scene.root, fix_size)
    with pytest.raises(ValueError, match=r"cameras.json: cameras\[\*\].width/height: mixed resolutions"):
        dataset.load_scene(scene.root)


def test_draw_clip_sources_targets_and_lengths():
    with pytest.raises(ValueError, match="4k\\+1"):
        dataset.draw_clip(9, 3, 4, random.Random(0))
    with pytest.raises(ValueError, match="exceeds"):
        dataset.draw_clip(9, 3, 13, random.Random(0))
    sources, starts, orders = set(), set(), set()
    for seed in range(60):
        start, order = dataset.draw_clip(9, 3, 5, random.Random(seed))
        assert sorted(order) == [0, 1, 2] and 0 <= start <= 4
        sources.add(order[0]), starts.add(start), orders.add(tuple(order))
    assert sources == {0, 1, 2} and starts == set(range(5)) and len(orders) == 6  # all permutations occur
    start, order = dataset.draw_clip(9, 6, 5, random.Random(1), max_views=3)
    assert len(order) == 3 and len(set(order)) == 3


@pytest.fixture()
def projection():
    return pytest.importorskip("comfyui_full4d.geometry.projection")


def test_clip_renders_cached_and_match_ground_truth(scene, capture, projection):
    clip = dataset.sample_clip(scene, 5, random.Random(3))
    L = 5
    assert clip.frames.shape == (3, L, 32, 48, 3)
    assert sorted(clip.views) == [0, 1, 2]
    src, start = clip.views[0], clip.start
    # frames are the right videos at the right times
    for i, v in enumerate(clip.views):
        assert (clip.frames[i] - capture.views[v, start:start + L]).abs().max() < 3 / 255
    # relative cameras: source is the identity, others = w2c_v inv(w2c_src), t in units of the scale
    torch.testing.assert_close(clip.cameras.R[0], torch.eye(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(clip.cameras.t[0], torch.zeros(3), atol=1e-5, rtol=0)
    expect_scale = float(capture.depth[src, start].median())
    assert clip.scale == pytest.approx(expect_scale, rel=1e-4)
    metric = capture.rig.metric(capture.scale)
    for i, v in enumerate(clip.views):
        # centre of camera v seen from the source camera, in scene units
        c_src = metric.R[src] @ metric.center[v] + metric.t[src]
        torch.testing.assert_close(clip.cameras.center[i], c_src / clip.scale, atol=1e-4, rtol=1e-4)
    # projection renders agree with the true target views where valid (exact GT depth)
    assert clip.masks[0].all()
    for i in range(1, 3):
        m = clip.masks[i]
        assert m.sum() > 100  # (targets 120 and 240 degrees round the ring: little overlap)
        err = (clip.renders[i] - clip.frames[i]).abs().mean(-1)[m]
        assert err.median() < 0.15
    files = list((scene.root / "cache").glob("clip_*.safetensors"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    again = dataset.sample_clip(scene, 5, random.Random(3))
    assert files[0].stat().st_mtime_ns == stamp  # read from the cache, not rewritten
    torch.testing.assert_close(again.renders, clip.renders)
    assert torch.equal(again.masks, clip.masks)


def test_clip_renders_take_the_point_radius_and_cache_it_apart(scene, projection):
    """``point_radius`` reaches the projection (the same renders as ``projection_renders`` with that radius, more
    pixels covered than radius 0) and caches apart from radius 0's renders."""
    r0 = dataset.sample_clip(scene, 5, random.Random(3))
    r1 = dataset.sample_clip(scene, 5, random.Random(3), point_radius=1)
    assert r1.views == r0.views and len(list((scene.root / "cache").glob("clip_*.safetensors"))) == 2
    assert int(r1.masks[1:].sum()) > int(r0.masks[1:].sum())
    fresh = dataset.sample_clip(scene, 5, random.Random(3), point_radius=1, cache=False)
    torch.testing.assert_close(r1.renders, fresh.renders)
    assert torch.equal(r1.masks, fresh.masks)
    assert not torch.equal(r1.masks, r0.masks)


def test_missing_depth_needs_depth_fn(scene, projection):
    (scene.root / "depth.safetensors").unlink()
    with pytest.raises(ValueError, match="no depth.safetensors and no depth_fn"):
        dataset.sample_clip(scene, 5, random.Random(0))
    calls = []

    def const_depth(frames):
        calls.append(frames.shape)
        return torch.full(frames.shape[:3], 2.0)
    clip = dataset.sample_clip(scene, 5, random.Random(0), depth_fn=const_depth)
    assert calls == [(5, 32, 48, 3)] and clip.scale == pytest.approx(2.0)
    shutil.rmtree(scene.root / "cache")


def test_cli_synthetic_and_validate(tmp_path, capsys):
    assert cli.main(["synthetic", str(tmp_path / "ds"), "--scenes", "2", "--views", "2", "--frames", "5",
                         "--height", "32", "--width", "48"]) == 0
    assert cli.main(["validate", str(tmp_path / "ds")]) == 0
    out = capsys.readouterr().out
    assert out.count("ok: ") == 2 and "2 cameras, 5 frames, 48x32" in out
    assert [s.root.name for s in dataset.find_scenes(tmp_path / "ds")] == ["scene0000", "scene0001"]
    with pytest.raises(ValueError, match="no scene folders"):
        dataset.find_scenes(tmp_path)


def test_read_video_seeks_to_the_right_frames(tmp_path):
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(40, 16, 32, 3, generator=g)
    dataset.write_video(tmp_path / "v.mp4", frames, fps=16)
    full = dataset.read_video(tmp_path / "v.mp4")
    assert full.shape == (40, 16, 32, 3)
    for start in (0, 5, 16, 17, 33, 35):
        torch.testing.assert_close(dataset.read_video(tmp_path / "v.mp4", start, 5), full[start:start + 5])
    with pytest.raises(ValueError, match="ends earlier"):
        dataset.read_video(tmp_path / "v.mp4", 38, 5)


def test_rejects_bad_intrinsics_and_unreadable_video(scene):
    _edit(scene.root, lambda m: m["cameras"][0].__setitem__("K", [[-50, 0, 24], [0, 50, 16], [0, 0, 1]]))
    with pytest.raises(ValueError, match=r"cameras\[0\].K: camera 'cam00': K must be"):
        dataset.load_scene(scene.root)
    _edit(scene.root, lambda m: m["cameras"][0].__setitem__("K", [[50, 0, 24], [0, 50, 16], [0, 0, 1]]))
    (scene.root / "cam01.mp4").write_bytes(b"not a video at all")
    with pytest.raises(ValueError, match=r"cameras\[1\].video: cam01.mp4 cannot be read as a video"):
        dataset.load_scene(scene.root)
