"""Full4DSave4DGS's per-frame formats: ply by our own writer (any host), spz / ksplat by core's splat writers
(0.33+). Each frame's file, read back by core's File3DToSplat, gives that frame's Gaussians (``Scene4D.at``) within
the format's quantisation; on 0.3.75 a core-only format is refused with a message that says what to do."""

from __future__ import annotations

import pytest
import torch

from comfyui_full4d.gaussians.export import export_frames
from test_gs_export import _scene
from test_splat import CORE_SPLAT, assert_round_trip, needs_core_splat


def test_export_frames_writes_what_the_frame_writer_returns(tmp_path):
    s = _scene(10, 1, seed=3)
    seen = []

    def frame_bytes(*tensors):
        seen.append(tensors)
        return f"frame {len(seen)}".encode()

    paths = export_frames(s, [0.0, 1.0], str(tmp_path), ext="spz", frame_bytes=frame_bytes)
    assert [p.split("/")[-1] for p in paths] == ["frame_0000.spz", "frame_0001.spz"]
    assert [open(p, "rb").read() for p in paths] == [b"frame 1", b"frame 2"]
    with torch.no_grad():
        means, quats, scales, op, sh = s.at(1.0)
    for got, want in zip(seen[1], (means, scales, quats, op[:, None], sh)):  # positions, scales, rotations, ...
        torch.testing.assert_close(got, want)


@pytest.mark.server
def test_core_only_formats_are_refused_clearly_without_core_splat(comfy_host):
    node = comfy_host.node("Full4DSave4DGS")
    assert node.validate_inputs(format="ply") is True
    assert "not one of" in node.validate_inputs(format="obj")
    if CORE_SPLAT:
        assert node.validate_inputs(format="spz") is True
        return
    for fmt in ("spz", "ksplat"):
        msg = node.validate_inputs(format=fmt)
        assert msg.startswith("format:") and "0.33" in msg and "choose ply" in msg
    before = sorted(comfy_host.output_dir.rglob("*")) if comfy_host.output_dir.exists() else []
    with pytest.raises(ValueError, match="choose ply"):
        node.execute(scene4d=_scene(5, 0), filename_prefix="no_core/scene", num_frames=2, format="spz")
    assert (sorted(comfy_host.output_dir.rglob("*")) if comfy_host.output_dir.exists() else []) == before


@needs_core_splat
@pytest.mark.server
@pytest.mark.parametrize("fmt", ["ply", "spz", "ksplat"])
def test_each_frame_file_reads_back_through_cores_reader(comfy_host, fmt):
    from comfy_api.latest import Types

    s = _scene(40, 3, seed=6)
    with torch.no_grad():  # colours inside [0, 1]: the 8-bit formats clip what is outside
        s.gaussians.sh_dc.clamp_(-1.5, 1.5)
    out = comfy_host.node("Full4DSave4DGS").execute(scene4d=s, filename_prefix=f"export_{fmt}/scene",
                                                    num_frames=3, format=fmt)
    files = out.ui.as_dict()["text"][0].split("\n")
    frames = [f for f in files if not f.endswith(".safetensors")]
    assert [f.split("/")[-1] for f in frames] == [f"frame_{i:04d}.{fmt}" for i in range(3)]
    reader = comfy_host.node("File3DToSplat")
    for f, t in zip(frames, (0.0, 0.5, 1.0)):
        back = reader.execute(model_3d=Types.File3D(str(comfy_host.output_dir / f))).result[0]
        with torch.no_grad():
            assert_round_trip(back, s.at(t), fmt)
