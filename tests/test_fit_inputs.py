"""Full4DFit4DGS's inputs (issue 32): the everyday controls on the node, the finer settings on Full4DFitOptions,
the flow matching distillation teacher bundled by Full4DFMDTeacher, and prompts saved before that, whose Fit node
still has the old inputs (lr_means, ..., sh_degree, checkpoint_every, recalibrate, lambda_fmd, fmd_model, ...),
validating and running the same fit. Everything goes through the host's own ``validate_prompt`` and executor.

``tests/fixtures/old_workflows/`` holds ``workflows/api/*_api.json`` as they were before the change.
"""

from __future__ import annotations

import asyncio
import copy
import json
import shutil
from dataclasses import replace

import pytest
import torch

from fixtures.wan import tiny_wan_path
from host import ROOT, PromptFailed

pytestmark = pytest.mark.server

OLD = ROOT / "tests" / "fixtures" / "old_workflows"
NEW = ROOT / "workflows" / "api"
EVERYDAY_WIDGETS = ["iterations", "max_gaussians", "orbit_frames", "render_time", "resume", "init"]
# placeholder files under the names the old workflows' loaders give: their file combos then validate (nothing loads
# them here)
MODEL_FILES = [("diffusion_models", "wan2.2_ti2v_5B_fp16.safetensors"), ("vae", "wan2.2_vae.safetensors"),
               ("text_encoders", "umt5_xxl_fp8_e4m3fn_scaled.safetensors"),
               ("depth_anything_3", "da3-large/model.safetensors"), ("depth_anything_3", "da3-large/config.json")]
TINY_WAN = "full4d_test_fit_inputs_tiny_wan.safetensors"


@pytest.fixture(scope="module")
def host(comfy_host):
    """The in-process host with the test pack (tiny VAE, test conditioning), the tiny Wan2.2 in
    models/diffusion_models, placeholder files for the old workflows' loaders, a video and a capture folder in
    input/; all removed again after the module."""
    import folder_paths
    import nodes

    from media import synthetic_video

    if "Full4DTestTinyVAE" not in nodes.NODE_CLASS_MAPPINGS:
        assert asyncio.run(nodes.load_custom_node(str(ROOT / "tests" / "test_pack")))
    made = []
    for sub, name in MODEL_FILES:
        path = comfy_host.models_dir / sub / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_bytes(b"{}")
            made.append(path)
    unet = comfy_host.models_dir / "diffusion_models" / TINY_WAN
    shutil.copy(tiny_wan_path(), unet)
    made.append(unet)
    video, capture = comfy_host.input_dir / "my_video.mp4", comfy_host.input_dir / "my_capture"
    if not video.exists():
        synthetic_video(video)
        made.append(video)
    capture.mkdir(exist_ok=True)
    folder_paths.filename_list_cache.clear()
    yield comfy_host
    for path in made:
        path.unlink()
    shutil.rmtree(comfy_host.models_dir / "depth_anything_3" / "da3-large", ignore_errors=True)
    folder_paths.filename_list_cache.clear()


def _node(prompt: dict, class_type: str) -> str:
    (nid,) = [k for k, v in prompt.items() if v["class_type"] == class_type]
    return nid


def _validate(prompt: dict) -> tuple:
    import execution

    return asyncio.run(execution.validate_prompt("fit-inputs", copy.deepcopy(prompt), None))


def test_the_fit_node_shows_the_everyday_controls_and_the_options_node_the_fits_defaults(host):
    from comfyui_full4d.gaussians.pipeline import FitOptions

    spec = host.node("Full4DFit4DGS").INPUT_TYPES()
    inputs = {**spec["required"], **spec.get("optional", {})}
    widgets = [k for k, v in inputs.items() if v[0] in ("INT", "FLOAT", "BOOLEAN", "STRING") or isinstance(v[0], list)
               or v[0] == "COMBO"]
    assert widgets == EVERYDAY_WIDGETS
    assert [k for k in inputs if k not in widgets][:6] == ["images", "rig", "geometry", "da3_model", "fmd_teacher",
                                                           "options"]
    options = host.node("Full4DFitOptions").INPUT_TYPES()["required"]
    assert {k: v[1]["default"] for k, v in options.items()} == FitOptions().__dict__


@pytest.mark.parametrize("name", sorted(p.name for p in OLD.glob("*_api.json")))
def test_old_workflows_still_validate_on_the_host(host, name):
    prompt = json.loads((OLD / name).read_text())
    ok, error, _, node_errors = _validate(prompt)
    assert ok, (error, node_errors)


