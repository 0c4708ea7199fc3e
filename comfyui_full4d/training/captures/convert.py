"""Capture folders -> the training dataset format (``dataset.py``, docs/training.md).

``python -m comfyui_full4d.training.cli convert --format n3dv IN OUT``: every capture folder at or
below ``IN`` becomes a scene folder under ``OUT`` (named by its path below ``IN``, ``/`` -> ``-``)
holding one lossless video per selected view (undistorted, optionally resized + centre-cropped)
and ``cameras.json`` with the views' cameras (the capture's world; translations times
``metres_per_unit``).

Streaming: frames are decoded, undistorted and encoded one at a time (a 300-frame 2704x2028
N3DV view never sits in memory). Resumable: a scene folder first gets ``.convert.json`` (the
options); each video is written to a temp file and renamed when complete; ``cameras.json`` is
written last. A rerun skips finished scenes and finished videos, and refuses a folder converted
with other options. A failing capture is reported and skipped; the run exits non-zero at the end.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ...common.io import write_json
from ...common.progress import StepFn, report
from ...media.video import VideoWriter
from .formats import FORMATS, detect_format, open_capture
from .base import CaptureError
from .load import read_view, resized_cameras, select

__all__ = ["ConvertOptions", "find_captures", "convert_capture", "convert", "add_parser", "main"]


@dataclass(frozen=True)
class ConvertOptions:
    """views: ``parse_views`` spec; frames ``start, start + stride, ...`` (``num_frames``, 0 = all
    common frames; not snapped: training draws 4k+1 clips itself); size (H, W) or None = native;
    moving: "error" or "drop" cameras that move; metres_per_unit multiplies translations (for
    COLMAP-posed formats, so they agree with metric depth); focal_mm: ReCamMaster focal override."""

    views: str = ""
    start: int = 0
    num_frames: int = 0
    stride: int = 1
    size: tuple[int, int] | None = None
    moving: str = "error"
    metres_per_unit: float = 1.0
    focal_mm: float | None = None

    def __post_init__(self) -> None:
        if not (self.metres_per_unit > 0):
            raise ValueError(f"metres_per_unit must be > 0, got {self.metres_per_unit}")
        if self.size is not None and (self.size[0] < 1 or self.size[1] < 1):
            raise ValueError(f"size must be positive (height, width), got {self.size}")


def find_captures(root: Path, format: str = "auto", max_depth: int = 4) -> list[Path]:
    """``root`` when it is a capture, else every capture folder below it (sorted, not below another)."""
    def is_capture(p: Path) -> bool:
        if format == "auto":  # public layouts only: a converted scene (full4d) is not converted again
            return any(m.matches(p) for k, m in FORMATS.items() if k != "full4d")
        return FORMATS[format].matches(p)

    if not root.is_dir():
        raise CaptureError(f"{root}: not a folder")
    if is_capture(root):
        return [root]
    found, frontier = [], [root]
    for _ in range(max_depth):
        nxt = []
        for d in frontier:
            for p in sorted(x for x in d.iterdir() if x.is_dir() and not x.name.startswith(".")):
                (found if is_capture(p) else nxt).append(p)
        frontier = nxt
    return sorted(found)


def _video_ok(path: Path, frames: int, size: tuple[int, int]) -> bool:
    from .base import _video_frames, video_info

    try:
        h, w, _ = video_info(path, "", path.name)
        return (h, w) == tuple(size) and _video_frames(path) == frames
    except CaptureError:
        return False


def convert_capture(src: Path, dest: Path, format: str = "auto", opts: ConvertOptions = ConvertOptions(),
                    label: str | None = None, on_frame: StepFn | None = None) -> str:
    """Convert one capture folder to the scene folder ``dest``; returns "converted" or "done before".
    ``on_frame(done, total)`` counts this scene's frames."""
    label = label or str(src)
    fmt = detect_format(src, label) if format == "auto" else format
    kw = {"focal_mm": opts.focal_mm} if fmt == "recammaster" and opts.focal_mm else {}
    cap = open_capture(src, fmt, label=label, **kw)
    sel = select(cap, opts.views, opts.num_frames, opts.start, opts.stride, snap=False, moving=opts.moving,
                 same_size=opts.size is None)
    size = tuple(opts.size) if opts.size else (sel.views[0].height, sel.views[0].width)
    manifest = {"format": fmt, "source": label, "views": list(sel.names), "first_frame": sel.indices[0],
                "num_frames": len(sel.indices), "stride": opts.stride, "size": list(size),
                "metres_per_unit": opts.metres_per_unit, "focal_mm": opts.focal_mm}
    dest.mkdir(parents=True, exist_ok=True)
    done_path, cams_path = dest / ".convert.json", dest / "cameras.json"
    if done_path.is_file():
        old = json.loads(done_path.read_text())
        if old != manifest:
            raise CaptureError(f"{dest}: was converted with other options ({old}); choose another output folder or "
                               "delete this one")
        if cams_path.is_file():
            return "done before"
    else:
        write_json(done_path, manifest)
    V, T = len(sel.views), len(sel.indices)
    for v, view in enumerate(sel.views):
        out = dest / f"{view.name}.mp4"
        if not _video_ok(out, T, size):
            with VideoWriter(out, sel.fps, lossless=True, keyframe_every=16) as writer:
                for frame in read_view(view, sel.indices, tuple(opts.size) if opts.size else None,
                                       lambda i, v=v: report(on_frame, v * T + i + 1, V * T)):
                    writer.write(frame)
        report(on_frame, (v + 1) * T, V * T)
    cams = resized_cameras(sel, size) if opts.size else sel.cameras
    entries = [{"name": n, "video": f"{n}.mp4", "width": size[1], "height": size[0], "K": cams.K[i].tolist(),
                "R": cams.R[i].tolist(), "t": (cams.t[i] * opts.metres_per_unit).tolist()}
               for i, n in enumerate(sel.names)]
    write_json(cams_path, {"version": 1, "fps": sel.fps, "cameras": entries,
                             "units": "metres" if opts.metres_per_unit != 1.0 else cap.units, "source": manifest})
    from ..dataset import load_scene

    load_scene(dest)  # the written scene passes the training loader's own validation
    return "converted"


