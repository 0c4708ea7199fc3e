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
