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
