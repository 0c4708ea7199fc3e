"""Training: the flow-matching recipe against its formulas (fast, no host), and the real loop on
the host's tiny Wan2.2 (slow): the loss goes down, the saved file loads through the inference
loader and changes the sampler output, a resumed run continues from the same step and ends with
the same weights as an uninterrupted run."""

import csv
import random
import shutil

import pytest
import torch
from torch import nn

from comfyui_full4d.diffusion.ablation import Ablation
from comfyui_full4d.training import checkpoint as ckpt
from comfyui_full4d.training import train as tr


def test_noisy_latents_and_loss_follow_the_formulas():
    g = torch.Generator().manual_seed(0)
    z0, eps = torch.randn(3, 4, 2, 2, 2, generator=g), torch.randn(3, 4, 2, 2, 2, generator=g)
    x, taus = tr.noisy_latents(z0, eps, 0.3)
    assert torch.equal(x[0], z0[0]) and taus.tolist() == pytest.approx([0.0, 0.3, 0.3])
    torch.testing.assert_close(x[1:], 0.7 * z0[1:] + 0.3 * eps[1:])
    v = torch.randn(z0.shape, generator=g)
    manual = sum(((v[i] - (eps[i] - z0[i])) ** 2).sum() for i in (1, 2)) / v[1:].numel()
    torch.testing.assert_close(tr.flow_matching_loss(v, z0, eps), manual)
    v2 = v.clone()
    v2[0] += 100  # the source row is not supervised
    assert float(tr.flow_matching_loss(v2, z0, eps)) == pytest.approx(float(manual))
    assert float(tr.flow_matching_loss(eps - z0, z0, eps)) == 0.0  # the exact velocity has zero loss


def test_sample_tau_is_the_shifted_schedule():
    g = torch.Generator().manual_seed(0)
    plain = torch.tensor([tr.sample_tau(1.0, g) for _ in range(4000)])
    assert float(plain.mean()) == pytest.approx(0.5, abs=0.02)
    shifted = torch.tensor([tr.sample_tau(5.0, g) for _ in range(4000)])
    assert float(shifted.median()) == pytest.approx(5 * 0.5 / (1 + 4 * 0.5), abs=0.02)  # u = 0.5 maps here
    assert 0.0 <= float(shifted.min()) and float(shifted.max()) <= 1.0


def test_config_validation():
    with pytest.raises(ValueError, match="4k\\+1"):
        tr.TrainConfig(data="d", out="o", frames=80)
    with pytest.raises(ValueError, match="multiples of 16"):
        tr.TrainConfig(data="d", out="o", height=100)
    with pytest.raises(ValueError, match="views"):
        tr.TrainConfig(data="d", out="o", views=1)
    with pytest.raises(ValueError, match="point_radius"):
        tr.TrainConfig(data="d", out="o", point_radius=5)


class _Stub:
    """A stage whose inference file is a marker (save_checkpoint writes it first)."""

    output_name = "adapter.safetensors"

    def __init__(self, net):
        self.trainable = net

    def save(self, path, state_dict=None):
        path.write_bytes(b"x")


def test_checkpoint_roundtrip(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(5, 3)).square().sum().backward()
        opt.step()
    cfg = tr.TrainConfig(data="d", out=str(tmp_path))
    ckpt.save_checkpoint(tmp_path / "ck", 3, _Stub(net), opt, cfg)
    net2 = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    opt2 = torch.optim.AdamW(net2.parameters(), lr=1e-2)
    assert ckpt.load_checkpoint(tmp_path / "ck", net2, opt2) == 3
    for a, b in zip(net.parameters(), net2.parameters()):
        assert torch.equal(a, b)
    x = torch.randn(5, 3)
    for o, n in ((opt, net), (opt2, net2)):  # one more identical step from the restored state
        o.zero_grad()
        n(x).square().sum().backward()
        o.step()
    for a, b in zip(net.parameters(), net2.parameters()):
        assert torch.equal(a, b)


