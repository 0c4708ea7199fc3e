"""Video loading: round trip through H.264, Wan's 4k+1 rule, stride/start/crop, streaming, bad inputs."""

from __future__ import annotations

import io
import warnings

import pytest
import torch

from comfyui_full4d.media.video import (default_size, load_video, prepare_frames, resize_center_crop, save_video,
                                  snap_frame_count)
from media import CLIPS, sample_video, synthetic_frames, synthetic_video


class CountingReader(io.RawIOBase):
    """A file object that counts the bytes the decoder reads."""

    def __init__(self, path):
        self.f = open(path, "rb")
        self.bytes_read = 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def seek(self, *args):
        return self.f.seek(*args)

    def tell(self):
        return self.f.tell()

    def readinto(self, b):
        data = self.f.read(len(b))
        b[: len(data)] = data
        self.bytes_read += len(data)
        return len(data)

    def close(self):
        self.f.close()
        super().close()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """17 synthetic frames (64x96) saved as H.264 at 12 fps, and the frames themselves."""
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    frames = synthetic_frames(17, 64, 96, seed=1)
    save_video(frames, path, 12.0)
    return path, frames


def test_snap_rule():
    assert [snap_frame_count(n) for n in range(1, 11)] == [1, 1, 1, 1, 5, 5, 5, 5, 9, 9]
    assert snap_frame_count(81) == 81 and snap_frame_count(84) == 81
    with pytest.raises(ValueError, match="num_frames"):
        snap_frame_count(0)


def test_round_trip_close_to_original(clip):
    path, frames = clip
    out, fps = load_video(path, num_frames=17, size=(64, 96))
    assert out.shape == (17, 64, 96, 3) and out.dtype == torch.float32 and fps == pytest.approx(12.0)
    err = (out - frames).abs()
    assert float(err.mean()) < 0.02 and float(err.max()) < 0.15  # H.264 + yuv420p chroma subsampling
    # frames are in the right order: each decoded frame is closest to its own original
    d = ((out[:, None] - frames[None]) ** 2).mean(dim=(2, 3, 4))
    assert torch.equal(d.argmin(dim=1), torch.arange(17))


def test_snapping_warns_and_counts(clip):
    path, frames = clip
    with pytest.warns(UserWarning, match="snapped down to 9"):
        out, _ = load_video(path, num_frames=11, size=(64, 96))
    assert out.shape[0] == 9
    out, _ = load_video(path, num_frames=11, size=(64, 96), snap=False)
    assert out.shape[0] == 11
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0 = all: 17 frames are already 4k+1, no warning
        out, _ = load_video(path, num_frames=0, size=(64, 96))
    torch.testing.assert_close(out, load_video(path, num_frames=17, size=(64, 96))[0], rtol=0, atol=0)
    with pytest.warns(UserWarning, match="14 available frames.*snapped down to 13"):
        out, _ = load_video(path, num_frames=0, start=3, size=(64, 96))
    assert out.shape[0] == 13


def test_stride_and_start_pick_the_right_frames(clip):
    path, frames = clip
    full, _ = load_video(path, num_frames=17, size=(64, 96))
    out, fps = load_video(path, num_frames=5, start=2, stride=3, size=(64, 96))
    assert fps == pytest.approx(4.0)  # 12 fps / stride 3
    torch.testing.assert_close(out, full[2:15:3], rtol=0, atol=0)
    # the in-memory path selects identically
    mem, fps2 = prepare_frames(full, 12.0, num_frames=5, start=2, stride=3, size=(64, 96))
    torch.testing.assert_close(mem, out, rtol=0, atol=0)
    assert fps2 == fps


def test_resize_center_crop_matches_manual_crop():
    frames = synthetic_frames(2, 64, 128, seed=3)
    # same scale (no resize): a pure centre crop
    out = resize_center_crop(frames, (64, 96))
    torch.testing.assert_close(out, frames[:, :, 16:112])
    # 2x down then crop of an affine ramp: any normalised symmetric filter keeps an affine image affine, so
    # output pixel (i, j) holds the ramp at its centre in source pixels, ((j + 16) * 2 + 1, i * 2 + 1)
    H, W = 64, 128
    ramp = torch.stack(torch.meshgrid((torch.arange(H) + 0.5) / H, (torch.arange(W) + 0.5) / W, indexing="ij")[::-1]
                       + (torch.full((H, W), 0.5),), dim=-1)[None]
    out = resize_center_crop(ramp, (32, 32))
    i, j = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    ref = torch.stack([((j + 16) * 2 + 1) / W, (i * 2 + 1) / H, torch.full_like(i, 0.5)], dim=-1)
    torch.testing.assert_close(out[0, 1:-1], ref[1:-1], rtol=0, atol=1e-5)  # rows 0 / 31 touch the border


