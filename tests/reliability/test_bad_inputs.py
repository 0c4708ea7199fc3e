"""Table-driven bad inputs through the real server's HTTP API (issue: reliability).

Each case asserts (a) the prompt fails with the host's normal error response, naming the node
and the input, with a message a user can act on; (b) the server stays up and the next good
prompt succeeds; (c) nothing partial is left in the output folder. Results are appended to
tests/artifacts/reliability.jsonl for docs/reliability.md.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch

from host import PromptFailed, Server

pytestmark = [pytest.mark.server]


@dataclass(frozen=True)
class Case:
    name: str
    prompt: Callable[[Server], dict]  # may write files into the server's input/models folders first
    node: str                         # the node id the error must name
    words: tuple[str, ...]            # substrings the error message must contain (case-insensitive)


def synth(**kw) -> dict:
    inputs = {"seed": 0, "num_views": 3, "num_frames": 5, "width": 48, "height": 32, "radius": 1.0,
              "elevation": 0.0, "fov": 50.0}
    inputs.update(kw)
    return {"class_type": "Full4DSyntheticScene", "inputs": inputs}


def save(images_ref: list) -> dict:
    return {"class_type": "SaveImage", "inputs": {"images": images_ref, "filename_prefix": "full4d_rel/out"}}


def good_prompt() -> dict:
    return {"1": synth(), "2": save(["1", 0])}


def sampler_graph(srv: Server, adapter: str = "none (zero-init)", num_views_latent: int = 3, frames: int = 2,
                  rig_views: int = 3, **sampler_kw) -> dict:
    from fixtures.wan import tiny_wan_path

    dest = srv.models_dir / "diffusion_models"
    dest.mkdir(parents=True, exist_ok=True)
    if not (dest / "full4d_tiny_wan.safetensors").exists():
        shutil.copy(tiny_wan_path(), dest / "full4d_tiny_wan.safetensors")
    sk = {"seed": 0, "steps": 2, "cfg": 5.0, "shift": 5.0, "sampler_name": "euler", "scheduler": "simple",
          "views_per_pass": 0, "include_source": False}
    sk.update(sampler_kw)
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "full4d_tiny_wan.safetensors", "weight_dtype": "default"}},
        "2": {"class_type": "Full4DAdapterLoader", "inputs": {"model": ["1", 0], "adapter": adapter}},
        "3": {"class_type": "Full4DTestConditioning", "inputs": {"seed": 0, "length": 8}},
        "5": {"class_type": "Full4DTestLatents", "inputs": {"seed": 0, "num_views": num_views_latent,
                                                             "frames": frames, "height": 4, "width": 6}},
        "6": synth(num_views=rig_views),
        "7": {"class_type": "Full4DSampler", "inputs": {"model": ["2", 0], "positive": ["3", 0], "negative": ["3", 0],
                                                        "source": ["5", 0], "projections": ["5", 1], "rig": ["6", 2], **sk}},
        "8": {"class_type": "SaveLatent", "inputs": {"samples": ["7", 0], "filename_prefix": "full4d_rel/latent"}},
    }


def relink(prompt: dict, node: str, name: str, ref: list) -> dict:
    prompt[node]["inputs"][name] = ref
    return prompt


def put_adapter_file(srv: Server, name: str, content: bytes | None = None, dims: tuple[int, int, int] | None = None) -> str:
    from comfyui_full4d.diffusion.adapter import AdapterConfig, Full4DAdapter, save_adapter

    d = srv.models_dir / "full4d"
    d.mkdir(parents=True, exist_ok=True)
    if dims is not None:
        dim, heads, blocks = dims
        save_adapter(Full4DAdapter(AdapterConfig(dim=dim, num_heads=heads, num_blocks=blocks)).reset_parameters(), d / name)
    else:
        (d / name).write_bytes(content)
    return name


def truncated_adapter(srv: Server) -> bytes:
    name = put_adapter_file(srv, "_whole.safetensors", dims=(128, 1, 2))
    data = (srv.models_dir / "full4d" / name).read_bytes()
    return data[: len(data) // 2]


CASES = [
    # host-side validation of widget values (the host's own error response)
    Case("one-view rig (num_views=1)", lambda s: {"1": synth(num_views=1), "2": save(["1", 0])}, "1", ("num_views",)),
    Case("zero width", lambda s: {"1": synth(width=0), "2": save(["1", 0])}, "1", ("width",)),
    Case("absurd view count", lambda s: {"1": synth(num_views=10_000), "2": save(["1", 0])}, "1", ("num_views",)),
    Case("wrong type: string for an INT", lambda s: {"1": synth(num_frames="many"), "2": save(["1", 0])}, "1",
         ("num_frames",)),
    Case("wrong type: IMAGE into a RIG socket", lambda s: relink(sampler_graph(s), "7", "rig", ["6", 0]), "7",
         ("rig",)),
    Case("negative steps", lambda s: sampler_graph(s, steps=-5), "7", ("steps",)),
    Case("absurd steps", lambda s: sampler_graph(s, steps=10**9), "7", ("steps",)),
    # execution-time checks in the pack (ValueError naming the input)
    Case("view grid: batch not a multiple of num_views",
         lambda s: {"1": synth(num_views=3, num_frames=5),
                    "2": {"class_type": "Full4DViewGrid", "inputs": {"images": ["1", 0], "num_views": 4, "columns": 0, "gap": 0}},
                    "3": save(["2", 0])}, "2", ("num_views",)),
    Case("latents of the wrong view count", lambda s: sampler_graph(s, num_views_latent=4, rig_views=3), "7",
         ("projections",)),
    Case("rig with more views than latents", lambda s: sampler_graph(s, num_views_latent=2, rig_views=5), "7",
         ("projections",)),
    Case("adapter for another model size",
         lambda s: sampler_graph(s, adapter=put_adapter_file(s, "other_size.safetensors", dims=(64, 1, 2))), "2",
         ("adapter",)),
    Case("truncated adapter file",
         lambda s: sampler_graph(s, adapter=put_adapter_file(s, "truncated.safetensors", truncated_adapter(s))), "2",
         ("adapter",)),
    Case("non-safetensors file renamed",
         lambda s: sampler_graph(s, adapter=put_adapter_file(s, "renamed.safetensors", b"PK\x03\x04 this is a zip")),
         "2", ("adapter",)),
    Case("pool workers given a model of another size", lambda s: pool_of_another_model(s), "7",
         ("worker", "tiny_ok.safetensors", "another model size")),
]


def pool_of_another_model(srv: Server) -> dict:
    """Full4DParallel told a diffusion model file of another size (2 heads, dim 256) than the one the adapter was
    loaded for (the tiny dim-128 Wan2.2): the worker processes load that file and the adapter, and refuse them."""
    import tempfile

    from fixtures.parallel import write_cli_inputs

    p = sampler_graph(srv, adapter=put_adapter_file(srv, "tiny_ok.safetensors", dims=(128, 1, 2)))
    dest = srv.models_dir / "diffusion_models" / "full4d_other_size.safetensors"
    if not dest.exists():
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy(write_cli_inputs(Path(tmp), V=3)["model"], dest)
    p["9"] = {"class_type": "Full4DParallel", "inputs": {"model": ["2", 0], "unet_name": dest.name, "devices": "cpu:2",
                                                         "layout": "2x1", "weight_dtype": "default"}}
    return relink(p, "7", "model", ["9", 0])


def load_video(file: str, **kw) -> dict:
    inputs = {"file": file, "num_frames": 9, "start": 0, "stride": 1, "width": 64, "height": 32}
    inputs.update(kw)
    return {"1": {"class_type": "Full4DLoadVideo", "inputs": inputs}, "2": save(["1", 0])}


def put_input(srv: Server, name: str, data: bytes | None = None, frames: int | None = None) -> str:
    if frames is not None:
        from media import synthetic_video

        synthetic_video(srv.input_dir / name, T=frames, H=32, W=64)
    else:
        (srv.input_dir / name).write_bytes(data)
    return name


def truncated_video(srv: Server) -> bytes:
    from media import synthetic_video

    data = synthetic_video(srv.input_dir / "_whole.mp4", T=17, H=32, W=64).read_bytes()
    return data[: len(data) // 3]


def project(kind: str = "good", rig: dict | None = None, **kw) -> dict:
    p = {"1": {"class_type": "Full4DTestGeometry", "inputs": {"kind": kind, "frames": 5, "height": 32, "width": 48}},
         "3": {"class_type": "Full4DProjectToCameras",
               "inputs": {"source": ["1", 0], "geometry": ["1", 1], "rig": ["2", 0], "width": 0, "height": 0,
                          "conf_threshold": 0.0, "point_radius": 0, **kw}},
         "4": save(["3", 2])}
    p["2"] = rig or camera_rig()
    return p


def camera_rig(preset: str = "ring", custom: str = "", num_views: int = 3) -> dict:
    return {"class_type": "Full4DCameraRig",
            "inputs": {"preset": preset, "num_views": num_views, "radius": 1.0, "elevation": 0.0, "arc_span": 90.0,
                       "custom_json": custom, "width": 48, "height": 32, "fov": 50.0}}


CASES += [
    Case("missing video file", lambda s: load_video("does_not_exist.mp4"), "1", ("does_not_exist.mp4",)),
    Case("video path leaving the input folder", lambda s: load_video("../../../../etc/hostname"), "1", ("file",)),
    Case("absolute video path", lambda s: load_video("/etc/hostname"), "1", ("file",)),
    Case("empty video file", lambda s: load_video(put_input(s, "empty.mp4", b"")), "1", ("empty.mp4",)),
    Case("truncated video", lambda s: load_video(put_input(s, "truncated.mp4", truncated_video(s))), "1",
         ("truncated.mp4",)),
    Case("unreadable video (a directory named .mp4)",
         lambda s: load_video((s.input_dir / "folder.mp4").mkdir(exist_ok=True) or "folder.mp4"), "1", ("folder.mp4",)),
    Case("text file renamed .mp4", lambda s: load_video(put_input(s, "notes.mp4", b"hello, not a video\n" * 50)), "1",
         ("notes.mp4",)),
    Case("1-frame video", lambda s: load_video(put_input(s, "one_frame.mp4", frames=1)), "1", ("frame",)),
    Case("4-frame video, 9 asked", lambda s: load_video(put_input(s, "four_frames.mp4", frames=4)), "1",
         ("num_frames",)),
    Case("start beyond the end", lambda s: load_video(put_input(s, "clip9.mp4", frames=9), start=500), "1",
         ("start",)),
    Case("huge resolution", lambda s: load_video(put_input(s, "clip9b.mp4", frames=9), width=8192, height=8192), "1",
         ("width",)),
    Case("odd resolution (not a multiple of 32)", lambda s: load_video(put_input(s, "clip9c.mp4", frames=9), width=100),
         "1", ("width",)),
    Case("all-NaN depth", lambda s: project("nan"), "3", ("depth",)),
    Case("all-inf depth", lambda s: project("inf"), "3", ("depth",)),
    Case("zero depth", lambda s: project("zero"), "3", ("depth",)),
    Case("all-invalid confidence", lambda s: project("conf0", conf_threshold=0.5), "3", ("conf",)),
    Case("duplicate rig cameras",
         lambda s: project(rig=camera_rig("custom", '[{"eye": [1, 0, 1]}, {"eye": [1, 0, 1]}]')), "2", ("coincide",)),
    Case("camera coincident with the source",
         lambda s: project(rig=camera_rig("custom", '[{"eye": [0, 0, 0], "target": [0, 0, 2]}]')), "2", ("source",)),
    Case("camera behind the scene",
         lambda s: project(rig=camera_rig("custom", '[{"eye": [0, 0, 2], "target": [0, 0, 5]}]')), "2", ("behind",)),
    Case("one-camera rig (empty custom list)", lambda s: project(rig=camera_rig("custom", "[]")), "2", ("custom",)),
    Case("custom rig JSON that does not parse", lambda s: project(rig=camera_rig("custom", "[{eye: 1")), "2",
         ("json",)),
]


def _error_text(err: PromptFailed) -> tuple[str, str]:
    """(node id, message) of the host's validation answer or execution_error message."""
    d = err.details
    if isinstance(d, dict) and "node_errors" in d:  # /prompt 400
        nid, ne = next(iter(d["node_errors"].items()))
        msgs = " ".join(f"{e.get('message')} {e.get('details')} {(e.get('extra_info') or {}).get('input_name', '')}"
                        for e in ne["errors"])
        return nid, msgs
    if isinstance(d, dict) and "error" in d:
        return "", json.dumps(d["error"])
    for m in reversed(d if isinstance(d, list) else []):
        if m.get("type") == "execution_error":
            return str(m["data"]["node_id"]), str(m["data"]["exception_message"])
    return "", str(err)


