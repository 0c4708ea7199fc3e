"""The demo runs with every outbound network connection of the server process blocked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfyui_full4d.client.run import apply_overrides
from host import ROOT, Server

pytestmark = [pytest.mark.server, pytest.mark.slow]
GUARD = Path(__file__).resolve().parent / "netguard"


def test_demo_runs_with_network_blocked(tmp_path):
    log = tmp_path / "net.log"
    srv = Server.start(tmp_path / "base", env={"PYTHONPATH": str(GUARD), "FULL4D_NETGUARD_LOG": str(log)})
    try:
        demo = json.loads((ROOT / "workflows" / "api" / "demo_synthetic_api.json").read_text())
        prompt = apply_overrides(demo, ["1.num_views=3", "1.num_frames=5", "1.width=64", "1.height=48",
                                        "4.num_views=3", "9.iterations=10", "9.orbit_frames=2", "11.num_frames=4",
                                        "14.num_frames=2", "15.num_frames=2"])
        pid, _ = srv.run_ws(prompt, timeout=600)
        assert srv.history(pid)["status"]["completed"]
    finally:
        srv.stop()
    blocked = log.read_text() if log.exists() else ""
    assert "ACTIVE" in blocked, "the network guard was not loaded in the server process"
    # the guard is active (the host itself may try, e.g. for version checks; our pack must never)
    assert "full4d" not in blocked.lower(), blocked[:3000]