def test_default_size_from_aspect(tmp_path):
    assert default_size(272, 640) == (384, 672) and default_size(640, 272) == (672, 384)
    assert default_size(100, 100) == (384, 672)
    portrait = synthetic_video(tmp_path / "portrait.mp4", T=5, H=96, W=64)
    out, _ = load_video(portrait, num_frames=5)
    assert out.shape == (5, 672, 384, 3)
    out, _ = load_video(portrait, num_frames=5, size=(64, 32))
    assert out.shape == (5, 64, 32, 3)


def test_real_clips_load():
    for name, (h, w, n, fps) in CLIPS.items():
        out, got_fps = load_video(sample_video(name), num_frames=9)
        assert out.shape == (9, 384, 672, 3)
        assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0 and float(out.std()) > 0.05
        if fps is not None:
            assert got_fps == pytest.approx(fps)
    out, _ = load_video(sample_video("bikes.mp4"), num_frames=5, size=(256, 608))
    assert out.shape == (5, 256, 608, 3)


def test_streaming_stops_early():
    """Loading 5 frames of the 250-frame clip reads a small part of the file; loading all reads it all."""
    path = sample_video("bikes.mp4")
    size = path.stat().st_size
    r = CountingReader(path)
    out, _ = load_video(r, num_frames=5, size=(96, 224))
    assert out.shape[0] == 5 and r.bytes_read < 0.3 * size
    r = CountingReader(path)
    with pytest.warns(UserWarning, match="10 available frames"):
        out, _ = load_video(r, num_frames=0, stride=25, size=(96, 224))
    assert out.shape[0] == 9 and r.bytes_read >= size  # 250 frames / 25 = 10 -> snapped to 9


def test_progress_once_per_frame(clip):
    calls = []
    load_video(clip[0], num_frames=5, size=(64, 96), on_step=lambda d, t: calls.append((d, t)))
    assert calls == [(i, 5) for i in range(1, 6)]


def test_save_video_is_atomic_and_checks_input(tmp_path):
    with pytest.raises(ValueError, match="even"):
        save_video(torch.zeros(2, 63, 64, 3), tmp_path / "odd.mp4", 10)
    with pytest.raises(ValueError, match="fps"):
        save_video(torch.zeros(2, 64, 64, 3), tmp_path / "x.mp4", 0)
    save_video(torch.zeros(2, 64, 64, 3), tmp_path / "ok.mp4", 10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.mp4"]  # no temp file left


def test_bad_inputs(tmp_path, clip):
    path = clip[0]
    with pytest.raises(ValueError, match="no such file"):
        load_video(tmp_path / "missing.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load_video(tmp_path / "empty.mp4")
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 50)
    with pytest.raises(ValueError, match="text.mp4.*not a readable video"):
        load_video(tmp_path / "text.mp4")
    data = path.read_bytes()
    (tmp_path / "trunc.mp4").write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match="trunc.mp4"):
        load_video(tmp_path / "trunc.mp4", num_frames=17, size=(64, 96))
    one = save_video(synthetic_frames(1, 64, 96), tmp_path / "one.mp4", 10)
    with pytest.raises(ValueError, match="1 frame.*at least 2"):
        load_video(one, num_frames=1)
    with pytest.raises(ValueError, match=r"17 frames.*start=2 with stride=2 only 8 can be taken.*num_frames <= 5"):
        load_video(path, num_frames=9, start=2, stride=2, size=(64, 96))
    with pytest.raises(ValueError, match="start=40 is beyond the end.*17 frames"):
        load_video(path, num_frames=5, start=40, size=(64, 96))
    with pytest.raises(ValueError, match="multiples of 32"):
        load_video(path, size=(60, 96))
    with pytest.raises(ValueError, match="stride"):
        load_video(path, stride=0)


# ---- node (in-process host) ---------------------------------------------------------------------