class _RecordingModel:
    """A TrainModel that records what the stage gives it: the latents it encodes (frames subsampled to latent
    size) and the condition halves the velocity call sees."""

    trainable = nn.Linear(1, 1)

    def __init__(self):
        self.encoded, self.conds = [], []

    def encode(self, frames):
        z = frames.permute(0, 4, 1, 2, 3)[:, :, ::4, ::16, ::16].contiguous()  # (1, 3, T, h, w)
        self.encoded.append(z)
        return z

    def velocity(self, x, cond, tau, cams):
        self.conds.append(cond)
        return torch.zeros_like(x)


def test_the_oracle_phase_conditions_targets_on_their_own_latents_then_on_their_projections(tmp_path):
    """TrainConfig.oracle_steps: steps before it give each target its own clean latent as condition (view 0
    keeps the source); from it on, the latent of its projection render, as without the curriculum."""
    from comfyui_full4d.media.synthetic import make_capture
    from comfyui_full4d.training import dataset as ds

    scene = ds.write_synthetic_scene(tmp_path / "s0", make_capture(num_views=3, num_frames=5, height=64, width=64,
                                                                   seed=0))
    cfg = tr.TrainConfig(data=str(tmp_path), out=str(tmp_path / "o"), steps=10, oracle_steps=4, frames=5, views=3,
                         height=64, width=64, bf16=False, latent_cache=0)
    seen = {}
    for step in (0, 3, 4, 9):
        model = _RecordingModel()
        tr.AdapterStage(cfg, model, [scene]).loss(random.Random(5), torch.Generator().manual_seed(5), step)
        z0, renders, cond = torch.cat(model.encoded[:3]), torch.cat(model.encoded[3:]), model.conds[0]
        torch.testing.assert_close(cond[:1], z0[:1])  # the source, in both phases
        seen[step] = (cond[1:], z0[1:], renders)
    for step, (targets, z0, renders) in seen.items():
        assert not torch.equal(z0, renders)  # the two phases are told apart
        torch.testing.assert_close(targets, z0 if step < 4 else renders, msg=f"step {step}")
    with pytest.raises(ValueError, match="oracle_steps"):
        tr.TrainConfig(data="d", out="o", steps=10, oracle_steps=10)


# ---- the real loop on the host's tiny Wan2.2 ----------------------------------------------------

@pytest.fixture(scope="module")
def tiny(comfy_host, tmp_path_factory):
    pytest.importorskip("comfyui_full4d.geometry.projection")
    from fixtures.wan import load_tiny_wan, tiny_wan_vae

    from comfyui_full4d.training import dataset as ds
    from comfyui_full4d.media.synthetic import make_capture

    root = tmp_path_factory.mktemp("train_data")
    cap = make_capture(num_views=3, num_frames=9, height=64, width=64, seed=0)
    scene = ds.write_synthetic_scene(root / "scene0", cap)
    ctx = torch.randn(1, 4, 4096, generator=torch.Generator().manual_seed(0))
    return dict(host=comfy_host, scene=scene, load=load_tiny_wan, vae=tiny_wan_vae(), ctx=ctx, root=root)


def _model(tiny, **kw):
    from comfyui_full4d.host.training import HostTrainModel

    return HostTrainModel(tiny["load"](), tiny["vae"], tiny["ctx"], **kw)


def _cfg(tiny, out, steps, **kw):
    return tr.TrainConfig(data=str(tiny["root"]), out=str(out), steps=steps, lr=3e-3, frames=5, views=3,
                          height=64, width=64, bf16=False, **kw)


