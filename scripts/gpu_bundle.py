"""Lay out ``.gpu/``, what travels to a GPU machine next to the working tree for ``scripts/gpu_check.py``
(docs/benchmarks.md), and print the sizes against the 64 MiB a run may carry.

    .venv/bin/python scripts/gpu_bundle.py            # here (network: pip downloads the wheels once)

* ``.gpu/comfyui/``: the unpacked host (``.cache/comfyui``) without its tests, ``__pycache__`` and the
  tokenizer data of text encoders the check never builds (19 MB of vocabularies);
* ``.gpu/whl/``: Python 3.12 manylinux wheels of the packages the in-process host, gsplat and the tests import
  that the GPU machine's image lacks (``WHEELS``; everything else they import is in the image's list).

On the GPU machine (run in the repository root, ``.gpu`` carried):

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/*.whl && \
      PYTHONPATH=/tmp/site FULL4D_COMFYUI_DIR=$PWD/.gpu/comfyui python3 scripts/gpu_check.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / ".gpu"
LIMIT = 64 * 2**20
# not in the GPU image's package list (docs/benchmarks.md); versions as this project's .venv has them
WHEELS = ["av==18.1.0", "gsplat==1.5.3", "kornia==0.9.0", "kornia_rs==0.2.0", "spandrel==0.4.2", "torchsde==0.2.6",
          "trampoline==0.1.2", "pydantic==2.14.4", "pydantic_core==2.50.5", "pydantic-settings==2.16.3",
          "annotated-types==0.8.0", "typing-inspection==0.4.5", "python-dotenv==1.2.4"]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64"]


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _skip(folder: str, names: list[str]) -> set[str]:
    """copytree ignore: tests, caches, and tokenizer data (the .py files beside them stay)."""
    drop = {n for n in names if n in ("__pycache__", "tests", "tests-unit", ".git")}
    if "tokenizer" in Path(folder).name:
        drop |= {n for n in names if not n.endswith(".py")}
    return drop


def pack_size() -> int:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.split(b"\0")
    return sum((ROOT / f.decode()).stat().st_size for f in files if f and (ROOT / f.decode()).is_file())


def main() -> int:
    host = ROOT / ".cache" / "comfyui"
    if not (host / "main.py").is_file():
        print("no host at .cache/comfyui: run `bash scripts/setup.sh` first", file=sys.stderr)
        return 1
    shutil.rmtree(OUT / "comfyui", ignore_errors=True)
    shutil.copytree(host, OUT / "comfyui", ignore=_skip, symlinks=True)
    whl = OUT / "whl"
    whl.mkdir(parents=True, exist_ok=True)
    plat = [a for p in PLATFORMS for a in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *plat, "-d", str(whl), *WHEELS], check=True)
    sizes = {"pack (working tree)": pack_size(), ".gpu/comfyui (host)": _size(OUT / "comfyui"),
             ".gpu/whl (wheels)": _size(whl)}
    total = sum(sizes.values())
    print("| what travels | MiB |\n|---|---|")
    for k, v in sizes.items():
        print(f"| {k} | {v / 2**20:.1f} |")
    print(f"| total (limit 64) | {total / 2**20:.1f} |")
    return 0 if total <= LIMIT else 2


if __name__ == "__main__":
    sys.exit(main())