def _spy_fit(monkeypatch) -> list[dict]:
    """Record what every fit the node starts is given (the engine call in host.fitting) and run it."""
    import comfyui_full4d.host.fitting as fitting

    calls, real = [], fitting.fit_from_grid

    def spy(images, rig, cfg, geometry=None, **kw):
        calls.append({"cfg": cfg, **kw})
        return real(images, rig, cfg, geometry, **kw)

    monkeypatch.setattr(fitting, "fit_from_grid", spy)
    return calls


def _small(prompt: dict, fit_values: dict) -> dict:
    """The demo's scene and fit (and its options node, if any) at a test size, the orbit previewed."""
    synth, fit = _node(prompt, "Full4DSyntheticScene"), _node(prompt, "Full4DFit4DGS")
    keep = {synth, fit} | {str(v[0]) for v in prompt[fit]["inputs"].values() if isinstance(v, list)}
    p = {k: copy.deepcopy(v) for k, v in prompt.items() if k in keep}
    p[synth]["inputs"].update(num_views=3, num_frames=5, width=48, height=32)
    p[fit]["inputs"].update(fit_values)
    p["show"] = {"class_type": "PreviewImage", "inputs": {"images": [fit, 1]}}
    return p


@pytest.mark.timeout(2400)
def test_an_old_demo_prompt_runs_the_fit_its_values_ask_for(host, monkeypatch):
    """The old demo prompt (lr_means ... recalibrate on the Fit node) and today's (a Full4DFitOptions node) with
    the same values run the same fit: the same config, checkpoint and result. Two values are changed from the saved
    ones so defaults could not pass for them."""
    calls = _spy_fit(monkeypatch)
    size = {"iterations": 12, "orbit_frames": 2, "resume": False}
    changed = {"lambda_dssim": 0.3, "prune_opacity": 0.02}
    old = _small(json.loads((OLD / "demo_synthetic_api.json").read_text()), {**size, **changed})
    new = json.loads((OLD / "demo_synthetic_upgraded_api.json").read_text())  # the old demo on today's nodes
    new = _small(new, size)
    new[str(new[_node(new, "Full4DFit4DGS")]["inputs"]["options"][0])]["inputs"].update(changed)
    saved = old[_node(old, "Full4DFit4DGS")]["inputs"]
    assert {"lr_means", "sh_degree", "checkpoint_every"} <= set(saved) and "options" not in saved

    host.run(old)
    psnr_old = host.outputs(_node(old, "Full4DFit4DGS"))[2][0]
    host.run(new)
    psnr_new = host.outputs(_node(new, "Full4DFit4DGS"))[2][0]
    (a, b) = calls
    cfg = a["cfg"]
    assert (cfg.lr_means, cfg.lr_planes, cfg.lambda_dssim, cfg.lambda_tv) == (saved["lr_means"], saved["lr_planes"],
                                                                                0.3, saved["lambda_tv"])
    assert (cfg.sh_degree, cfg.densify.prune_opacity, cfg.densify.max_gaussians) == (1, 0.02, saved["max_gaussians"])
    assert (a["checkpoint_every"], a["recalibrate"]) == (saved["checkpoint_every"], True)
    assert b["cfg"] == cfg and b["checkpoint_path"] == a["checkpoint_path"]
    assert b["checkpoint_every"] == a["checkpoint_every"] and b["recalibrate"] == a["recalibrate"]
    assert psnr_new == psnr_old


def _fmd_prompt(teacher: str | None, iterations: int = 3) -> dict:
    """A 3-view, 1-frame 32x32 synthetic scene fitted with FMD from the tiny Wan2.2 (zero-init adapter), the tiny VAE
    and a test conditioning: ``teacher`` "old" wires the Fit node's old inputs, "new" a Full4DFMDTeacher node, None
    no FMD."""
    p = {"1": {"class_type": "Full4DSyntheticScene", "inputs": {"seed": 0, "num_views": 3, "num_frames": 1, "width": 32,
                                                                "height": 32, "radius": 1.0, "elevation": 0.0,
                                                                "fov": 50.0}},
         "2": {"class_type": "UNETLoader", "inputs": {"unet_name": TINY_WAN, "weight_dtype": "default"}},
         "3": {"class_type": "Full4DAdapterLoader", "inputs": {"model": ["2", 0], "adapter": "none (zero-init)"}},
         "4": {"class_type": "Full4DTestConditioning", "inputs": {"seed": 0, "length": 8}},
         "5": {"class_type": "Full4DTestTinyVAE", "inputs": {"seed": 0}},
         "6": {"class_type": "VAEEncode", "inputs": {"pixels": ["1", 0], "vae": ["5", 0]}},
         "7": {"class_type": "Full4DFit4DGS", "inputs": {"images": ["1", 1], "rig": ["1", 2], "geometry": ["1", 3],
                                                         "iterations": iterations, "max_gaussians": 2000,
                                                         "orbit_frames": 2, "render_time": 0.0, "resume": False}},
         "9": {"class_type": "PreviewImage", "inputs": {"images": ["7", 1]}}}
    if teacher == "old":
        p["7"]["inputs"].update(lambda_fmd=0.5, fmd_model=["3", 0], fmd_vae=["5", 0], fmd_positive=["4", 0],
                                fmd_source=["1", 0], fmd_source_latent=["6", 0])
    elif teacher == "new":
        p["8"] = {"class_type": "Full4DFMDTeacher", "inputs": {"model": ["3", 0], "vae": ["5", 0], "positive": ["4", 0],
                                                               "source": ["1", 0], "weight": 0.5}}
        p["7"]["inputs"]["fmd_teacher"] = ["8", 0]
    return p