def _fixed_loss(model, tiny, cfg, cache, seeds=(101, 202, 303)):
    """Loss on fixed clips, noise and tau (independent of the training draws)."""
    from comfyui_full4d.training import dataset as ds
    from comfyui_full4d.diffusion.adapter import camera_features

    total = 0.0
    with torch.no_grad():
        for s in seeds:
            clip = ds.sample_clip(tiny["scene"], 5, random.Random(s))
            z0, cond = tr.encode_clip(model, clip, cfg, cache, "fixed")
            eps = torch.randn(z0.shape, generator=torch.Generator().manual_seed(s))
            x, taus = tr.noisy_latents(z0, eps, 0.6)
            v = model.velocity(x, cond, taus, camera_features(clip.cameras.R, clip.cameras.t))
            total += float(tr.flow_matching_loss(v, z0, eps))
    return total / len(seeds)


@pytest.mark.slow
def test_loss_goes_down_and_adapter_loads_in_the_sampler(tiny, tmp_path):
    from comfyui_full4d.host.patch import NONE_ADAPTER, load_full4d
    from comfyui_full4d.host.sampling import sample_full4d

    cfg = _cfg(tiny, tmp_path / "run", 30, save_every=30)
    model = _model(tiny)
    cache = tr._LatentCache(64)  # the VAE is frozen: the fixed clips' latents are reused
    before = _fixed_loss(model, tiny, cfg, cache)
    res = tr.train(cfg, model, [tiny["scene"]])
    after = _fixed_loss(model, tiny, cfg, cache)
    assert res["step"] == 30 and len(res["losses"]) == 30
    assert after < 0.9 * before, (before, after)
    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, 31))
    assert float(rows[-1]["loss"]) == pytest.approx(res["losses"][-1], rel=1e-4)

    # the inference loader (Full4DAdapterLoader's engine function) reads the trained file
    dest = tiny["host"].models_dir / "full4d"
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(tmp_path / "run" / "adapter.safetensors", dest / "trained_tiny.safetensors")
    base = tiny["load"]()
    g = torch.Generator().manual_seed(5)
    source, proj = torch.randn(1, 48, 2, 4, 4, generator=g), torch.randn(2, 48, 2, 4, 4, generator=g)
    cams = torch.tensor([[1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0],
                         [0.8, 0, 0.6, -0.5, 0, 1, 0, 0, -0.6, 0, 0.8, 0.2],
                         [0.8, 0, -0.6, 0.5, 0, 1, 0, 0, 0.6, 0, 0.8, 0.2]], dtype=torch.float32)
    cond = [[tiny["ctx"], {}]]
    kw = dict(seed=0, steps=2, cfg=1.0, shift=5.0, sampler_name="euler", scheduler="simple")
    trained = sample_full4d(load_full4d(base, "trained_tiny.safetensors"), cond, cond, source, proj, cams, **kw)
    zero = sample_full4d(load_full4d(base, NONE_ADAPTER), cond, cond, source, proj, cams, **kw)
    assert (trained - zero).abs().max() > 1e-3
    # and the loaded weights are exactly the trained ones
    loaded = load_full4d(base, "trained_tiny.safetensors")
    from comfyui_full4d.host.patch import get_adapter
    for (k, a), b in zip(get_adapter(loaded).state_dict().items(), model.adapter.state_dict().values()):
        torch.testing.assert_close(a.float(), b.float(), msg=k)


