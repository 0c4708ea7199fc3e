"""Evaluation metrics for generated multi-view video (SPEC 9, paper section 4.3, Tab. 4/5).

All frame tensors are float in [0, 1], channels last: ``(..., H, W, 3)``; leading dims
(views ``V``, frames ``T``) are flattened into a batch of images. Every metric returns a plain
Python ``float`` so results go straight into JSON.

* ``psnr``: ``10 log10(max^2 / MSE)`` per image, averaged over images. An exact match (MSE 0)
  is reported as ``PSNR_CAP`` (100 dB) so JSON never holds ``inf``.
* ``ssim``: Wang et al. 2004, 11x11 Gaussian window (sigma 1.5), on luminance-free RGB
  channels averaged, computed by ``kornia.metrics.ssim`` (a maintained implementation).
* ``psnr_masked`` / ``ssim_masked``: the same over the pixels of a mask (e.g. those a projection did not
  cover): per-image MSE over the mask, and the SSIM map averaged over the mask.
* ``feature_matches``: OpenCV SIFT keypoints in an input frame and the output frame at the same
  timestamp, brute-force L2 matching, Lowe ratio test (best / second best < ``ratio``): the mean
  number of surviving matches per frame pair (the stand-in for the paper's GIM "Mat. Pix.").
* ``reprojection_error``: cross-view geometric consistency of per-view depth with known cameras:
  pixel ``p`` of view ``a`` is lifted with ``D_a(p)``, projected into view ``b`` at ``q``, lifted
  there with ``D_b(q)`` (bilinear) and projected back into ``a`` at ``p'``; the error is the
  round-trip distance ``|p - p'|`` in pixels, over pairs ``a != b`` and pixels that land inside
  ``b`` unoccluded (``|z_b - D_b(q)| <= occlusion_tol * D_b(q)``). Returns the median (robust
  to depth edges) and mean. With colours it also returns the photometric reprojection error
  ``|I_a(p) - I_b(q)|`` over the same pixels: the depth round trip alone is blind to poses
  that move along smooth surfaces (a small rotation about the camera centre).
* ``photometric_reprojection_error``: mean absolute colour difference between generated target
  frames and the point-cloud projection renders of the source (SPEC 3) where the render is valid.
* ``temporal_flicker``: mean absolute second temporal difference
  ``|x_{t+1} - 2 x_t + x_{t-1}|`` over pixels and channels. It is zero for any per-pixel
  linear change in time (static content, steady fades) and ``4a`` for a brightness that
  alternates by ``+-a`` frame to frame, so it measures frame-to-frame jitter, not motion speed.
  With a ``reference`` video it is the excess over the reference's own value (can be < 0).

``table_image`` renders a results table as an IMAGE tensor ``(1, H, W, 3)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..geometry.cameras import Camera

__all__ = ["PSNR_CAP", "psnr", "ssim", "psnr_masked", "ssim_masked", "feature_matches", "reprojection_error",
           "photometric_reprojection_error", "temporal_flicker", "table_image", "format_table",
           "evaluate_views", "evaluation_report"]

PSNR_CAP = 100.0


def _images(name: str, x: Tensor) -> Tensor:
    """(..., H, W, 3) -> (B, H, W, 3) float32."""
    if not isinstance(x, Tensor) or x.dim() < 3 or x.shape[-1] != 3:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a tensor of shape (..., H, W, 3), got {shape}")
    return x.reshape(-1, *x.shape[-3:]).float()


def _pair(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    a, b = _images("pred", pred), _images("target", target)
    if a.shape != b.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
    return a, b


def psnr(pred: Tensor, target: Tensor, max_val: float = 1.0) -> float:
    """Mean over images of ``10 log10(max_val^2 / MSE)``; pred, target (..., H, W, 3)."""
    a, b = _pair(pred, target)
    mse = ((a.double() - b.double()) ** 2).flatten(1).mean(1)
    vals = [PSNR_CAP if m <= 0 else min(PSNR_CAP, 10 * math.log10(max_val ** 2 / m)) for m in mse.tolist()]
    return float(sum(vals) / len(vals))


def ssim(pred: Tensor, target: Tensor, window_size: int = 11, max_val: float = 1.0) -> float:
    """Mean SSIM (kornia, Gaussian window ``window_size``, sigma 1.5); pred, target (..., H, W, 3)."""
    import kornia

    a, b = _pair(pred, target)
    if min(a.shape[1], a.shape[2]) < window_size:
        raise ValueError(f"ssim: images {a.shape[1]}x{a.shape[2]} are smaller than window_size={window_size}")
    s = kornia.metrics.ssim(a.permute(0, 3, 1, 2), b.permute(0, 3, 1, 2), window_size, max_val=max_val)
    return float(s.mean())


def psnr_masked(pred: Tensor, target: Tensor, mask: Tensor, max_val: float = 1.0) -> float:
    """``psnr`` over the pixels where ``mask`` is True: per image ``10 log10(max^2 / MSE_mask)``, averaged over the
    images that have such pixels (NaN when none has). pred, target (..., H, W, 3); mask (..., H, W) bool."""
    a, b = _pair(pred, target)
    m = mask.reshape(-1, *mask.shape[-2:]).bool()
    if m.shape != a.shape[:3]:
        raise ValueError(f"mask {tuple(mask.shape)} must match the images {tuple(pred.shape[:-1])}")
    err = ((a.double() - b.double()) ** 2).mean(-1)
    vals = []
    for e, k in zip(err, m):
        if k.any():
            mse = float(e[k].mean())
            vals.append(PSNR_CAP if mse <= 0 else min(PSNR_CAP, 10 * math.log10(max_val ** 2 / mse)))
    return float(sum(vals) / len(vals)) if vals else float("nan")


def ssim_masked(pred: Tensor, target: Tensor, mask: Tensor, window_size: int = 11, max_val: float = 1.0) -> float:
    """The SSIM map (kornia, as ``ssim``) averaged over the pixels where ``mask`` is True (NaN when none)."""
    import kornia

    a, b = _pair(pred, target)
    m = mask.reshape(-1, *mask.shape[-2:]).bool()
    if m.shape != a.shape[:3]:
        raise ValueError(f"mask {tuple(mask.shape)} must match the images {tuple(pred.shape[:-1])}")
    if not m.any():
        return float("nan")
    smap = kornia.metrics.ssim(a.permute(0, 3, 1, 2), b.permute(0, 3, 1, 2), window_size, max_val=max_val).mean(1)
    return float(smap[m].mean())


def _gray_u8(img: Tensor):
    """(H, W, 3) in [0, 1] -> numpy uint8 (H, W)."""
    g = img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114
    return (g.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def feature_matches(inputs: Tensor, outputs: Tensor, ratio: float = 0.75) -> float:
    """Mean count of SIFT matches passing Lowe's ratio test between frames at the same timestamp.

    inputs (T, H, W, 3); outputs (T, H', W', 3) or (V, T, H', W', 3) (each view against the
    input frame of the same t). Needs ``opencv-python-headless``.
    """
    try:
        import cv2
    except ImportError as e:
        raise ImportError("feature_matches needs OpenCV: pip install opencv-python-headless") from e
    if not (0.0 < ratio < 1.0):
        raise ValueError(f"ratio must be in (0, 1), got {ratio}")
    src = _images("inputs", inputs)
    out = outputs if outputs.dim() == 5 else outputs[None]
    if out.dim() != 5 or out.shape[1] != src.shape[0] or out.shape[-1] != 3:
        raise ValueError(f"outputs must be (T={src.shape[0]}, H, W, 3) or (V, T, H, W, 3), got {tuple(outputs.shape)}")
    sift = cv2.SIFT_create()
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    src_desc = [sift.detectAndCompute(_gray_u8(f), None)[1] for f in src]
    counts = []
    for view in out:
        for t, frame in enumerate(view):
            d_out = sift.detectAndCompute(_gray_u8(frame.float()), None)[1]
            d_in = src_desc[t]
            if d_in is None or d_out is None or len(d_in) < 2 or len(d_out) < 2:
                counts.append(0)
                continue
            pairs = matcher.knnMatch(d_in, d_out, k=2)
            counts.append(sum(1 for p in pairs if len(p) == 2 and p[0].distance < ratio * p[1].distance))
    return float(sum(counts) / max(1, len(counts)))


def _lift(cam: Camera, uv: Tensor, z: Tensor) -> Tensor:
    """Pixels uv (N, 2) at z-depth z (N,) -> world points (N, 3)."""
    ones = torch.ones_like(z)
    rays = torch.cat([uv, ones[:, None]], -1) @ torch.linalg.inv(cam.K).T  # (N, 3), z = 1
    x_cam = rays * z[:, None]
    return (x_cam - cam.t) @ cam.R  # R^T (x - t)


def _sample(img: Tensor, uv: Tensor) -> Tensor:
    """Bilinear sample of img (H, W) or (H, W, C) at pixel coords uv (N, 2), centres at +0.5.

    Returns (N,) or (N, C)."""
    chw = img[None, None] if img.dim() == 2 else img.permute(2, 0, 1)[None]
    H, W = chw.shape[-2:]
    grid = torch.stack([uv[:, 0] / W * 2 - 1, uv[:, 1] / H * 2 - 1], -1)[None, None].to(chw.dtype)
    out = torch.nn.functional.grid_sample(chw, grid, mode="bilinear", padding_mode="border",
                                          align_corners=False)[0, :, 0]  # (C, N)
    return out[0] if img.dim() == 2 else out.T


def reprojection_error(depth: Tensor, cameras: Camera, images: Tensor | None = None,
                       occlusion_tol: float = 0.05, stride: int = 1) -> dict[str, float]:
    """Round-trip reprojection error (pixels) between all ordered view pairs (see module doc).

    depth: (V, H, W) or (V, T, H, W) metric z-depth per view (<= 0 or non-finite = invalid);
    cameras: batched Camera (V,) at (H, W). stride: evaluate every stride-th pixel.
    images: optional (V, [T,] H, W, 3) colours; then also the photometric error
    ``mean |I_a(p) - I_b(q)|`` over the same visible pixels (bilinear ``I_b``), which also
    catches pose errors that the depth round trip cannot see (rotation about the centre).
    Returns {"median_px", "mean_px", "valid_fraction"} (+ "photometric_l1").
    """
    d = depth.float()
    if d.dim() == 3:
        d = d[:, None]
    if d.dim() != 4:
        raise ValueError(f"depth must be (V, H, W) or (V, T, H, W), got {tuple(depth.shape)}")
    V, T, H, W = d.shape
    if len(cameras.batch_shape) != 1 or len(cameras) != V:
        raise ValueError(f"cameras must be a batched Camera of V={V} views, got batch {tuple(cameras.batch_shape)}")
    if (cameras.width, cameras.height) != (W, H):
        raise ValueError(f"cameras are {cameras.width}x{cameras.height} but depth is {W}x{H}")
    img = None
    if images is not None:
        img = images.float()
        img = img[:, None] if img.dim() == 4 else img
        if tuple(img.shape) != (V, T, H, W, 3):
            raise ValueError(f"images must be (V, [T,] H, W, 3) matching depth {tuple(depth.shape)}, "
                             f"got {tuple(images.shape)}")
    cams = cameras.to(torch.float64)
    ii, jj = torch.meshgrid(torch.arange(0, H, stride), torch.arange(0, W, stride), indexing="ij")
    uv = torch.stack([jj.flatten() + 0.5, ii.flatten() + 0.5], -1).double()
    errs, photo, total = [], [], 0
    for t in range(T):
        for a in range(V):
            za = d[a, t, ii.flatten(), jj.flatten()].double()
            ok_a = torch.isfinite(za) & (za > 0)
            X = _lift(cams[a], uv[ok_a], za[ok_a])
            for b in range(V):
                if a == b:
                    continue
                total += int(ok_a.sum())
                q, zb = cams[b].project(X)
                inside = (zb > 1e-9) & (q[:, 0] >= 0) & (q[:, 0] <= W) & (q[:, 1] >= 0) & (q[:, 1] <= H)
                db = _sample(d[b, t].double(), q[inside])
                vis = torch.isfinite(db) & (db > 0) & ((zb[inside] - db).abs() <= occlusion_tol * db)
                Xb = _lift(cams[b], q[inside][vis], db[vis])
                p2, _ = cams[a].project(Xb)
                errs.append((p2 - uv[ok_a][inside][vis]).norm(dim=-1))
                if img is not None:
                    ia = img[a, t, ii.flatten(), jj.flatten()][ok_a][inside][vis].double()
                    ib = _sample(img[b, t].double(), q[inside][vis])
                    photo.append((ia - ib).abs().mean(-1))
    e = torch.cat(errs) if errs else torch.zeros(0, dtype=torch.float64)
    if e.numel() == 0:
        out = {"median_px": float("nan"), "mean_px": float("nan"), "valid_fraction": 0.0}
        return out | ({"photometric_l1": float("nan")} if img is not None else {})
    out = {"median_px": float(e.median()), "mean_px": float(e.mean()),
           "valid_fraction": float(e.numel() / max(1, total))}
    if img is not None:
        out["photometric_l1"] = float(torch.cat(photo).mean())
    return out


def photometric_reprojection_error(frames: Tensor, renders: Tensor, masks: Tensor) -> float:
    """Mean |frames - renders| over valid pixels and channels.

    frames, renders (..., H, W, 3); masks (..., H, W) bool (the projection's validity).
    Returns NaN when no pixel is valid.
    """
    a, b = _pair(frames, renders)
    m = masks.reshape(-1, *masks.shape[-2:]).bool()
    if m.shape != a.shape[:3]:
        raise ValueError(f"masks {tuple(masks.shape)} must match frames {tuple(frames.shape[:-1])}")
    n = int(m.sum())
    if n == 0:
        return float("nan")
    return float((a - b).abs()[m].sum() / (3 * n))


def temporal_flicker(frames: Tensor, reference: Tensor | None = None) -> float:
    """Mean |x_{t+1} - 2 x_t + x_{t-1}| over pixels, channels and t (module doc).

    frames (T, H, W, 3) or (V, T, H, W, 3) with T >= 3; reference same shape or None.
    """
    x = frames.float()
    if x.dim() == 4:
        x = x[None]
    if x.dim() != 5 or x.shape[-1] != 3 or x.shape[1] < 3:
        raise ValueError(f"frames must be (T>=3, H, W, 3) or (V, T>=3, H, W, 3), got {tuple(frames.shape)}")
    val = float((x[:, 2:] - 2 * x[:, 1:-1] + x[:, :-2]).abs().mean())
    if reference is not None:
        if reference.shape != frames.shape:
            raise ValueError(f"reference {tuple(reference.shape)} must match frames {tuple(frames.shape)}")
        val -= temporal_flicker(reference)
    return val


def format_table(rows: list[dict], columns: list[str] | None = None, digits: int = 3) -> str:
    """Rows of {column: value} -> a Markdown table (floats rounded to ``digits``)."""
    if not rows:
        raise ValueError("format_table: rows is empty")
    cols = columns or list(dict.fromkeys(k for r in rows for k in r))

    def cell(v) -> str:
        if isinstance(v, float):
            return "nan" if math.isnan(v) else f"{v:.{digits}f}"
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def table_image(rows: list[dict], columns: list[str] | None = None, digits: int = 3) -> Tensor:
    """Render ``format_table`` text (black on white, PIL's default font) -> IMAGE (1, H, W, 3)."""
    from PIL import Image, ImageDraw, ImageFont

    text = format_table(rows, columns, digits).replace("|---", "|   ")
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left, top, right, bottom = probe.multiline_textbbox((0, 0), text, font=font)
    pad = 8
    img = Image.new("RGB", (int(right - left) + 2 * pad, int(bottom - top) + 2 * pad), "white")
    ImageDraw.Draw(img).multiline_text((pad - left, pad - top), text, fill="black", font=font)
    import numpy as np

    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]


def evaluate_views(source: Tensor, views: Tensor, ground_truth: Tensor | None = None, renders: Tensor | None = None,
                   masks: Tensor | None = None, *, match_ratio: float = 0.75) -> dict[str, float]:
    """All metrics that the inputs allow, for generated target views.

    source (T, H, W, 3) input video; views (V', T, H, W, 3) generated target views;
    ground_truth (V', T, H, W, 3) true target views or None (then no PSNR / SSIM);
    renders (V', T, H, W, 3) + masks (V', T, H, W) projection of the source (SPEC 3) or None.
    Returns {"psnr", "ssim", "psnr_uncovered", "ssim_uncovered" (ground truth and masks: over the pixels the
    projection did not cover), "matches", "reproj_l1", "flicker", "flicker_excess"} (those available).
    """
    if views.dim() != 5 or views.shape[1:] != source.shape:
        raise ValueError(f"views must be (V', T, H, W, 3) with (T, H, W, 3) = source {tuple(source.shape)}, "
                         f"got {tuple(views.shape)}")
    out: dict[str, float] = {}
    if ground_truth is not None:
        if ground_truth.shape != views.shape:
            raise ValueError(f"ground_truth {tuple(ground_truth.shape)} must match views {tuple(views.shape)}")
        out["psnr"] = psnr(views, ground_truth)
        if min(views.shape[2], views.shape[3]) >= 11:
            out["ssim"] = ssim(views, ground_truth)
        if masks is not None and not masks.bool().all():  # the pixels the projection did not cover
            out["psnr_uncovered"] = psnr_masked(views, ground_truth, ~masks.bool())
            if min(views.shape[2], views.shape[3]) >= 11:
                out["ssim_uncovered"] = ssim_masked(views, ground_truth, ~masks.bool())
    try:
        out["matches"] = feature_matches(source, views, match_ratio)
    except ImportError:
        pass
    if renders is not None and masks is not None:
        out["reproj_l1"] = photometric_reprojection_error(views, renders, masks)
    if views.shape[1] >= 3:
        out["flicker"] = temporal_flicker(views)
        if ground_truth is not None:
            out["flicker_excess"] = temporal_flicker(views, ground_truth)
    return out


def _by_view(name: str, x: Tensor | None, num_frames: int) -> Tensor | None:
    """View-major batch (V'*T, ...) -> (V', T, ...)."""
    if x is None:
        return None
    if x.shape[0] % num_frames:
        raise ValueError(f"{name}: batch of {x.shape[0]} frames is not a whole number of views of "
                         f"{num_frames} frames (the source length)")
    return x.reshape(x.shape[0] // num_frames, num_frames, *x.shape[1:])


def evaluation_report(source: Tensor, views: Tensor, ground_truth: Tensor | None = None,
                      renders: Tensor | None = None, masks: Tensor | None = None,
                      label: str = "output", skip_source_view: bool = False) -> tuple[Tensor, str]:
    """``evaluate_views`` on view-major batches, as a table IMAGE (1, H, W, 3) and a JSON string.

    source (T, H, W, 3); views, ground_truth, renders (V'*T, H, W, 3); masks (V'*T, H, W). With
    ``skip_source_view`` every batch holds all V views of the rig, view 0 the source's: its T frames are left out
    of every batch, so only the target views are scored (a sampler's decoded output, a scene's true views and a
    projection's renders can be connected as they come). (The Full4DEvaluate node.)
    """
    import json

    T = source.shape[0]
    batches = [views, ground_truth, renders, masks]
    if skip_source_view:
        if views.shape[0] <= T:
            raise ValueError(f"skip_source_view: views hold {views.shape[0]} frames, only the source view's "
                             f"{T}; connect all views of the rig or turn skip_source_view off")
        batches = [None if x is None else x[T:] for x in batches]
    names = ("views", "ground_truth", "renders", "masks")
    res = evaluate_views(source, *(_by_view(n, x, T) for n, x in zip(names, batches)))
    row = {"run": label, **res}
    return table_image([row]), json.dumps(row, indent=1)
