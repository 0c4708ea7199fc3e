"""The headless runner (python -m comfyui_full4d.client.run) against the real server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from comfyui_full4d.client.run import apply_overrides, format_error
from fixtures.demo import DEMO, demo_size
from host import ROOT


def small_demo(seed: int = 0) -> dict:
    """The demo workflow at a test size (the runner's own --set overrides shrink it)."""
    size = demo_size(json.loads(DEMO.read_text()), steps=2, iterations=10)
    sets = [f"1.seed={seed}"] + [f"{nid}.{k}={json.dumps(v)}" for nid, values in size.items() for k, v in values.items()]
    return apply_overrides(json.loads(DEMO.read_text()), sets)


def test_apply_overrides_parses_json_and_leaves_input_untouched():
    p = {"1": {"class_type": "X", "inputs": {"seed": 0, "name": "a"}}}
    q = apply_overrides(p, ["1.seed=5", "1.name=hello world", "1.flag=true"])
    assert q["1"]["inputs"] == {"seed": 5, "name": "hello world", "flag": True}
    assert p["1"]["inputs"] == {"seed": 0, "name": "a"}
    with pytest.raises(ValueError, match="no node '9'"):
        apply_overrides(p, ["9.seed=1"])
    with pytest.raises(ValueError, match="NODE_ID.INPUT=VALUE"):
        apply_overrides(p, ["seed=1"])


def test_format_error_names_node_and_input():
    ans = {"error": {"message": "Prompt outputs failed validation", "details": ""},
           "node_errors": {"1": {"class_type": "Full4DSyntheticScene",
                                 "errors": [{"message": "Value bigger than max", "details": "num_views: 99 > 16",
                                             "extra_info": {"input_name": "num_views"}}]}}}
    text = format_error(ans)
    assert "node 1 (Full4DSyntheticScene) input 'num_views'" in text and "99 > 16" in text


@pytest.mark.server
def test_runner_cli_runs_demo_and_downloads_outputs(comfy_server, tmp_path):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(small_demo()))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "comfyui_full4d.client.run", str(wf), "--server", comfy_server.url,
                        "--set", "1.seed=2", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr + comfy_server.log()[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert any(f.startswith("demo_side_by_side") and f.endswith(".mp4") for f in files), files
    assert any(f.startswith("demo_generated_grid") and f.endswith(".mp4") for f in files), files
    assert any(f.startswith("demo_projection_sheet") and f.endswith(".png") for f in files), files
    assert all((out / f).stat().st_size > 1000 for f in files)


@pytest.mark.server
def test_runner_cli_reports_host_validation_error(comfy_server, tmp_path):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(small_demo()))
    r = subprocess.run([sys.executable, "-m", "comfyui_full4d.client.run", str(wf), "--server", comfy_server.url,
                        "--set", "1.num_views=1000", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert "num_views" in r.stderr and "Full4DSyntheticScene" in r.stderr


@pytest.mark.server
@pytest.mark.slow
def test_five_queued_one_cancelled_server_stays_healthy(comfy_server):
    ids = []
    for i in range(5):
        ans = comfy_server.post_prompt(small_demo(seed=100 + i))
        assert "prompt_id" in ans, ans
        ids.append(ans["prompt_id"])
    comfy_server.request("/queue", {"delete": [ids[3]]})  # cancel one while still pending
    done = {pid: comfy_server.wait_history(pid, timeout=600) for pid in ids[:3] + ids[4:]}
    assert all(h["status"]["completed"] for h in done.values())
    time.sleep(0.5)
    assert comfy_server.history(ids[3]) == {}, "the cancelled prompt ran anyway"
    assert comfy_server.get_json("/queue") == {"queue_running": [], "queue_pending": []}
    assert comfy_server.get_json("/system_stats")["system"]


@pytest.mark.server
@pytest.mark.slow
def test_demo_script_prints_psnr_and_every_written_file(tmp_path, comfy_host):  # comfy_host: host importable
    """scripts/demo.py (what `make demo` runs) on the demo workflow at a test size: it prints the scores against
    the truth (generated views beside the projection, the fit's training-view PSNR, both orbits), short progress
    lines (the output is a pipe, not a terminal: no carriage-return bars) and the path of every file it wrote, the
    exported scene folder and its files included."""
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(small_demo()))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py"), "--workflow", str(wf), "--out", str(out)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = r.stdout.split("Scores against the truth:", 1)[1]
    for row in ("projection only", "generated views", "training-view PSNR", "orbit: fit on generated views",
                "orbit: fit on true views", "beat the projection by"):
        assert row in report, (row, report[:2000])
    assert "\r" not in r.stdout and max(map(len, r.stdout.splitlines())) < 300, "progress bar lines in a pipe"
    assert "Generate the new views (Full-4D)" in r.stdout  # says what it is running
    listed = {Path(line.strip()) for line in r.stdout.split("files written under", 1)[1].splitlines()[1:]
              if line.startswith("  ")}
    written = {p for p in out.rglob("*") if p.is_file()}
    assert {p for p in listed if not p.is_dir()} == written, sorted(map(str, listed ^ written))
    (folder,) = [p for p in listed if p.is_dir()]
    assert folder.name.startswith("demo_scene") and len(list(folder.glob("*.ply"))) == 2
    assert any(p.suffix == ".mp4" for p in listed)


def test_progress_says_what_runs_and_writes_short_lines_into_a_log():
    """Into a log (not a terminal) the progress handler writes the node's title and one line per bar at most every
    ``every`` seconds plus its last step, no carriage returns; on a terminal it redraws one line in place."""
    import io

    from comfyui_full4d.client.run import progress_printer

    prompt = {"5": {"class_type": "Full4DFit4DGS", "_meta": {"title": "Fit the views"}}}
    log, term = io.StringIO(), io.StringIO()
    for buf, tty in ((log, False), (term, True)):
        show = progress_printer(prompt, buf, tty=tty, every=1e9)
        show({"type": "executing", "data": {"node": "5"}})
        for i in range(1, 501):
            show({"type": "progress", "data": {"node": "5", "value": i, "max": 500}})
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 2, lines
    assert "Fit the views" in lines[0] and lines[1].strip().startswith("Fit the views: 500/500")
    assert term.getvalue().count("\r") == 500 and "Fit the views" in term.getvalue()
