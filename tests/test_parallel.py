"""Exact sharded sampling (comfyui_full4d.diffusion.parallel, host/parallel.py) on CPU with gloo, 2, 3 and 4 processes.

Every sharded result is compared with the one-process path (no mesh) on the same inputs: a tiny 12-head
Wan2.2 through the host's model classes with a random non-zero adapter (camera MLP, fused branch and
projector all non-zero, so views really interact), fp32, tolerance 1e-5 of the largest value (rel_err). One
spawn per world size (``_world``), shared by the tests of that size.
"""

from __future__ import annotations

import functools

import pytest
import torch

from fixtures.parallel import HEADS, check_host_cases, rel_err, run_world

TOL = 1e-5  # of the largest value (rel_err)
ATTENTION = {  # (V, F, S, rule switches): U dividing V or not, mask rules on and off
    2: [(4, 4, 6, {}), (3, 4, 6, {}), (4, 4, 6, {"intra_time": False}), (4, 4, 6, {"cross_half": False})],
    3: [(3, 4, 6, {}), (4, 4, 6, {}), (5, 2, 3, {})],
    4: [(4, 4, 6, {}), (6, 4, 6, {})],
}
HOST = {  # (name, kind, layout, V); ":views" keeps whole views where auto would shard tokens (test_parallel_tokens.py)
    2: [("call", "call", "1x2", 4), ("sample", "sample", "1x2", 4), ("cfg", "sample", "2x1", 3)],
    3: [("call3", "call", "1x3", 3), ("call4", "call", "1x3:views", 4), ("sample4", "sample", "1x3:views", 4),
        ("free4", "free", "1x3:views", 4)],
    4: [("cfg_u2", "sample", "2x2", 4), ("u4_v6", "call", "1x4:views", 6), ("free_cfg_u2", "free", "2x2", 4)],
}


@functools.lru_cache(maxsize=None)
def _world(n: int) -> dict:
    return run_world(n, HOST[n], ATTENTION[n])


@pytest.mark.slow  # spawns processes
@pytest.mark.parametrize("world", [2, 3, 4])
def test_ulysses_attention_is_the_one_process_attention(world):
    """The all-to-all attention (heads scattered, tokens gathered, whole views per rank) equals
    fused_tv_attention over the whole scene on every rank, for every case of ATTENTION."""
    ranks = _world(world)["attention"]
    assert len(ranks) == world and all(len(r) == len(ATTENTION[world]) for r in ranks)
    for rank, res in enumerate(ranks):
        for key, (err, _) in res.items():
            assert err <= TOL, (rank, key, err)


@pytest.mark.slow  # spawns processes
def test_ulysses_bytes_are_the_formula():
    """Bytes each rank hands the all-to-alls = 4 * B * N_u * C * (U - 1) / U * e when U divides V."""
    from comfyui_full4d.diffusion.parallel import ulysses_bytes_per_block

    V, F, S = 4, 4, 6
    want = ulysses_bytes_per_block(V * F * S, HEADS * 16, 2, 4, scenes=2)
    assert [r[(V, F, S, ())][1] for r in _world(2)["attention"]] == [want] * 2


@pytest.mark.slow  # spawns processes
def test_two_processes_ulysses_and_cfg_split():
    """1x2 (U divides V: one model call through every block, and a 2-step Full4DSampler run) and 2x1 (CFG split)."""
    res = _world(2)["host"]
    check_host_cases(res, [c[0] for c in HOST[2]], TOL)
    assert set(res["cfg"][2]) == {"cfg"}  # the CFG split sends nothing per layer
    assert res["sample"][2]["ulysses"] > 0


@pytest.mark.slow  # spawns processes
def test_three_processes_views_not_divisible():
    """1x3 with V=3 (one view per rank) and V=4 (2 + 1 + 1 views: U does not divide V), the Full-4D model and
    the training-free sampler's cross-view mode."""
    check_host_cases(_world(3)["host"], [c[0] for c in HOST[3]], TOL)


@pytest.mark.slow  # spawns processes
def test_four_processes_cfg_times_ulysses():
    """2x2 (CFG split x 2-way Ulysses; Full-4D and training-free cross-view) and 1x4 with V=6 (2 + 2 + 1 + 1 views)."""
    check_host_cases(_world(4)["host"], [c[0] for c in HOST[4]], TOL)


@pytest.mark.slow  # spawns processes
def test_two_processes_with_a_wan21_class_model():
    """The sharded paths with a Wan2.1-class model (WAN21: 16 channels, (B,) timesteps from the host): one model
    call and a 2-step Full4DSampler run over whole views (1x2), one call over each view's tokens, and the
    training-free cross-view mode over tokens (its per-row modulation then has one entry per row)."""
    cases = [("call", "call", "1x2", 4), ("sample", "sample", "1x2", 4), ("tokens", "call", "1x2:tokens", 4),
             ("free", "free", "1x2:tokens", 3)]
    check_host_cases(run_world(2, cases, model="wan21")["host"], [c[0] for c in cases], TOL)


def test_layout_errors_name_the_input():
    from comfyui_full4d.diffusion.parallel import Layout, heads_to_tokens, view_split

    assert Layout.parse("2x3") == Layout(2, 3) and Layout.parse("auto", 8) == Layout(2, 4)
    assert Layout.parse("auto", 3) == Layout(1, 3)
    with pytest.raises(ValueError, match="CxU"):
        Layout.parse("four")
    with pytest.raises(ValueError, match="cfg must be 1"):
        Layout(3, 1)
    with pytest.raises(ValueError, match="at least 5 views"):
        view_split(4, 5)
    assert view_split(6, 4) == [(0, 2), (2, 4), (4, 5), (5, 6)]
    with pytest.raises(ValueError, match="heads .12. divisible by 5"):
        heads_to_tokens(torch.zeros(1, 12, 4, 2), [4] * 5, None)


def _torchrun(nproc: int, files: dict, out, layout: str) -> None:
    import os
    import subprocess
    import sys

    from fixtures.parallel import HOST_DIR

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "comfyui_full4d.host.torchrun", "--comfyui", str(HOST_DIR), "--model", str(files["model"]),
           "--adapter", str(files["adapter"]), "--scene", str(files["scene"]), "--out", str(out),
           "--layout", layout, "--steps", "2", "--seed", "5", "--cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, cwd=out.parent, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.slow  # spawns processes
def test_torchrun_cli_matches_one_process(comfy_host, tmp_path):
    """The headless CLI under torchrun: 2 processes (1x2 Ulysses, a 2-head model loaded by the host's loader from
    its file, a random adapter file) write the same latents as 1 process."""
    from safetensors.torch import load_file

    from fixtures.parallel import write_cli_inputs

    files = write_cli_inputs(tmp_path, V=4)
    _torchrun(1, files, tmp_path / "one.safetensors", "1x1")
    _torchrun(2, files, tmp_path / "two.safetensors", "1x2")
    one, two = (load_file(str(tmp_path / f"{n}.safetensors"))["samples"] for n in ("one", "two"))
    assert one.shape == (3, 48, 2, 4, 6) and one.abs().max() > 0.1
    assert rel_err(one, two) <= TOL
    from safetensors import safe_open

    meta = safe_open(str(tmp_path / "two.safetensors"), framework="pt").metadata()
    assert meta["layout"] == "1x2" and int(meta["bytes_sent_rank0_ulysses"]) > 0
