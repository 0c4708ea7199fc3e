"""Load: 20 queued rig-iteration prompts with 5 cancellations against the real server.

The rig-iteration workflow (workflows/api/rig_iteration_api.json) runs for real: a tiny random
Depth Anything 3 in models/depth_anything_3/ and a synthetic video in input/. Asserts all
non-cancelled prompts complete, the host's cache reuses the loaded DA3 (the loader does not
run again), and the server's memory returns to its warmed-up level within a tolerance.
Figures go to tests/artifacts/load.json for docs/reliability.md.
"""

from __future__ import annotations

import json
import time

import psutil
import pytest

from fixtures.da3 import NAME, install_da3
from host import ROOT
from media import synthetic_video

pytestmark = [pytest.mark.server, pytest.mark.slow]

TOLERANCE_MB = 200


def rig_prompt(video: str, radius: float) -> dict:
    p = json.loads((ROOT / "workflows" / "api" / "rig_iteration_api.json").read_text())
    p["1"]["inputs"].update(file=video, num_frames=9, stride=1, width=96, height=64)
    p["2"]["inputs"]["model"] = NAME
    p["3"]["inputs"].update(batch=9, process_res=126)
    p["4"]["inputs"].update(radius=radius, width=96, height=64)
    p["5"]["inputs"].update(width=96, height=64)
    return p


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def test_twenty_queued_five_cancelled(comfy_server, artifacts):
    install_da3(comfy_server.models_dir)
    synthetic_video(comfy_server.input_dir / "load_test.mp4")
    # warm up: loads DA3 once and fills the caches
    pid0, msgs = comfy_server.run_ws(rig_prompt("load_test.mp4", 1.0), timeout=600)
    executed0 = {m["data"]["node"] for m in msgs if m["type"] == "executing" and m["data"].get("node")}
    assert "2" in executed0, "the warm-up run should load DA3"
    rss_warm = rss_mb(comfy_server.proc.pid)

    ids = [comfy_server.post_prompt(rig_prompt("load_test.mp4", 0.5 + 0.05 * i))["prompt_id"] for i in range(20)]
    deleted = ids[15:19]
    comfy_server.request("/queue", {"delete": deleted})  # 4 cancelled while pending
    t0 = time.monotonic()
    while not comfy_server.get_json("/queue")["queue_running"] and time.monotonic() - t0 < 60:
        time.sleep(0.05)
    comfy_server.interrupt()  # the 5th cancellation: whichever prompt is running now
    histories = {pid: comfy_server.wait_history(pid, timeout=900) for pid in ids if pid not in deleted}
    elapsed = time.monotonic() - t0

    completed = [p for p, h in histories.items() if h["status"].get("completed")]
    interrupted = [p for p, h in histories.items() if not h["status"].get("completed")]
    assert len(interrupted) <= 1 and len(completed) + len(interrupted) == 16
    assert len(completed) >= 15
    for pid in interrupted:
        msgs = [m[0] for m in histories[pid]["status"]["messages"]]
        assert "execution_interrupted" in msgs, histories[pid]["status"]
    assert all(comfy_server.history(p) == {} for p in deleted), "a cancelled prompt ran anyway"
    # DA3 was loaded once: later prompts take it from the host's cache
    for pid in completed:
        cached = [m[1] for m in histories[pid]["status"]["messages"] if m[0] == "execution_cached"]
        assert cached and "2" in cached[0]["nodes"], f"prompt {pid} reloaded the DA3 weights"
    assert comfy_server.get_json("/queue") == {"queue_running": [], "queue_pending": []}

    # memory back to its warmed-up level (allocator noise within TOLERANCE_MB)
    comfy_server.request("/free", {"free_memory": False, "unload_models": False})
    time.sleep(1.0)
    rss_end = rss_mb(comfy_server.proc.pid)
    (artifacts / "load.json").write_text(json.dumps({
        "prompts": 20, "deleted_pending": len(deleted), "interrupted_running": len(interrupted),
        "completed": len(completed), "seconds": round(elapsed, 1), "rss_warm_mb": round(rss_warm, 1),
        "rss_end_mb": round(rss_end, 1), "tolerance_mb": TOLERANCE_MB}, indent=1))
    assert rss_end - rss_warm < TOLERANCE_MB, f"server memory grew {rss_end - rss_warm:.0f} MB over 20 prompts"
    # and the server still answers a fresh prompt
    pid, _ = comfy_server.run_ws(rig_prompt("load_test.mp4", 1.3), timeout=600)
    assert comfy_server.history(pid)["status"]["completed"]
