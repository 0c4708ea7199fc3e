"""Shared fixtures: the real ComfyUI host in-process (``comfy_host``) and as a server (``comfy_server``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from host import InProcessHost, Server  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@pytest.fixture(scope="session")
def comfy_host(tmp_path_factory) -> InProcessHost:
    """The host imported in this process on CPU with the pack loaded by the host's loader."""
    return InProcessHost.start(tmp_path_factory.mktemp("comfy_base"))


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory):
    """The real ComfyUI server (subprocess) with the pack in custom_nodes/ (and tests/test_pack). Its pool workers
    fail 7-step jobs on rank 1 (host/pool.py FAULT_ENV, tests/test_parallel_server.py); a Ray it starts stays on
    loopback, without usage stats or an auth token file (fixtures/parallel.py RAY_ENV)."""
    from fixtures.parallel import RAY_ENV

    srv = Server.start(tmp_path_factory.mktemp("server_base"),
                       extra_custom_nodes=[Path(__file__).resolve().parent / "test_pack"],
                       env={"FULL4D_TEST_FAULT": "1:7", **RAY_ENV})
    yield srv
    srv.stop()
    log = srv.log()
    (ARTIFACTS).mkdir(exist_ok=True)
    (ARTIFACTS / "server.log").write_text(log)


@pytest.fixture(scope="module")
def tiny():
    """A 3-view, 2-frame 24x40 synthetic capture, its metric cameras and 400 init points / colours of frame 0
    (the 4DGS fit tests)."""
    from comfyui_full4d.gaussians import backproject_views
    from comfyui_full4d.media.synthetic import make_capture

    cap = make_capture(3, 2, 24, 40)
    cams = cap.metric_cameras
    pts, cols = backproject_views(cap.depth[:, 0], cap.views[:, 0], cams, max_points=400)
    return cap, cams, pts, cols


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def pytest_configure(config):
    os.environ.setdefault("PYTHONHASHSEED", "0")