def test_load_video_node(comfy_host, clip):
    import shutil

    from comfy_api.latest import InputImpl

    path, _ = clip
    shutil.copy(path, comfy_host.input_dir / "full4d_clip.mp4")
    cls = comfy_host.node("Full4DLoadVideo")
    ref, fps = load_video(path, num_frames=5, start=1, stride=2, size=(64, 96))
    images, got_fps, count = cls.execute(file="full4d_clip.mp4", num_frames=5, start=1, stride=2, width=96,
                                         height=64).result
    torch.testing.assert_close(images, ref, rtol=0, atol=0)
    assert got_fps == pytest.approx(fps) and count == 5
    # a core VIDEO takes precedence over the file: streamed from a file, or from in-memory components
    other = synthetic_video(comfy_host.input_dir / "full4d_other.mp4", T=9, H=64, W=96, seed=5)
    images, _, _ = cls.execute(file="full4d_clip.mp4", num_frames=5, start=0, stride=1, width=96, height=64,
                               video=InputImpl.VideoFromFile(str(other))).result
    torch.testing.assert_close(images, load_video(other, 5, size=(64, 96))[0], rtol=0, atol=0)
    comps = InputImpl.VideoFromFile(str(other)).get_components()
    images, got_fps, count = cls.execute(file="", num_frames=5, start=2, stride=1, width=0, height=0,
                                         video=InputImpl.VideoFromComponents(comps)).result
    assert images.shape == (5, 384, 672, 3) and count == 5 and got_fps == pytest.approx(12.0)
    # in-memory frames are taken as core decoded them (0.33 converts yuv420p to float itself, up to
    # 0.06 from our rgb24 decode; 0.3.75 matches it), so the reference is core's own frames
    ref = resize_center_crop(comps.images[2:7].float(), (384, 672))  # resize tested on its own above
    torch.testing.assert_close(images, ref, rtol=0, atol=1e-6)
    # checks
    assert cls.validate_inputs(file="full4d_clip.mp4") is True
    assert "Invalid video file" in cls.validate_inputs(file="nope.mp4")
    for width, height in ((96, 0), (0, 64), (100, 64)):
        with pytest.raises(ValueError, match=rf"width={width}, height={height}: set both to multiples of 32"):
            cls.execute(file="full4d_clip.mp4", num_frames=5, start=0, stride=1, width=width, height=height)
    with pytest.raises(ValueError, match="no video"):
        cls.execute(file="", num_frames=5, start=0, stride=1, width=0, height=0)
    inputs = {i.id: i for i in cls.define_schema().inputs}
    assert inputs["file"].upload == "video_upload" and inputs["video"].optional


@pytest.mark.server
def test_a_missing_video_is_reported_once(comfy_host):
    """The host's prompt validation names a missing video file once (it reports a failed validate_inputs once per
    argument that method takes; width and height made it three times)."""
    from host import PromptFailed

    prompt = {"1": {"class_type": "Full4DLoadVideo", "inputs": {"file": "no_such_clip.mp4", "num_frames": 5,
                                                               "start": 0, "stride": 1, "width": 0, "height": 0}},
              "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    with pytest.raises(PromptFailed) as err:
        comfy_host.run(prompt)
    errors = err.value.details[3]["1"]["errors"]
    assert [(e["extra_info"]["input_name"], e["details"]) for e in errors] == [
        ("file", "file - Invalid video file: no_such_clip.mp4")]


@pytest.mark.server
def test_load_video_node_in_a_prompt(comfy_host, clip):
    import shutil

    shutil.copy(clip[0], comfy_host.input_dir / "full4d_prompt.mp4")
    prompt = {
        "1": {"class_type": "LoadVideo", "inputs": {"file": "full4d_prompt.mp4"}},
        "2": {"class_type": "Full4DLoadVideo", "inputs": {"file": "full4d_prompt.mp4", "video": ["1", 0],
                                                           "num_frames": 9, "start": 0, "stride": 2,
                                                           "width": 64, "height": 32}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "full4d_video"}},
    }
    out = comfy_host.run(prompt)
    assert len(out["3"]["images"]) == 9
    images, fps, count = comfy_host.outputs("2")
    assert images[0].shape == (9, 32, 64, 3) and fps[0] == pytest.approx(6.0) and count[0] == 9


@pytest.mark.parametrize("angle", [90, -90, 180])
def test_display_rotation_applied_like_ffmpeg(tmp_path, angle):
    """A clip tagged with display rotation decodes upright, as the ffmpeg CLI (autorotate) shows it."""
    import subprocess

    import numpy as np

    ffmpeg = pytest.importorskip("imageio_ffmpeg", reason="needs the ffmpeg binary of imageio-ffmpeg").get_ffmpeg_exe()
    frames = synthetic_frames(5, 64, 96, seed=7)
    frames[:, :8, :8] = 1.0  # a corner marker
    src = save_video(frames, tmp_path / "src.mp4", 10)
    rot = tmp_path / "rot.mp4"
    subprocess.run([ffmpeg, "-y", "-loglevel", "error", "-display_rotation", str(angle), "-i", str(src),
                    "-c", "copy", str(rot)], check=True, timeout=60)
    H, W = (64, 96) if angle == 180 else (96, 64)
    raw = subprocess.run([ffmpeg, "-loglevel", "error", "-i", str(rot), "-frames:v", "1", "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], check=True, capture_output=True, timeout=60).stdout
    ref = torch.from_numpy(np.frombuffer(raw, np.uint8).reshape(H, W, 3).copy()).float() / 255
    out, _ = load_video(rot, num_frames=1, size=(H, W))
    assert float((out[0] - ref).abs().mean()) < 0.01


def test_huge_sizes_and_frame_budgets_are_refused(tmp_path, monkeypatch):
    import comfyui_full4d.media.video as video

    with pytest.raises(ValueError, match="width x height"):
        video._check_size((8192, 8192))
    monkeypatch.setattr(video, "available_memory", lambda: 2**30)  # 1 GiB available
    video.check_frame_budget(81, (384, 672))  # 0.23 GiB of frames fits in half of 1 GiB
    with pytest.raises(ValueError, match="num_frames x height x width"):
        video.check_frame_budget(1000, (384, 672))  # 2.9 GiB does not