@pytest.mark.timeout(2400)
def test_old_fmd_inputs_and_the_teacher_node_distil_the_same_teacher(host, monkeypatch):
    """The old prompt's fmd_* inputs and a Full4DFMDTeacher node give the fit the same teacher (the node encodes the
    source as core VAE Encode did for the old latent input), which the fit calls every step and which changes the
    result; without a teacher the fit differs."""
    import comfyui_full4d.host.fitting as fitting

    seen, real = [], fitting.fmd_config

    def spy(teacher, *a, **kw):
        cfg = real(teacher, *a, **kw)
        if cfg is None:  # the run without a teacher
            return None
        calls = []

        def velocity(*args):
            calls.append(args[1])
            return cfg.velocity_fn(*args)

        seen.append((teacher, calls))
        return replace(cfg, velocity_fn=velocity)

    monkeypatch.setattr(fitting, "fmd_config", spy)
    results = {}
    for how in ("old", "new", None):
        host.run(_fmd_prompt(how))
        results[how] = host.outputs("7")
    (old, old_calls), (new, new_calls) = seen
    assert old.weight == new.weight == 0.5 and old.model is new.model and old.positive is new.positive
    assert torch.equal(old.source, new.source)
    torch.testing.assert_close(new.source_latent, old.source_latent, rtol=0, atol=0)
    assert len(old_calls) == len(new_calls) == 3
    assert results["old"][2][0] == results["new"][2][0]
    torch.testing.assert_close(results["old"][1][0], results["new"][1][0], rtol=0, atol=0)
    assert not torch.equal(results["old"][1][0], results[None][1][0])


def test_bad_fit_inputs_are_named_in_the_error(host):
    lonely = _fmd_prompt(None)
    lonely["7"]["inputs"]["lambda_fmd"] = 0.5  # an old prompt asking for FMD with no teacher connected
    with pytest.raises(PromptFailed, match="lambda_fmd = 0.5 needs these inputs connected: fmd_model, fmd_vae, "
                                           "fmd_positive, fmd_source, fmd_source_latent"):
        host.run(lonely)
    no_geometry = _fmd_prompt("new")
    del no_geometry["7"]["inputs"]["geometry"]
    with pytest.raises(PromptFailed, match="fmd_teacher needs the geometry input"):
        host.run(no_geometry)
    bad_old_value = _fmd_prompt(None)
    bad_old_value["7"]["inputs"]["sh_degree"] = 7
    with pytest.raises(PromptFailed, match="sh_degree must be 0, 1, 2 or 3, got 7"):
        host.run(bad_old_value)


def test_the_teacher_node_takes_a_16_channel_wan21_class_vae(host):
    """Nothing assumes Wan2.2's 48 latent channels: a Wan2.1-class VAE (16 channels, x8 space), loaded by the host
    from its state dict as core Load VAE does, gives a (1, 16, T', h, w) source latent."""
    import comfy.ldm.wan.vae
    import comfy.sd

    net = comfy.ldm.wan.vae.WanVAE(dim=16, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                                   temperal_downsample=[False, True, True], dropout=0.0)
    g = torch.Generator().manual_seed(0)
    sd = {k: (torch.randn(v.shape, generator=g) * 0.05 if v.dim() > 1 else torch.ones(v.shape))
          for k, v in net.state_dict().items()}
    vae = comfy.sd.VAE(sd=sd)
    frames = torch.rand(5, 32, 48, 3, generator=g)
    teacher = host.node("Full4DFMDTeacher").execute(model=None, vae=vae, positive=[], source=frames,
                                                    weight=0.1).result[0]
    assert tuple(teacher.source_latent.shape) == (1, 16, 2, 4, 6)
    torch.testing.assert_close(teacher.source_latent, vae.encode(frames), rtol=0, atol=0)
