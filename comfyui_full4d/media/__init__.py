"""Frames in and out: streaming video I/O (``video``), the procedural synthetic 4D scene with exact
ground truth (``synthetic``), view-major batches <-> (V, T, ...) <-> tiled grids (``grid``), and the
image/video metrics measured on them (``metrics``: PSNR, SSIM, SIFT matches, reprojection error, flicker)."""
