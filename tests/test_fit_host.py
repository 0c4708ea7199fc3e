"""Fit4DGS -> Render4DGS / Save4DGS through the host's own executor.

The host executes every node under torch.inference_mode(); calling ``execute`` directly (as the
node unit tests do) does not, and missed that the fit needs autograd there.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.server


def test_fit_render_save_graph_in_the_host(comfy_host):
    p = {"1": {"class_type": "Full4DSyntheticScene", "inputs": {"seed": 0, "num_views": 3, "num_frames": 5, "width": 64,
                                                                "height": 48, "radius": 1.0, "elevation": 0.0, "fov": 50.0}},
         "2": {"class_type": "Full4DFit4DGS", "inputs": {
             "images": ["1", 1], "rig": ["1", 2], "geometry": ["1", 3], "iterations": 20, "lr_means": 1.6e-4,
             "lr_planes": 1.6e-3, "lambda_dssim": 0.2, "lambda_tv": 2e-4, "max_gaussians": 120000,
             "prune_opacity": 0.015, "sh_degree": 1, "checkpoint_every": 10, "resume": False, "render_time": 0.0,
             "orbit_frames": 4}},
         "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 1], "filename_prefix": "fit_host/orbit"}},
         "4": {"class_type": "Full4DSave4DGS", "inputs": {"scene4d": ["2", 0], "filename_prefix": "fit_host/scene",
                                                          "num_frames": 2}},
         "5": {"class_type": "Full4DRender4DGS", "inputs": {"scene4d": ["2", 0], "rig": ["1", 2], "mode": "rig grid",
                                                            "num_frames": 3, "time_start": 0.0, "time_end": 1.0}},
         "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "fit_host/render"}}}
    out = comfy_host.run(p)
    assert len(out["3"]["images"]) == 4
    files = out["4"]["text"][0].split("\n")
    assert sum(f.endswith(".ply") for f in files) == 2 and any(f.endswith(".safetensors") for f in files)
    for f in files:
        assert (comfy_host.output_dir / f).stat().st_size > 0
    orbit = comfy_host.outputs("2")[1][0]
    assert orbit.shape == (4, 48, 64, 3) and float(orbit.std()) > 0.01  # not a blank render


def test_fit_shows_its_training_psnr_under_the_node(comfy_host, monkeypatch):
    """The running training PSNR every 25 iterations and the final report go to the browser as the host's
    progress text of the executing node (what core nodes send with PromptServer.send_progress_text), and the
    final PSNR is the node's FLOAT output and UI text."""
    import sys
    import types

    from comfyui_full4d.common.progress import TEXT_COLUMNS

    sent = []

    class FakeServer:
        def send_progress_text(self, text, node_id, sid=None):
            sent.append((str(node_id), text))

    # the host's server module (its PromptServer.instance) is not imported in-process: stand one in
    fake = types.ModuleType("server")
    fake.PromptServer = type("PromptServer", (), {"instance": FakeServer()})
    monkeypatch.setitem(sys.modules, "server", fake)
    p = {"1": {"class_type": "Full4DSyntheticScene", "inputs": {"seed": 0, "num_views": 3, "num_frames": 3, "width": 48,
                                                                "height": 32, "radius": 1.0, "elevation": 0.0, "fov": 50.0}},
         "2": {"class_type": "Full4DFit4DGS", "inputs": {
             "images": ["1", 1], "rig": ["1", 2], "geometry": ["1", 3], "iterations": 50, "max_gaussians": 5000,
             "orbit_frames": 2, "render_time": 0.0, "resume": False, "options": ["4", 0]}},
         "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 1]}},
         "4": {"class_type": "Full4DFitOptions", "inputs": {
             "lr_means": 1.6e-4, "lr_planes": 0.05, "lambda_dssim": 0.2, "lambda_tv": 2e-4, "prune_opacity": 0.015,
             "sh_degree": 1, "checkpoint_every": 50, "recalibrate": True}}}
    out = comfy_host.run(p)
    texts = [t for nid, t in sent if nid == "2"]
    assert [t.split("\n")[0] for t in texts[:2]] == ["iteration 25/50", "iteration 50/50"], texts
    assert "training PSNR ~" in texts[0] and texts[-1].startswith("training-view PSNR")
    psnr = comfy_host.outputs("2")[2][0]
    assert f"training-view PSNR {psnr:.2f} dB" == texts[-1].split("\n")[0] and out["2"]["text"][0] == texts[-1]
    assert "init: views: ground-truth depth" in texts[-1]
    # short lines, broken at spaces: the frontend breaks a longer line mid-word (issue 32)
    assert all(len(line) <= TEXT_COLUMNS for t in texts for line in t.split("\n")), texts
