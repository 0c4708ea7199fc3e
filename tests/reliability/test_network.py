"""The demo runs with every outbound network connection of the server process blocked."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures.demo import small_demo
from host import Server

pytestmark = [pytest.mark.server, pytest.mark.slow]
GUARD = Path(__file__).resolve().parent / "netguard"


def test_demo_runs_with_network_blocked(tmp_path):
    log = tmp_path / "net.log"
    srv = Server.start(tmp_path / "base", env={"PYTHONPATH": str(GUARD), "FULL4D_NETGUARD_LOG": str(log)})
    try:
        prompt = small_demo(steps=2, iterations=10)  # the embedded nano model: no file to fetch
        pid, _ = srv.run_ws(prompt, timeout=600)
        assert srv.history(pid)["status"]["completed"]
    finally:
        srv.stop()
    blocked = log.read_text() if log.exists() else ""
    assert "ACTIVE" in blocked, "the network guard was not loaded in the server process"
    # the guard is active (the host itself may try, e.g. for version checks; our pack must never)
    assert "full4d" not in blocked.lower(), blocked[:3000]
