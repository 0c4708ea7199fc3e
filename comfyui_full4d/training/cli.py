"""The dataset command line: ``python -m comfyui_full4d.training.cli validate DIR``, ``synthetic OUT``,
``convert IN OUT`` (docs/training.md). The one place that wires the dataset format (``dataset``) and the
capture converter (``captures.convert``) together, so neither imports the other for its CLI."""

from __future__ import annotations

from pathlib import Path

from ..media.synthetic import make_capture
from .captures.convert import add_parser as add_convert
from .captures.convert import main as convert_main
from .dataset import find_scenes, write_synthetic_scene

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """``python -m comfyui_full4d.training.cli validate DIR``, ``synthetic OUT [--scenes N ...]`` or
    ``convert IN OUT --format n3dv|recammaster|panoptic|dycheck`` (``captures.convert``)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m comfyui_full4d.training.cli")
    sub = p.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("validate", help="check a scene folder or a folder of scenes")
    v.add_argument("root")
    s = sub.add_parser("synthetic", help="write procedural scenes (comfyui_full4d.media.synthetic) as a dataset")
    s.add_argument("out")
    s.add_argument("--scenes", type=int, default=4)
    s.add_argument("--views", type=int, default=6)
    s.add_argument("--frames", type=int, default=33)
    s.add_argument("--height", type=int, default=96)
    s.add_argument("--width", type=int, default=160)
    s.add_argument("--seed", type=int, default=0)
    add_convert(sub)
    a = p.parse_args(argv)
    if a.cmd == "convert":
        return convert_main(a)
    if a.cmd == "validate":
        for sc in find_scenes(a.root):
            print(f"ok: {sc.root} ({sc.num_views} cameras, {sc.num_frames} frames, "
                  f"{sc.cameras.width}x{sc.cameras.height})")
        return 0
    for i in range(a.scenes):
        cap = make_capture(num_views=a.views, num_frames=a.frames, height=a.height, width=a.width, seed=a.seed + i)
        sc = write_synthetic_scene(Path(a.out) / f"scene{i:04d}", cap)
        print(f"wrote {sc.root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