def convert(root: str | os.PathLike, out: str | os.PathLike, format: str = "auto",
            opts: ConvertOptions = ConvertOptions(), on_step: StepFn | None = None,
            log=print) -> list[tuple[str, str]]:
    """Convert every capture at or below ``root`` into ``out/<name>``. Returns [(name, status or error)].
    ``on_step(done, total)`` counts frames (the total is estimated from the scenes seen so far)."""
    root, out = Path(root), Path(out)
    if format != "auto" and format not in FORMATS:
        raise CaptureError(f"format={format!r}: choose auto or one of {list(FORMATS)}")
    srcs = find_captures(root, format)
    if not srcs:
        raise CaptureError(f"{root}: no {'' if format == 'auto' else format + ' '}capture folders found")
    results, base = [], 0
    for k, src in enumerate(srcs):
        rel = src.relative_to(root)
        name = "-".join(rel.parts) if rel.parts else root.name
        seen = [0]

        def frame(done: int, total: int, k=k) -> None:
            seen[0] = total
            report(on_step, base + done, base + total * (len(srcs) - k))
        try:
            status = convert_capture(src, out / name, format, opts, label=str(src), on_frame=frame)
        except (CaptureError, ValueError) as e:
            status = f"error: {e}"
        base += seen[0]
        results.append((name, status))
        log(f"{name}: {status}")
    return results


def add_parser(sub) -> None:
    """The ``convert`` sub-command's arguments (``python -m comfyui_full4d.training.cli convert``)."""
    c = sub.add_parser("convert", help="convert public multi-view captures (N3DV, ReCamMaster, Panoptic, DyCheck) "
                       "into this format (streaming, resumable)")
    c.add_argument("input", help="a capture folder, or a folder with capture folders below it")
    c.add_argument("out", help="output folder: one scene folder per capture")
    c.add_argument("--format", default="auto", choices=["auto", "n3dv", "recammaster", "panoptic", "dycheck"],
                   help="layout of the capture folders (auto: detect each)")
    c.add_argument("--views", default="", help="comma-separated view names (default: the format's usual set); "
                   "'-name' leaves a view out, e.g. '-cam00'")
    c.add_argument("--start", type=int, default=0, help="first frame")
    c.add_argument("--frames", type=int, default=0, help="frames per view (0 = all common frames)")
    c.add_argument("--stride", type=int, default=1, help="take every stride-th frame")
    c.add_argument("--height", type=int, default=0, help="resize + centre-crop to this height (0 = native)")
    c.add_argument("--width", type=int, default=0, help="resize + centre-crop to this width (0 = native)")
    c.add_argument("--moving", default="error", choices=["error", "drop"],
                   help="cameras that move during the frames: refuse the capture, or leave them out")
    c.add_argument("--metres-per-unit", type=float, default=1.0,
                   help="multiply translations (COLMAP-posed N3DV / Nerfies: make them agree with metric depth)")
    c.add_argument("--focal-mm", type=float, default=None,
                   help="recammaster: focal length in mm when the folder name does not say (f24_aperture5)")


def main(a) -> int:
    """The ``convert`` sub-command of ``python -m comfyui_full4d.training.dataset`` (args from its parser)."""
    if (a.height == 0) != (a.width == 0):
        raise SystemExit("give both --height and --width, or neither (native size)")
    opts = ConvertOptions(views=a.views, start=a.start, num_frames=a.frames, stride=a.stride,
                          size=(a.height, a.width) if a.height else None, moving=a.moving,
                          metres_per_unit=a.metres_per_unit, focal_mm=a.focal_mm)
    try:
        from tqdm import tqdm

        bar = tqdm(unit="frame", dynamic_ncols=True)

        def step(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()
        log = bar.write
    except ImportError:  # pragma: no cover - tqdm comes with the host
        bar, step, log = None, None, print
    try:
        results = convert(a.input, a.out, a.format, opts, on_step=step, log=log)
    finally:
        if bar is not None:
            bar.close()
    failed = [(n, s) for n, s in results if s.startswith("error")]
    print(f"{len(results) - len(failed)} of {len(results)} capture(s) converted into {a.out}" +
          (f"; {len(failed)} failed (see above)" if failed else ""))
    return 1 if failed else 0
