"""4DGS fit benchmark on the synthetic capture: PSNR / SSIM on the training views and on held-out cameras of
the App. B interpolated orbit (ground truth ray-cast by ``synthetic.render``), time, Gaussian count; without and
with FMD.

    .venv/bin/python bench/fit.py           # 6 views x 5 frames at 48x80, 600 iterations (CPU, ~2-4 min)
    .venv/bin/python bench/fit.py --full    # 6 views x 9 frames at 96x160, 3000 iterations

FMD here uses STAND-INS, not the real host models: the "encoder" is an 8x average pool of the frames and the
"teacher" is an oracle velocity pointing at the pooled ground-truth render of the sampled orbit camera
(``StandInVelocity``), i.e. an upper bound of what a perfect multi-view model could add. The real wiring (tiny
Wan VAE + patched model) plugs into the same ``FMDConfig(encode_fn, velocity_fn)``.
"""

from __future__ import annotations

import argparse
import time

import torch

from comfyui_full4d.geometry.cameras import Camera
from comfyui_full4d.gaussians import (DensifyConfig, FitConfig, FMDConfig, HexPlaneConfig, backproject_views,
                                      fit_4dgs, render_scene)
from comfyui_full4d.gaussians.fmd import StandInVelocity, pool_encoder
from comfyui_full4d.media.metrics import psnr, ssim
from comfyui_full4d.geometry.rig import interpolate_rig
from comfyui_full4d.media.synthetic import make_capture, make_scene, render


@torch.no_grad()
def evaluate(scene, cams: Camera, times, gt) -> tuple[float, float]:
    """Mean PSNR / SSIM of renders at cams (B,) x times vs gt (B, T, H, W, 3)."""
    ps, ss = [], []
    for b in range(len(cams)):
        pred = torch.stack([render_scene(scene, cams[b], float(t))[0].clamp(0, 1) for t in times])
        ps.append(psnr(pred, gt[b]))
        ss.append(ssim(pred, gt[b]))
    return sum(ps) / len(ps), sum(ss) / len(ss)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--lambda-fmd", type=float, default=0.1)
    ap.add_argument("--held-out", type=int, default=4, help="interpolated cameras for the held-out score")
    a = ap.parse_args()
    T, H, W, iters = (9, 96, 160, 3000) if a.full else (5, 48, 80, 600)
    iters = a.iterations or iters
    cap = make_capture(6, T, H, W)
    cams = cap.metric_cameras
    pts, cols = backproject_views(cap.depth[:, 0], cap.views[:, 0], cams, max_points=20_000)
    R, t = interpolate_rig(cams.R, cams.t, 24)
    orbit = Camera(K=cams.K[0].expand(24, 3, 3), R=R, t=t, width=W, height=H)
    held = orbit[torch.arange(1, 24, 24 // a.held_out)[: a.held_out]]  # off the rig knots (every 4th is a knot)
    scene_spec = make_scene(0)
    gt_held, _ = render(scene_spec, held, cap.times)
    enc = pool_encoder(8)
    fmd_poses = orbit[torch.arange(0, 24, 2)]  # 12 poses with oracle targets (fewer ray casts than 120)
    gt_fmd, _ = render(scene_spec, fmd_poses, cap.times)
    targets = {i: enc(gt_fmd[i]) for i in range(len(fmd_poses))}

    def target_of(cam: Camera) -> torch.Tensor:
        i = int(((fmd_poses.t - cam.t).norm(dim=-1)).argmin())
        return targets[i]

    cfg = FitConfig(iterations=iters, sh_degree=1, sh_increase_every=iters // 3, init_opacity=0.5,
                    densify=DensifyConfig(start=100, stop=iters // 2, interval=100, max_gaussians=30_000),
                    hexplane=HexPlaneConfig(feature_dim=8, base_res=32, time_res=max(2, T), hidden=32))
    rows = []
    for name, fmd, lam in (("4DGS", None, 0.0),
                           ("4DGS + FMD (stand-in pool encoder, oracle teacher)",
                            FMDConfig(encode_fn=enc, velocity_fn=StandInVelocity(target_of), cameras=fmd_poses,
                                      every=4), a.lambda_fmd)):
        c = FitConfig(**{**cfg.__dict__, "lambda_fmd": lam})
        t0 = time.perf_counter()
        scene, stats = fit_4dgs(cap.views, cams, cap.times, c, pts, cols, fmd=fmd)
        dt = time.perf_counter() - t0
        tr = evaluate(scene, cams, cap.times, cap.views)
        ho = evaluate(scene, held, cap.times, gt_held)
        rows.append((name, tr, ho, dt, stats.count))
    print(f"\n6 views x {T} frames at {H}x{W}, {iters} iterations, CPU")
    print(f"{'method':52s} {'train PSNR':>10s} {'train SSIM':>10s} {'held PSNR':>10s} {'held SSIM':>10s} "
          f"{'time s':>8s} {'count':>7s}")
    for name, tr, ho, dt, n in rows:
        print(f"{name:52s} {tr[0]:10.2f} {tr[1]:10.4f} {ho[0]:10.2f} {ho[1]:10.4f} {dt:8.1f} {n:7d}")
    print(f"FMD / plain time ratio: {rows[1][3] / rows[0][3]:.2f}x")


if __name__ == "__main__":
    main()
