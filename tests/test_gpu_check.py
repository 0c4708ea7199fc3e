"""scripts/gpu_check.py --dry-run (issue 20): the one-command GPU check runs on the CPU at tiny sizes, prints its
markdown table with every part's rows, reports the CUDA parts "skipped: no CUDA" and writes the table to $OUT,
so the script cannot rot between GPU runs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from host import ROOT

pytestmark = pytest.mark.slow  # ~1-3 min on the shared CPU: pytest -m cuda collection, a tiny fit, attention


@pytest.mark.timeout(900)
def test_gpu_check_dry_run_prints_the_table_with_cuda_rows_skipped(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out")}
    p = subprocess.run([sys.executable, "scripts/gpu_check.py", "--dry-run"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=850)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("|")]
    assert lines[:2] == ["| part | check | status | result |", "|---|---|---|---|"]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]
    by_part = {}
    for part, check, status, result in rows:
        by_part.setdefault(part, []).append((check, status, result))
    assert set(by_part) == {"0 gsplat", "1 tests", "2 attention", "3 fit", "4 memory"}
    assert not [r for r in rows if r[2] == "FAILED"], rows
    tests = {c: s for c, s, _ in by_part["1 tests"] if c != "part wall time"}
    for name in ("test_attention::test_flex_gradients_cuda",
                 "test_rasterize::test_gsplat_backend_matches_torch_backend_on_cuda",
                 "test_cuda::test_the_fit_runs_on_cuda_with_gsplat", "test_cuda::test_fmd_with_the_teacher_on_the_gpu",
                 "test_cuda::test_the_sampler_on_cuda_gives_the_cpu_latents",
                 "test_cuda::test_the_training_free_sampler_on_cuda_gives_the_cpu_latents"):
        assert name in tests
    if not torch.cuda.is_available():
        assert set(tests.values()) == {"skipped: no CUDA"}
        skipped = {(p_, c) for p_, c, s, _ in rows if s == "skipped: no CUDA"}
        assert ("0 gsplat", "build / load gsplat's CUDA kernels") in skipped
        assert any(p_ == "2 attention" and c.startswith("flex") for p_, c in skipped)
        assert any(p_ == "3 fit" and c.startswith("gsplat") for p_, c in skipped)
        assert any(p_ == "4 memory" for p_, c in skipped)
    ran = {(p_, c.split(",")[0]): r for p_, c, s, r in rows if s == "ran"}
    for method in ("exact fwd / fwd+bwd", "sdpa (unmasked) fwd / fwd+bwd"):
        assert "ms" in ran[("2 attention", method)]
    assert "it/s" in ran[("3 fit", "torch compositor")] and "dB" in ran[("3 fit", "torch compositor")]
    written = (tmp_path / "out" / "gpu_check.md").read_text()
    assert written.strip() == "\n".join(lines)