def _output_files(srv: Server) -> set[Path]:
    return {p for p in srv.output_dir.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_input_fails_cleanly(case: Case, comfy_server, comfy_host, artifacts):  # comfy_host: fixtures import comfy
    before = _output_files(comfy_server)
    prompt = case.prompt(comfy_server)
    with pytest.raises(PromptFailed) as info:
        comfy_server.run_ws(prompt, timeout=300)
    node, message = _error_text(info.value)
    with open(artifacts / "reliability.jsonl", "a") as f:
        f.write(json.dumps({"case": case.name, "node": node, "message": message[:300]}) + "\n")
    assert node == case.node, f"error names node {node!r}, expected {case.node!r}: {message}"
    for w in case.words:
        assert w.lower() in message.lower(), f"error does not mention {w!r}: {message}"
    assert "Traceback" not in message
    # files are named as the user gave them: the client never learns the server's folders
    for folder in {str(comfy_server.base), str(comfy_server.base.resolve())}:
        assert folder not in message, f"error names the server path {folder!r}: {message}"
    # nothing partial left behind
    assert _output_files(comfy_server) == before
    # the server is healthy: the next good prompt completes
    pid, _ = comfy_server.run_ws(good_prompt(), timeout=300)
    assert comfy_server.history(pid)["status"]["completed"]
    for p in _output_files(comfy_server) - before:
        p.unlink()


def test_there_are_enough_cases():
    assert len(CASES) >= 30
