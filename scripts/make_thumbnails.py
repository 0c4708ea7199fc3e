"""Template-browser thumbnails ``workflows/<title>.jpg`` (the host serves them beside each workflow's JSON at
``/api/workflow_templates/comfyui-full4d/<title>.jpg``; the frontend shows them as square cards).

Each is a real render of what its workflow makes, by the pack's own engine on the embedded synthetic scenes
(no downloads, CPU): 4DGS fits of the synthetic ring capture (ground-truth depth init, as in the demo), the
ring views themselves where a workflow's output is a diffusion model's multi-view video (the stand-in for it,
ray-cast), and the projections / rig plot of the rig workflow; under it a band with the workflow's number (its
title's) and a few words, so the cards tell the graphs apart at a glance. A few minutes on 2 CPU cores.

    .venv/bin/python scripts/make_thumbnails.py [name ...]   (names: the API twins' short names)
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))

from comfyui_full4d.client.workflow import TEMPLATES, ui_stem  # noqa: E402
from comfyui_full4d.common.io import write_bytes  # noqa: E402
from comfyui_full4d.gaussians.fit import render_scene  # noqa: E402
from comfyui_full4d.gaussians.pipeline import fit_from_grid, node_fit_config, render_rig  # noqa: E402
from comfyui_full4d.geometry.projection import project_rig  # noqa: E402
from comfyui_full4d.geometry.rig_plot import rig_with_plot  # noqa: E402
from comfyui_full4d.media.synthetic import make_capture  # noqa: E402

SIZE = 384  # square cards
TILE = SIZE // 2
QUALITY = 88
MAX_BYTES = 60_000
BAND = 56  # the caption band at the bottom
# the few words of each card's band (its number comes from the title)
LABELS = {"demo_synthetic": "Demo, no model files", "demo_training_free": "Demo, training-free",
          "rig_iteration": "Rig check", "full4d_sampler": "Multi-view video", "full_pipeline": "Video to 4D",
          "training_free_pipeline": "Video to 4D, training-free", "fit_multiview": "Capture to 4D"}


def tiles(images: list[torch.Tensor], cols: int) -> torch.Tensor:
    """Equal-size images (H, W, 3) in [0, 1], row by row into one (rows*H, cols*W, 3) mosaic, each image's
    top and left edge drawn as a dark line (a grid like Full4DViewGrid's gaps, same size)."""
    framed = []
    for img in images:
        img = img.clone()
        img[0], img[:, 0] = 0.1, 0.1
        framed.append(img)
    rows = [torch.cat(framed[r:r + cols], 1) for r in range(0, len(framed), cols)]
    return torch.cat(rows, 0)


def jpeg(img: torch.Tensor, number: str, label: str) -> bytes:
    """(SIZE, SIZE, 3) in [0, 1] with the caption band (``number`` in a disc, then ``label``) -> JPEG bytes (the
    highest of a few qualities under MAX_BYTES)."""
    from PIL import Image, ImageDraw, ImageFont

    assert img.shape == (SIZE, SIZE, 3), img.shape
    pil = Image.fromarray((img.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy())
    band = Image.new("RGBA", (SIZE, BAND), (16, 18, 24, 215))
    draw = ImageDraw.Draw(band)
    r = BAND // 2 - 8
    draw.ellipse([12, BAND // 2 - r, 12 + 2 * r, BAND // 2 + r], fill=(245, 245, 245, 255))
    draw.text((12 + r, BAND // 2), number, fill=(20, 20, 20, 255), font=ImageFont.load_default(size=26), anchor="mm")
    draw.text((24 + 2 * r, BAND // 2), label, fill=(245, 245, 245, 255), font=ImageFont.load_default(size=24),
              anchor="lm")
    pil = pil.convert("RGBA")
    pil.alpha_composite(band, (0, SIZE - BAND))
    pil = pil.convert("RGB")
    for q in (QUALITY, 80, 70):
        buf = io.BytesIO()
        pil.save(buf, "JPEG", quality=q, optimize=True)
        if buf.tell() <= MAX_BYTES:
            break
    return buf.getvalue()


class Fit:
    """A 4DGS fit of a synthetic ring capture at TILE x TILE, the node's own config (the demo's widget values,
    fewer iterations)."""

    def __init__(self, seed: int, elevation: float, iterations: int) -> None:
        self.cap = make_capture(6, 5, TILE, TILE, seed=seed, elevation_deg=elevation)
        cfg = node_fit_config(iterations=iterations, lr_means=0.00016, lr_planes=0.05, lambda_dssim=0.2,
                              lambda_tv=0.0002, max_gaussians=20000, prune_opacity=0.015, sh_degree=1)
        self.scene, _, self.report = fit_from_grid(self.cap.view_major, self.cap.rig, cfg, self.cap.geometry())

    @torch.no_grad()
    def view(self, v: int, s: float) -> torch.Tensor:
        """The fit rendered from rig camera ``v`` at normalised time ``s``: (TILE, TILE, 3)."""
        cams = self.cap.rig.metric(float(self.scene.extras.get("scale", 1.0)))
        t0, t1 = self.scene.time_range
        return render_scene(self.scene, cams[v], t0 + s * (t1 - t0))[0].clamp(0, 1)


def fit_views(fit: Fit) -> torch.Tensor:
    """Four rig views of the fit while time runs (demo_synthetic, fit_multiview)."""
    return tiles([fit.view(v, s) for v, s in ((1, 0.0), (2, 1 / 3), (4, 2 / 3), (5, 1.0))], 2)


def video_to_4d(fit: Fit) -> torch.Tensor:
    """What full_pipeline makes of a video: top left the source frame, top right four of the multi-view video's
    views (ray-cast ground truth stands in for the diffusion model's), below two cameras of the orbit video of the
    4D fit, time running."""
    cap = fit.cap
    half = [torch.nn.functional.avg_pool2d(cap.views[v, 0].permute(2, 0, 1)[None], 2)[0].permute(1, 2, 0)
            for v in (1, 2, 4, 5)]
    orb = render_rig(fit.scene, cap.rig, True, 4, 0.0, 1.0)
    return tiles([cap.source[0], tiles(half, 2), orb[1], orb[3]], 2)


def projections_and_fit(fit: Fit) -> torch.Tensor:
    """Left: the source projected into views 2 and 4 (the known region the training-free sampler keeps; holes
    black); right: the 4D fit of the same views (training_free_pipeline)."""
    cap = fit.cap
    renders, _ = project_rig(cap.source, cap.geometry(), cap.rig, point_radius=1)  # (V, T, H, W, 3)
    return tiles([renders[2, 0], fit.view(2, 0.0), renders[4, 0], fit.view(4, 0.0)], 2)


def multiview_grid() -> torch.Tensor:
    """Three ring views (columns) at three times (rows): the shape of the sampler's multi-view video
    (full4d_sampler; ray-cast ground truth stands in for the diffusion model's output)."""
    n = SIZE // 3
    cap = make_capture(6, 3, n, n, seed=2, elevation_deg=15.0)
    img = tiles([cap.views[v, t] for t in range(3) for v in (1, 3, 5)], 3)
    return torch.nn.functional.pad(img.permute(2, 0, 1), (0, SIZE - 3 * n, 0, SIZE - 3 * n), mode="replicate"
                                   ).permute(1, 2, 0)


def rig_iteration() -> torch.Tensor:
    """Top: the rig plot (top-down | side) with the source's frame-0 points; bottom: the source projected into two
    ring cameras (rig_iteration's two previews)."""
    cap = make_capture(2, 1, TILE, TILE, seed=0, elevation_deg=0.0)
    geometry = cap.geometry()
    rig, plot = rig_with_plot("ring", TILE, TILE, num_views=6, elevation_deg=15.0, geometry=geometry,
                              image=cap.source, plot_size=TILE)
    renders, _ = project_rig(cap.source, geometry, rig, point_radius=1)  # the workflow's splat radius
    top = plot[0, :, 1:1 + SIZE]
    return torch.cat([top, tiles([renders[1, 0], renders[3, 0]], 2)], 0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="workflow names (default: all)")
    a = ap.parse_args()
    torch.manual_seed(0)
    fits: dict[int, Fit] = {}

    def fit(seed: int) -> Fit:
        if seed not in fits:
            t = time.time()
            fits[seed] = Fit(seed, elevation=10.0 if seed == 0 else 25.0, iterations=400)
            print(f"fit of scene {seed}: {fits[seed].report.text()} ({time.time() - t:.0f} s)")
        return fits[seed]

    makers = {"demo_synthetic": lambda: fit_views(fit(0)), "fit_multiview": lambda: fit_views(fit(1)),
              "full_pipeline": lambda: video_to_4d(fit(0)),
              "training_free_pipeline": lambda: projections_and_fit(fit(0)),
              "demo_training_free": lambda: projections_and_fit(fit(0)), "full4d_sampler": multiview_grid,
              "rig_iteration": rig_iteration}
    shipped = sorted(p.name[:-len("_api.json")] for p in (ROOT / "workflows" / "api").glob("*_api.json"))
    missing = sorted(set(shipped) - set(makers) | set(shipped) - set(LABELS))
    if missing:
        raise SystemExit(f"no thumbnail recipe or label for workflows {missing}: add them to "
                         "scripts/make_thumbnails.py")
    for name in a.names or shipped:
        if name not in makers:
            raise SystemExit(f"{name!r}: not a shipped workflow (choose from {shipped})")
        data = jpeg(makers[name](), TEMPLATES[name].split()[0], LABELS[name])
        dest = ROOT / "workflows" / f"{ui_stem(name)}.jpg"
        write_bytes(dest, data)
        print(f"wrote {dest.relative_to(ROOT)} ({len(data) // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
