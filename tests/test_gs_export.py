"""Export: PLY read back by plyfile (independent reader); 4D safetensors round-trip bit-exact."""

import math

import numpy as np
import pytest
import torch
from plyfile import PlyData

from comfyui_full4d.gaussians import Gaussians, HexPlane, HexPlaneConfig, Scene4D
from comfyui_full4d.gaussians.export import export_frames, export_scene, load_scene4d, save_scene4d, write_ply


def _scene(n=50, degree=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    K = (degree + 1) ** 2
    gs = Gaussians(means=torch.randn(n, 3, generator=g), quats=torch.randn(n, 4, generator=g),
                   log_scales=torch.randn(n, 3, generator=g) - 3, opacity_logits=torch.randn(n, generator=g),
                   sh_dc=torch.randn(n, 1, 3, generator=g), sh_rest=torch.randn(n, K - 1, 3, generator=g))
    hp = HexPlane(HexPlaneConfig(feature_dim=4, base_res=8, time_res=4, multires=(1, 2), hidden=16))
    with torch.no_grad():
        for p in hp.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)  # non-identity deformation
    return Scene4D(gs, hp, (0.0, 1.0), torch.tensor([[-2.0, -2, -2], [2, 2, 2]]), degree)


@pytest.mark.parametrize("degree", [0, 1, 3])
def test_ply_fields_counts_values(tmp_path, degree):
    s = _scene(37, degree)
    g = s.gaussians
    path = write_ply(str(tmp_path / "a.ply"), g.means, g.quats, g.log_scales, g.opacity_logits, g.sh)
    ply = PlyData.read(path)
    assert ply.text is False and ply.byte_order == "<"
    v = ply["vertex"]
    names = [p.name for p in v.properties]
    n_rest = 3 * ((degree + 1) ** 2 - 1)
    assert names == (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
                     + [f"f_rest_{i}" for i in range(n_rest)]
                     + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
    assert v.count == 37
    np.testing.assert_array_equal(np.stack([v["x"], v["y"], v["z"]], 1), g.means.numpy())
    np.testing.assert_array_equal(v["opacity"], g.opacity_logits.numpy())
    np.testing.assert_array_equal(np.stack([v[f"rot_{i}"] for i in range(4)], 1), g.quats.numpy())
    np.testing.assert_array_equal(np.stack([v[f"scale_{i}"] for i in range(3)], 1), g.log_scales.numpy())
    np.testing.assert_array_equal(np.stack([v[f"f_dc_{i}"] for i in range(3)], 1), g.sh_dc[:, 0].numpy())
    if degree:
        K1 = (degree + 1) ** 2 - 1
        # 3DGS layout: f_rest_{c*K1 + k} = coefficient k+1 of channel c
        for c in range(3):
            for k in (0, K1 - 1):
                np.testing.assert_array_equal(v[f"f_rest_{c * K1 + k}"], g.sh_rest[:, k, c].numpy())


def test_export_frames_are_deformed(tmp_path):
    s = _scene(20)
    paths = export_frames(s, torch.tensor([0.0, 1.0]), str(tmp_path / "ply"))
    assert len(paths) == 2
    a, b = (PlyData.read(p)["vertex"] for p in paths)
    m0, _, sc0, _, _ = s.at(0.0)
    np.testing.assert_allclose(np.stack([a["x"], a["y"], a["z"]], 1), m0.detach().numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.stack([a[f"scale_{i}"] for i in range(3)], 1), torch.log(sc0).detach().numpy(),
                               atol=1e-5)
    assert not np.allclose(a["x"], b["x"])  # the field moves Gaussians over time
    assert not list(tmp_path.glob("ply/*.tmp*"))


def test_export_frames_record_the_scale(tmp_path):
    """The PLYs are metric: each records the scene's scale (metres per rig unit) as a header comment that an
    independent reader (plyfile) sees; a scene without one writes no comment."""
    s = _scene(10)
    s.extras["scale"] = 2.1847710609436035
    paths = export_frames(s, torch.tensor([0.0, 1.0]), str(tmp_path / "metric"))
    for p in paths:
        ply = PlyData.read(p)
        assert ply.comments == ["full4d_scale 2.1847710609436035"]
        assert float(ply.comments[0].split()[1]) == s.extras["scale"]  # repr: the exact float back
    del s.extras["scale"]
    assert PlyData.read(export_frames(s, [0.0], str(tmp_path / "units"))[0]).comments == []


def test_scene4d_roundtrip_bit_exact(tmp_path):
    s = _scene(40)
    path = save_scene4d(s, str(tmp_path / "scene.safetensors"))
    r = load_scene4d(path)
    for k, v in s.gaussians.as_dict().items():
        assert torch.equal(getattr(r.gaussians, k), v), k
    for (k, a), (k2, b) in zip(s.hexplane.state_dict().items(), r.hexplane.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    assert r.time_range == s.time_range and torch.equal(r.aabb, s.aabb) and r.sh_degree == 3
    assert r.hexplane.config == s.hexplane.config
    for t in (0.0, 0.37):
        for x, y in zip(s.at(t), r.at(t)):
            assert torch.equal(x, y)


def test_load_scene4d_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="no file"):
        load_scene4d(str(tmp_path / "missing.safetensors"))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a safetensors"):
        load_scene4d(str(junk))
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other), metadata={"format": "something"})
    with pytest.raises(ValueError, match="not a Full4D 4D scene"):
        load_scene4d(str(other))


def test_export_scene_folder_progress(tmp_path):
    s, steps = _scene(30), []
    files = export_scene(s, str(tmp_path), "sub/scene", 3, on_step=lambda d, t: steps.append((d, t)))
    assert files == [f"sub/scene_00000/frame_{i:04d}.ply" for i in range(3)] + ["sub/scene_00000/scene4d.safetensors"]
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]  # one step per file written
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["scene_00000"]  # no staging folder left
    assert export_scene(s, str(tmp_path), "sub/scene", 1)[0] == "sub/scene_00001/frame_0000.ply"  # next number
    for bad in ("", "/abs/x", "../out", "a/../../b", "a:b"):
        with pytest.raises(ValueError, match="filename_prefix"):
            export_scene(s, str(tmp_path), bad, 1)


class _Cancel(Exception):
    pass


@pytest.mark.parametrize("k", [0, 1, 3, 4])  # 4 = after the last PLY and the 4D file, before the rename
def test_export_scene_cancel_leaves_nothing(tmp_path, k):
    (tmp_path / "keep.txt").write_text("not ours")

    def on_step(done, total):
        if done > k:
            raise _Cancel

    with pytest.raises(_Cancel):
        export_scene(_scene(30), str(tmp_path), "full4d/scene", 4, on_step=on_step)
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert left == ["full4d", "keep.txt"], left  # no PLY, no 4D file, no staging folder, no *.tmp*


def test_export_frames_cancel_removes_its_files(tmp_path):
    def on_step(done, total):
        if done == 2:
            raise _Cancel

    with pytest.raises(_Cancel):
        export_frames(_scene(10), torch.tensor([0.0, 0.5, 1.0]), str(tmp_path), on_step=on_step)
    assert not list(tmp_path.iterdir())
