"""Full4DLoadMultiView: its own defaults on a capture in the host's input folder (in-process host),
the errors a user sees, and Full4DLoadMultiView -> Full4DFit4DGS through the real server."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from comfyui_full4d.geometry.cameras import Rig
from comfyui_full4d.media.synthetic import SyntheticCapture
from comfyui_full4d.media.video import crop_intrinsics, resize_center_crop
from fixtures import captures as fx
from host import ROOT

pytestmark = pytest.mark.server


def _subset(cap: SyntheticCapture, views: list[int], T: int) -> SyntheticCapture:
    """Views ``views`` of the fixture capture, its frames repeated cyclically to T frames."""
    idx = [k % cap.views.shape[1] for k in range(T)]
    return SyntheticCapture(views=cap.views[views][:, idx], depth=cap.depth[views][:, idx],
                            rig=Rig(cameras=cap.rig.cameras[views], center=cap.rig.center), scale=cap.scale,
                            times=torch.linspace(0, 1, T), fps=cap.fps)


def _prompt(**inputs):
    node = {"class_type": "Full4DLoadMultiView", "inputs": {"folder": "", "format": "auto", "views": "",
                                                          "num_frames": 81, "start": 0, "stride": 1, "width": 0,
                                                          "height": 0, **inputs}}
    return {"1": node, "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 4]}}}


@pytest.mark.slow
def test_node_defaults_on_an_n3dv_capture(comfy_host):
    """Defaults: every view, 81 frames, the automatic 384x672 size; a capture of the raised camera and a
    ring camera. The grid is the videos resized; the rig is the cameras relative to the first view."""
    cap = _subset(fx.capture(), [3, 0], 81)
    shutil.rmtree(comfy_host.input_dir / "captures", ignore_errors=True)
    fx.write_n3dv(comfy_host.input_dir / "captures" / "coffee", cap)
    comfy_host.run(_prompt(folder="captures/coffee"))
    images, rig, fps, source, T = comfy_host.outputs("1")
    images, rig, fps, source, T = images[0], rig[0], fps[0], source[0], T[0]
    assert T == 81 and images.shape == (2 * 81, 384, 672, 3) and fps == pytest.approx(16.0)
    gt = torch.stack([resize_center_crop(cap.views[v], (384, 672)) for v in range(2)]).reshape(-1, 384, 672, 3)
    assert float((images - gt).abs().mean()) < 2e-3  # lossless videos, the same resize
    torch.testing.assert_close(source, images[:81])
    metric = cap.metric_cameras
    rel = metric.viewmat.double() @ torch.linalg.inv(metric.viewmat.double()[0])
    assert rig.names == ("cam00", "cam01")
    # the raised camera looks at the scene centre (0, 0, s): its depth there is the scale
    q = metric.R[0].double() @ torch.tensor([0, 0, cap.scale], dtype=torch.float64) + metric.t[0].double()
    torch.testing.assert_close(rig.cameras.t.double() * float(q[2]), rel[:, :3, 3], atol=1e-5, rtol=0)
    torch.testing.assert_close(rig.cameras.R.double(), rel[:, :3, :3], atol=1e-5, rtol=0)
    torch.testing.assert_close(rig.cameras.K, crop_intrinsics(metric.K.double(), (64, 64), (384, 672)).float())
    # the shipped fit_multiview workflow's values (its folder swapped for the fixture)
    wf = json.loads((ROOT / "workflows" / "api" / "fit_multiview_api.json").read_text())["1"]
    assert wf["class_type"] == "Full4DLoadMultiView"
    comfy_host.run(_prompt(**{**wf["inputs"], "folder": "captures/coffee"}))
    images, rig2 = comfy_host.outputs("1")[0][0], comfy_host.outputs("1")[1][0]
    T, H, W = wf["inputs"]["num_frames"], wf["inputs"]["height"], wf["inputs"]["width"]
    assert images.shape == (2 * T, H, W, 3)
    assert float((images.reshape(2, T, H, W, 3) - gt.reshape(2, 81, H, W, 3)[:, :T]).abs().mean()) < 2e-3
    torch.testing.assert_close(rig2.cameras.t, rig.cameras.t)


def test_node_errors_name_the_folder_as_given(comfy_host):
    from host import PromptFailed

    cap = fx.capture()
    shutil.rmtree(comfy_host.input_dir / "caps", ignore_errors=True)
    fx.write_n3dv(comfy_host.input_dir / "caps" / "n3", cap)
    (comfy_host.input_dir / "caps" / "empty").mkdir()
    cases = [(dict(folder="caps/nothere"), "folder='caps/nothere': no such folder in the input folder"),
             (dict(folder="../../etc"), "leads outside the input folder"),
             (dict(folder="caps/empty"), "caps/empty: not a known multi-view capture layout"),
             (dict(folder="caps/n3", num_frames=9), r"caps/n3: from start=0 with stride=1 the views hold 5 frames"),
             (dict(folder="caps/n3", views="cam00,cam07"), r"no view named 'cam07'"),
             (dict(folder="caps/n3", width=64, height=0), "set both to multiples of 32")]
    for inputs, msg in cases:
        with pytest.raises(PromptFailed) as e:
            comfy_host.run(_prompt(**inputs))
        text = str(e.value) + str(e.value.details)
        assert msg in text or __import__("re").search(msg, text), (inputs, text[:400])
        assert str(comfy_host.input_dir) not in text


@pytest.mark.slow
def test_load_multiview_to_fit4dgs_through_the_server(comfy_server):
    """A Panoptic capture (distorted lenses) -> Full4DLoadMultiView -> Full4DFit4DGS -> Render4DGS over the
    rig, through the real server: the fit reproduces the loaded views well above a flat-colour fit."""
    from PIL import Image

    cap = fx.capture()
    fx.write_panoptic(comfy_server.input_dir / "panoptic_seq", cap, seed=0)
    load = {"class_type": "Full4DLoadMultiView", "inputs": {
        "folder": "panoptic_seq", "format": "panoptic", "views": "00_03,00_00,00_01", "num_frames": 5, "start": 0,
        "stride": 1, "width": 32, "height": 32}}
    fit = {"class_type": "Full4DFit4DGS", "inputs": {
        "images": ["1", 0], "rig": ["1", 1], "iterations": 30, "lr_means": 1.6e-4, "lr_planes": 0.05,
        "lambda_dssim": 0.2, "lambda_tv": 2e-4, "max_gaussians": 120000, "prune_opacity": 0.015, "sh_degree": 1,
        "checkpoint_every": 500, "resume": False, "render_time": 0.0, "orbit_frames": 4}}
    render = {"class_type": "Full4DRender4DGS", "inputs": {"scene4d": ["2", 0], "rig": ["1", 1], "mode": "rig grid",
                                                          "num_frames": 5, "time_start": 0.0, "time_end": 1.0}}
    prompt = {"1": load, "2": fit, "3": render,
              "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "mv/render"}},
              "5": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "mv/loaded"}},
              "6": {"class_type": "SaveImage", "inputs": {"images": ["2", 1], "filename_prefix": "mv/orbit"}}}
    pid, _ = comfy_server.run_ws(prompt, timeout=900)
    hist = comfy_server.history(pid)
    assert hist["status"]["completed"], hist["status"]

    def images(node):
        files = hist["outputs"][node]["images"]
        return torch.stack([torch.from_numpy(np.array(Image.open(
            comfy_server.output_dir / f["subfolder"] / f["filename"]).convert("RGB"))).float() / 255 for f in files])

    rendered, loaded, orbit = images("4"), images("5"), images("6")
    assert rendered.shape == loaded.shape == (15, 32, 32, 3) and orbit.shape[0] == 4
    flat = loaded.reshape(3, 5, -1, 3).mean(2, keepdim=True).expand(3, 5, 32 * 32, 3).reshape(loaded.shape)
    psnr = lambda a, b: -10 * math.log10(float(((a - b) ** 2).mean()))  # noqa: E731
    assert psnr(rendered, loaded) > psnr(flat, loaded) + 1.5, (psnr(rendered, loaded), psnr(flat, loaded))
    assert float(orbit.std()) > 0.02  # the orbit between the rig cameras is not blank
