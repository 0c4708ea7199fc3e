"""A full disk during an export (Full4DSave4DGS, ``gaussians.export.export_scene``) and during a fit checkpoint
(``gaussians.fit``): the write fails with a message that says so, nothing half-written is left in the output
folder, and an existing checkpoint stays whole.

The full disk is the process's file size limit (``RLIMIT_FSIZE``, with ``SIGXFSZ`` ignored: a write past it fails
with EFBIG, as a full disk fails with ENOSPC) in a subprocess, so the test process keeps its own limits. The
limits are set from the sizes an unlimited run writes: between the first frame's size and the 4D file's (the
export fails after its first files), below the first frame's (it fails at once), below the checkpoint's.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow,  # subprocesses that import torch and fit
              pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE / SIGXFSZ as on Linux")]

_PRELUDE = r"""
import json, resource, signal, sys
import torch
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us

def limit(nbytes):
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

def report(fn):
    try:
        fn()
        print(json.dumps({"type": None}))
    except Exception as e:
        print(json.dumps({"type": type(e).__name__, "oserror": isinstance(e, OSError), "message": str(e)}))
"""

_EXPORT = _PRELUDE + r"""
from comfyui_full4d.gaussians import Gaussians, HexPlane, HexPlaneConfig, Scene4D
from comfyui_full4d.gaussians.export import export_scene

out, nbytes = sys.argv[1], int(sys.argv[2])
g = torch.Generator().manual_seed(0)
n = 300
gs = Gaussians(means=torch.randn(n, 3, generator=g), quats=torch.randn(n, 4, generator=g),
               log_scales=torch.randn(n, 3, generator=g) - 3, opacity_logits=torch.randn(n, generator=g),
               sh_dc=torch.randn(n, 1, 3, generator=g), sh_rest=torch.randn(n, 15, 3, generator=g))
scene = Scene4D(gs, HexPlane(HexPlaneConfig(feature_dim=4, base_res=8, time_res=4, multires=(1,), hidden=16)),
                (0.0, 1.0), torch.tensor([[-2.0, -2, -2], [2, 2, 2]]), 3)
if nbytes:
    limit(nbytes)
report(lambda: print(json.dumps(export_scene(scene, out, "scene/export", 3))))
"""

_FIT = _PRELUDE + r"""
from comfyui_full4d.gaussians import DensifyConfig, FitConfig, HexPlaneConfig, backproject_views, fit_4dgs
from comfyui_full4d.media.synthetic import make_capture

ck, iterations, nbytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cap = make_capture(3, 2, 24, 40)
cams = cap.metric_cameras
pts, cols = backproject_views(cap.depth[:, 0], cap.views[:, 0], cams, max_points=400)
cfg = FitConfig(iterations=iterations, sh_degree=1, densify=DensifyConfig(start=10**6, stop=10**6 + 1),
                hexplane=HexPlaneConfig(feature_dim=4, base_res=8, time_res=2, multires=(1,), hidden=16))
if nbytes:
    limit(nbytes)
report(lambda: fit_4dgs(cap.views, cams, cap.times, cfg, pts, cols, checkpoint_path=ck, checkpoint_every=5))
"""


def _run(script: str, *args) -> dict:
    # cwd outside the repository: ``python -c`` puts the cwd first on sys.path, where the repository's own package
    # would shadow the one the test process imports (scripts/mutations.py's changed copy, on PYTHONPATH)
    r = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, OMP_NUM_THREADS="1"), cwd=tempfile.gettempdir())
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _entries(folder: Path) -> list[str]:
    """Every file and folder below ``folder`` (hidden ones included), relative."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def export_sizes(tmp_path_factory) -> dict[str, int]:
    """The sizes of the files an unlimited export writes."""
    out = tmp_path_factory.mktemp("unlimited")
    assert _run(_EXPORT, out, 0)["type"] is None
    files = {p.name: p.stat().st_size for p in out.rglob("*") if p.is_file()}
    assert set(files) == {"frame_0000.ply", "frame_0001.ply", "frame_0002.ply", "scene4d.safetensors"}
    return files


@pytest.mark.parametrize("where", ["first frame", "4D file"])
def test_export_on_a_full_disk_fails_clearly_and_leaves_nothing(tmp_path, export_sizes, where):
    ply, scene4d = export_sizes["frame_0000.ply"], export_sizes["scene4d.safetensors"]
    assert scene4d > ply + 1000  # the 4D file holds the HexPlane too: a limit between the two exists
    nbytes = ply // 2 if where == "first frame" else (ply + scene4d) // 2
    got = _run(_EXPORT, tmp_path, nbytes)
    assert got["type"] == "OutOfSpace" and got["oserror"], got
    text = got["message"]
    assert "export 'scene/export'" in text and "the disk is full" in text, text
    assert ("frame_0000.ply" if where == "first frame" else "scene4d.safetensors") in text, text
    assert "Nothing of this export is left in the output folder" in text, text
    assert _entries(tmp_path) in ([], ["scene"]), _entries(tmp_path)  # no file, no staging folder, no temp file


def test_checkpoint_on_a_full_disk_fails_clearly_and_keeps_the_last_one(tmp_path):
    ck = tmp_path / "fit.safetensors"
    assert _run(_FIT, ck, 5, 0)["type"] is None  # the checkpoint of iteration 5
    before = hashlib.sha256(ck.read_bytes()).hexdigest()
    got = _run(_FIT, ck, 10, ck.stat().st_size // 2)  # resumes at 5; the checkpoint of 10 finds no room
    assert got["type"] == "OutOfSpace" and got["oserror"], got
    text = got["message"]
    assert "4DGS fit: no room for its checkpoint at iteration 10" in text and "the disk is full" in text, text
    assert "the checkpoint of iteration 5 is kept as it was" in text, text
    assert hashlib.sha256(ck.read_bytes()).hexdigest() == before  # whole and unchanged
    assert _entries(tmp_path) == ["fit.safetensors"]  # no temp file left beside it
    assert _run(_FIT, ck, 10, 0)["type"] is None  # with room again the fit resumes from it and finishes