@pytest.mark.slow
def test_resume_continues_from_the_same_step(tiny, tmp_path):
    full = _model(tiny)
    tr.train(_cfg(tiny, tmp_path / "full", 6, save_every=6), full, [tiny["scene"]])
    part = _model(tiny)
    res1 = tr.train(_cfg(tiny, tmp_path / "part", 3, save_every=3), part, [tiny["scene"]])
    assert res1["step"] == 3
    with open(tmp_path / "part" / "log.csv", "a") as fh:  # a row logged after the checkpoint, then a crash
        fh.write("4,9.9,0.5,0.1,1.0\n")
    resumed = _model(tiny)  # a fresh process: zero-init adapter, state from the checkpoint
    res2 = tr.train(_cfg(tiny, tmp_path / "part", 6, save_every=3), resumed, [tiny["scene"]])
    assert res2["step"] == 6 and len(res2["losses"]) == 3  # steps 4..6 only
    rows = list(csv.DictReader(open(tmp_path / "part" / "log.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    for (k, a), b in zip(full.adapter.state_dict().items(), resumed.adapter.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=k)


def test_ablation_names():
    assert Ablation.named("full") == Ablation()
    assert Ablation.named("no_cross_half") == Ablation(cross_half=False)
    assert not Ablation.named("no_projection").attention_changed
    with pytest.raises(ValueError, match="ablation must be one of"):
        Ablation.named("no_cameras")
    with pytest.raises(ValueError, match="ablation"):
        tr.TrainConfig(data="d", out="o", ablation="bogus")


def _randomised(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.adapter.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.slow
def test_the_trainer_sees_what_the_sampler_runs_with_a_trained_adapter(tiny, tmp_path):
    """With a non-zero adapter, the training step's prediction (``HostTrainModel.velocity``, model space) equals the
    sampler's one model call (``sampling.predict_x0``) on the adapter file loaded as Full4DAdapterLoader does: the
    same latents, timesteps, condition half and cameras reach the same patched blocks in both."""
    from comfyui_full4d.host.patch import attach_adapter, make_adapter
    from comfyui_full4d.host.sampling import predict_x0

    g = torch.Generator().manual_seed(4)
    z0, cond = torch.randn(3, 48, 2, 4, 4, generator=g), torch.randn(3, 48, 2, 4, 4, generator=g)
    cond[0] = z0[0]  # view 0: both halves the clean source (SPEC 1)
    cams = torch.randn(3, 12, generator=g) * 0.3
    cams[0] = torch.tensor([1.0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0])
    m = _randomised(_model(tiny), seed=4)
    m.save_adapter(tmp_path / "a.safetensors")
    base = tiny["load"]()
    patched = attach_adapter(base, make_adapter(base, str(tmp_path / "a.safetensors")))
    eps = torch.randn(z0.shape, generator=g)
    for tau in (0.9, 0.4):
        x, taus = tr.noisy_latents(z0, eps, tau)
        with torch.no_grad():
            trained = (x - taus.view(-1, 1, 1, 1, 1) * m.velocity(x, cond, taus, cams))[1:]
        sampled = predict_x0(patched, [[tiny["ctx"], {}]], z0[:1], cond[1:], cams, x[1:], tau, model_space=True)
        assert (trained - z0[1:]).abs().max() > 1e-3  # a real prediction, not the input handed back
        torch.testing.assert_close(trained, sampled, rtol=1e-4, atol=1e-5, msg=f"tau {tau}")


def test_host_training_mode_sets_and_restores_the_hosts_flag(comfy_host):
    """0.33's apply_rope1 has a backward only with comfy.model_management.in_training set (the slow
    training tests below fail there without it); 0.3.75 has no flag and gets none left behind."""
    import comfy.model_management as mm

    from comfyui_full4d.host.training import host_training_mode

    had, before = hasattr(mm, "in_training"), getattr(mm, "in_training", None)
    with host_training_mode():
        assert mm.in_training is True
    assert (hasattr(mm, "in_training"), getattr(mm, "in_training", None)) == (had, before)
    with pytest.raises(KeyError), host_training_mode():
        raise KeyError("restored on an error too")
    assert (hasattr(mm, "in_training"), getattr(mm, "in_training", None)) == (had, before)


@pytest.mark.slow
def test_ablations_and_checkpointing_on_the_host(tiny):
    g = torch.Generator().manual_seed(3)
    x, cond = torch.randn(3, 48, 2, 4, 4, generator=g), torch.randn(3, 48, 2, 4, 4, generator=g)
    tau, cams = torch.tensor([0.0, 0.5, 0.5]), torch.randn(3, 12, generator=g) * 0.3
    cams[0] = torch.tensor([1.0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0])
    outs = {}
    with torch.no_grad():
        for name in Ablation.NAMES:
            m = _randomised(_model(tiny, ablation=Ablation.named(name)))
            outs[name] = m.velocity(x, cond, tau, cams)
        # fused attention off == the same adapter with its projectors zeroed (the unablated code path)
        m = _randomised(_model(tiny))
        for b in m.adapter.blocks:
            b.tv_proj.weight.zero_(), b.tv_proj.bias.zero_()
        torch.testing.assert_close(outs["no_fused_attention"], m.velocity(x, cond, tau, cams))
    assert torch.equal(outs["no_projection"], outs["full"])  # projection off acts on the data, not the blocks
    for name in ("no_fused_attention", "no_intra_time", "no_cross_half"):
        assert (outs[name] - outs["full"]).abs().max() > 1e-5, name

    # a zero-init adapter gets gradients in its zero layers (the inference patch may skip zero branches)
    fresh = _model(tiny)
    fresh.velocity(x, cond, tau, cams)[1:].square().mean().backward()
    for b in fresh.adapter.blocks:
        assert b.tv_proj.weight.grad.abs().max() > 0 and b.cam.fc2.weight.grad.abs().max() > 0

    # gradient checkpointing gives the same gradients
    grads = []
    for ck in (False, True):
        m = _randomised(_model(tiny, grad_checkpointing=ck))
        v = m.velocity(x, cond, tau, cams)
        v[1:].square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.adapter.parameters()]))
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as e:
        tr.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--ablation" in out and "--grad-checkpointing" in out and "--frames" in out and "--da3" in out


@pytest.mark.slow
def test_cli_runs_with_bf16_autocast(tiny, tmp_path, monkeypatch, capsys):
    from comfyui_full4d.host import training as ht

    seen = {}

    def fake_load(model_path, vae_path, cfg, **kw):  # the host's full-size loaders cannot load the tiny files
        seen.update(model=model_path, vae=vae_path, cfg=cfg, **kw)
        return _model(tiny, grad_checkpointing=cfg.grad_checkpointing)

    monkeypatch.setattr(ht, "load_train_model", fake_load)
    argv = ["--data", str(tiny["root"]), "--out", str(tmp_path / "cli"), "--model", "m.safetensors", "--vae",
            "v.safetensors", "--steps", "2", "--frames", "5", "--views", "3", "--height", "64", "--width", "64",
            "--bf16", "true", "--grad-checkpointing", "true", "--device", "cpu", "--lr", "1e-3"]
    assert tr.main(argv) == 0
    assert seen["model"] == "m.safetensors" and seen["cfg"].bf16 and seen["cfg"].grad_checkpointing
    assert (tmp_path / "cli" / "adapter.safetensors").is_file()
    rows = list(csv.DictReader(open(tmp_path / "cli" / "log.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2] and all(float(r["loss"]) > 0 for r in rows)
    assert "done: step 2" in capsys.readouterr().out


@pytest.mark.slow
def test_lora_option_saves_a_host_lora(tiny, tmp_path):
    import comfy.sd
    import comfy.utils

    cfg = _cfg(tiny, tmp_path / "lora", 3, save_every=3, lora_rank=4)
    model = _model(tiny, lora_rank=4)
    assert len(model.loras) == 4 * 2  # q, k, v, o of both blocks
    tr.train(cfg, model, [tiny["scene"]])
    lora_file = tmp_path / "lora" / "adapter_lora.safetensors"
    assert lora_file.is_file() and (tmp_path / "lora" / "checkpoint" / "adapter_lora.safetensors").is_file()
    assert any(float(m.up.detach().abs().max()) > 0 for m in model.loras.values())  # the LoRA trained
    from safetensors import safe_open

    with safe_open(str(tmp_path / "lora" / "checkpoint" / "trainable.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any(".up" in k for k in keys) and not any(".base." in k for k in keys)  # frozen base not stored
    again = _model(tiny, lora_rank=4)  # a resumed LoRA run gets the trained LoRA back from that checkpoint
    params = [p for p in again.trainable.parameters() if p.requires_grad]
    assert ckpt.load_checkpoint(tmp_path / "lora" / "checkpoint", again.trainable, torch.optim.AdamW(params)) == 3
    for k, m in model.loras.items():
        torch.testing.assert_close(again.loras[k].up, m.up)
    # the host's own LoRA loader applies it; with the trained adapter the output matches training's
    base = tiny["load"]()
    lora_sd = comfy.utils.load_torch_file(str(lora_file), safe_load=True)
    patched, _ = comfy.sd.load_lora_for_models(base, None, lora_sd, 1.0, 0)
    patched.patch_model()
    reloaded = _model_from(tiny, patched, adapter_path=str(tmp_path / "lora" / "adapter.safetensors"))
    g = torch.Generator().manual_seed(4)
    x, cond = torch.randn(3, 48, 2, 4, 4, generator=g), torch.randn(3, 48, 2, 4, 4, generator=g)
    tau, cams = torch.tensor([0.0, 0.4, 0.4]), torch.randn(3, 12, generator=g) * 0.3
    with torch.no_grad():
        a, b = model.velocity(x, cond, tau, cams), reloaded.velocity(x, cond, tau, cams)
        plain = _model(tiny, adapter_path=str(tmp_path / "lora" / "adapter.safetensors")).velocity(x, cond, tau, cams)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert (a - plain).abs().max() > 1e-4  # the LoRA matters


def _model_from(tiny, patcher, **kw):
    from comfyui_full4d.host.training import HostTrainModel

    return HostTrainModel(patcher, tiny["vae"], tiny["ctx"], **kw)


# ---- torchrun: DDP and FSDP over 2 CPU processes (gloo) -------------------------------------------

def _torchrun(mode: str, out, steps: int, data) -> None:
    """``torchrun --nproc_per_node 2`` this file as the worker (below); raises with the workers' output."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    here = Path(__file__).resolve()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(here.parent)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(here),
           mode, str(out), str(steps), str(data)]
    res = subprocess.run(cmd, cwd=here.parent, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"torchrun {mode} failed:\n{res.stdout[-4000:]}\n{res.stderr[-8000:]}"


@pytest.mark.slow
def test_torchrun_fsdp_shards_matches_ddp_and_resumes(tiny, tmp_path):
    """2 processes on the gloo backend: FSDP2 shards the adapter, the LoRA and the frozen base blocks, trains
    exactly as DDP does (here with gradient checkpointing on, DDP without), writes full adapter and LoRA
    files that the inference loaders read, and resumes mid-run."""
    import json

    from comfyui_full4d.diffusion.adapter import load_adapter
    from comfyui_full4d.host.patch import NONE_ADAPTER, load_full4d

    _torchrun("ddp", tmp_path / "ddp", 4, tiny["root"])
    _torchrun("fsdp", tmp_path / "fsdp", 2, tiny["root"])  # stops at step 2 (checkpoint), then resumes
    assert json.loads((tmp_path / "fsdp" / "checkpoint" / "state.json").read_text())["step"] == 2
    _torchrun("fsdp", tmp_path / "fsdp", 4, tiny["root"])

    shards = [json.loads((tmp_path / "fsdp" / f"shards{r}.json").read_text()) for r in (0, 1)]
    for s in shards:  # every trainable and every base-block weight is a DTensor holding a part
        assert s["adapter_dtensor"] and s["base_blocks_dtensor"], s
    assert shards[0]["adapter_local"] + shards[1]["adapter_local"] == shards[0]["adapter_full"]
    assert max(shards[0]["adapter_local"], shards[1]["adapter_local"]) < shards[0]["adapter_full"]
    assert shards[0]["base_local"] + shards[1]["base_local"] == shards[0]["base_full"]

    rows = list(csv.DictReader(open(tmp_path / "fsdp" / "log.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    ddp = load_adapter(tmp_path / "ddp" / "adapter.safetensors").state_dict()
    fsdp = load_adapter(tmp_path / "fsdp" / "adapter.safetensors").state_dict()
    start = _model(tiny).adapter.state_dict()
    for k, a in ddp.items():
        torch.testing.assert_close(fsdp[k], a, rtol=1e-3, atol=1e-5, msg=k)
    assert max(float((ddp[k] - start[k]).abs().max()) for k in ddp) > 1e-3  # it trained
    from safetensors.torch import load_file

    lora_ddp, lora_fsdp = (load_file(str(tmp_path / m / "adapter_lora.safetensors")) for m in ("ddp", "fsdp"))
    assert len(lora_ddp) == 2 * 4 * 3 and set(lora_fsdp) == set(lora_ddp)  # 2 blocks x q, k, v, o x (up, down, alpha)
    for k, a in lora_ddp.items():
        torch.testing.assert_close(lora_fsdp[k], a, rtol=1e-3, atol=1e-5, msg=k)
    assert any(float(v.abs().max()) > 0 for k, v in lora_fsdp.items() if "lora_up" in k)  # the LoRA trained

    # the FSDP file is a normal adapter file for Full4DAdapterLoader's engine
    dest = tiny["host"].models_dir / "full4d"
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(tmp_path / "fsdp" / "adapter.safetensors", dest / "fsdp_tiny.safetensors")
    from comfyui_full4d.host.patch import get_adapter

    loaded = get_adapter(load_full4d(tiny["load"](), "fsdp_tiny.safetensors"))
    for k, v in loaded.state_dict().items():
        torch.testing.assert_close(v.float(), fsdp[k].float(), msg=k)
    assert get_adapter(load_full4d(tiny["load"](), NONE_ADAPTER)) is not None


def test_fsdp_without_a_process_group_is_refused(tiny):
    with pytest.raises(ValueError, match="torchrun --nproc_per_node"):
        _model(tiny, fsdp=True)


@pytest.mark.parametrize("kind", ["wan22", "wan21"])
def test_two_steps_on_each_model_class_and_the_file_loads_for_sampling(tiny, tmp_path, kind):
    """Both classes the pack accepts (Wan2.2-TI2V-5B: WAN22 + Wan2.2 VAE; Wan2.1 class: WAN21 + the host-loaded
    Wan2.1 VAE) through HostTrainModel and train.train: finite losses, the trained layers moved off zero, and the
    file is what Full4DAdapterLoader's load_full4d attaches (same weights, the base model's class in its header),
    then samples."""
    from comfyui_full4d.diffusion.adapter import read_adapter_config
    from comfyui_full4d.host.patch import get_adapter, load_full4d
    from comfyui_full4d.host.sampling import sample_full4d
    from comfyui_full4d.host.training import HostTrainModel
    from fixtures.wan import KINDS, load_tiny_wan, tiny_vae

    model = HostTrainModel(load_tiny_wan(kind=kind), tiny_vae(kind), tiny["ctx"])
    res = tr.train(_cfg(tiny, tmp_path / "run", 2, save_every=2), model, [tiny["scene"]])
    assert res["step"] == 2 and all(torch.isfinite(torch.tensor(res["losses"])))
    assert all(b.tv_proj.weight.abs().max() > 0 and b.cam.fc2.weight.abs().max() > 0 for b in model.adapter.blocks)
    name = f"two_steps_{kind}.safetensors"
    dest = tiny["host"].models_dir / "full4d"
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(tmp_path / "run" / "adapter.safetensors", dest / name)
    assert read_adapter_config(dest / name).base_model == {"wan22": "wan2.2-ti2v-5b", "wan21": "wan2.1-t2v"}[kind]
    base = load_tiny_wan(kind=kind)
    loaded = load_full4d(base, name)
    for (k, a), b in zip(get_adapter(loaded).state_dict().items(), model.adapter.state_dict().values()):
        torch.testing.assert_close(a.float(), b.float(), msg=k)
    C = KINDS[kind].channels
    g = torch.Generator().manual_seed(5)
    source, proj = torch.randn(1, C, 2, 4, 4, generator=g), torch.randn(2, C, 2, 4, 4, generator=g)
    cams = torch.tensor([[1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0],
                         [0.8, 0, 0.6, -0.5, 0, 1, 0, 0, -0.6, 0, 0.8, 0.2],
                         [0.8, 0, -0.6, 0.5, 0, 1, 0, 0, 0.6, 0, 0.8, 0.2]], dtype=torch.float32)
    cond = [[tiny["ctx"], {}]]
    out = sample_full4d(loaded, cond, cond, source, proj, cams, seed=0, steps=2, cfg=1.0, shift=5.0,
                        sampler_name="euler", scheduler="simple")
    assert out.shape == (2, C, 2, 4, 4) and torch.isfinite(out).all()


def _worker(mode: str, out: str, steps: str, data: str) -> None:
    """One torchrun rank: the CLI (``train.main``) with the tiny host model in place of the full-size loaders."""
    import json
    import os
    import tempfile
    from pathlib import Path

    from host import InProcessHost

    InProcessHost.start(Path(tempfile.mkdtemp(prefix="full4d_rank")))
    from fixtures.wan import load_tiny_wan, tiny_wan_vae
    from torch.distributed.tensor import DTensor

    from comfyui_full4d.host import training as ht

    rank = int(os.environ["RANK"])
    own_data = Path(out) / f"data{rank}"  # a copy per rank: the projection cache is written per process
    if not own_data.exists():
        shutil.copytree(data, own_data, ignore=shutil.ignore_patterns("cache"))
    ctx = torch.randn(1, 4, 4096, generator=torch.Generator().manual_seed(0))

    def tiny_load(model_path, vae_path, cfg, **kw):
        assert kw["distributed"] and cfg.fsdp == (mode == "fsdp")
        m = ht.HostTrainModel(load_tiny_wan(), tiny_wan_vae(), ctx, distributed=True, fsdp=cfg.fsdp,
                              grad_checkpointing=cfg.grad_checkpointing, lora_rank=cfg.lora_rank)
        if cfg.fsdp:
            ad = list(m.adapter.parameters())
            blocks = list(m.patched.model.diffusion_model.blocks.parameters())
            info = dict(adapter_dtensor=all(isinstance(p, DTensor) for p in ad),
                        base_blocks_dtensor=all(isinstance(p, DTensor) for p in blocks),
                        adapter_local=sum(p.to_local().numel() for p in ad), adapter_full=sum(p.numel() for p in ad),
                        base_local=sum(p.to_local().numel() for p in blocks), base_full=sum(p.numel() for p in blocks))
            (Path(out) / f"shards{rank}.json").write_text(json.dumps(info))
        return m

    ht.load_train_model = tiny_load
    tr.main(["--data", str(own_data), "--out", out, "--model", "tiny", "--vae", "tiny", "--steps", steps,
             "--frames", "5", "--views", "3", "--height", "64", "--width", "64", "--bf16", "false", "--lr", "3e-3",
             "--save-every", "2", "--device", "cpu", "--lora-rank", "2", "--fsdp", "true" if mode == "fsdp" else "false",
             "--grad-checkpointing", "true" if mode == "fsdp" else "false"])
    torch.distributed.destroy_process_group()


if __name__ == "__main__":  # the torchrun worker of test_torchrun_fsdp_shards_matches_ddp_and_resumes
    import sys

    _worker(*sys.argv[1:])
