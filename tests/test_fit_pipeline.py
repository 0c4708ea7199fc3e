"""``gaussians.pipeline`` called as the engine API with its own defaults (bench/fit_node.py and scripts
use it this way, not only through the node)."""

from comfyui_full4d.gaussians import pipeline
from comfyui_full4d.media.synthetic import make_capture


def test_fit_from_grid_runs_with_its_own_defaults_and_node_rules():
    cap = make_capture(num_views=2, num_frames=2, height=32, width=32, seed=0)
    cfg = pipeline.node_fit_config(iterations=30, lr_means=1.6e-4, lr_planes=0.05, lambda_dssim=0.2, lambda_tv=2e-4,
                                   max_gaussians=3000, prune_opacity=0.005, sh_degree=0)
    assert cfg.densify.prune_above == 2000 and cfg.densify.stop == 20 and cfg.lr_means_final == cfg.lr_means / 100
    scene, orbit, rep = pipeline.fit_from_grid(cap.view_major, cap.rig, cfg, cap.geometry())
    assert orbit.shape == (1, 32, 32, 3)
    assert rep.init == pipeline.INIT_VIEWS_GT and rep.psnr > 18.0, rep.text()


def test_fit_options_read_a_saved_prompts_values_and_name_a_bad_one():
    """``FitOptions.from_inputs``: the Fit node's inputs as a prompt saved before the options node gives them."""
    import pytest

    saved = {"images": ["1", 1], "iterations": 1000, "lr_means": 3e-4, "sh_degree": 1.0, "checkpoint_every": 100,
             "lambda_tv": ["7", 0], "recalibrate": False}
    o = pipeline.FitOptions.from_inputs(saved)
    assert (o.lr_means, o.sh_degree, o.checkpoint_every, o.recalibrate) == (3e-4, 1, 100, False)
    assert type(o.sh_degree) is int
    assert o.lambda_tv == pipeline.FitOptions().lambda_tv  # a link is not a value: the default
    assert o.config_kwargs()["sh_degree"] == 1 and "checkpoint_every" not in o.config_kwargs()
    for bad, name in (({"sh_degree": 7}, "sh_degree"), ({"lr_planes": -1.0}, "lr_planes"),
                      ({"lambda_dssim": 1.5}, "lambda_dssim"), ({"checkpoint_every": 0}, "checkpoint_every"),
                      ({"recalibrate": "yes"}, "recalibrate")):
        with pytest.raises(ValueError, match=name):
            pipeline.FitOptions.from_inputs(bad)


def test_fit_report_text_is_one_short_fact_a_line():
    from comfyui_full4d.gaussians.fit import FitStats

    rep = pipeline.FitReport(psnr=30.123, psnr_per_view=(30.1, 29.84, 30.5), init=pipeline.INIT_VIEWS_GT, count=12345,
                             stats=FitStats(skipped=2))
    assert rep.text().split("\n") == ["training-view PSNR 30.12 dB", "12,345 Gaussians", "init: views: ground-truth depth",
                                      "per view: 30.1, 29.8, 30.5", "2 non-finite steps skipped"]
