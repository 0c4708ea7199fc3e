"""Full4DSampler and core's multi-GPU CFG split (0.33+, ``MultiGPU_WorkUnits``): refused with a message that names the
input and points to Full4DParallel when the model was prepared for extra GPUs; on a one-device host core's node
passes the model through and the sampler's result is unchanged. What needs two GPUs is not run here."""

from __future__ import annotations

import pytest
import torch

from fixtures.wan import load_tiny_wan
from host import host_has
from test_sampler import _patched, _sample

CORE_MULTIGPU = host_has("comfy_extras/nodes_multigpu.py")
needs_core_multigpu = pytest.mark.skipif(not CORE_MULTIGPU, reason="the test host has no core multi-GPU nodes "
                                         "(0.3.75); run with FULL4D_TEST_HOST=<a ComfyUI 0.33 checkout>")


@pytest.fixture(scope="module")
def base(comfy_host):
    return load_tiny_wan()


@pytest.fixture(scope="module")
def scene():
    from fixtures.wan import random_rig_inputs

    rig, src, proj, pos, neg, _ = random_rig_inputs(3, 2, 4, 6)
    return rig, {"samples": src}, {"samples": proj}, pos, neg


def _with_extra_gpu(model):
    """What core's CFG split leaves on a model when it found another GPU: a 'multigpu' additional model (here a
    clone that claims cuda:1; nothing is loaded there)."""
    m = model.clone()
    extra = model.clone()
    extra.load_device = torch.device("cuda", 1)
    m.set_additional_models("multigpu", [extra])
    return m


def test_sampler_refuses_a_model_split_over_gpus(base, scene):
    with pytest.raises(ValueError, match=r"^model: .*MultiGPU_WorkUnits.*Full4DParallel"):
        _sample(_with_extra_gpu(_patched(base)), scene, steps=1)


def test_adapter_loader_refuses_a_model_split_over_gpus(base, comfy_host):
    loader = comfy_host.node("Full4DAdapterLoader")
    with pytest.raises(ValueError, match=r"^model: .*Full4DParallel"):
        loader.execute(model=_with_extra_gpu(base), adapter="none (zero-init)")


@needs_core_multigpu
def test_cores_device_copy_of_the_adapter_says_what_to_use(base):
    """MultiGPU_WorkUnits after Full4DAdapterLoader: core re-creates every additional model on the extra GPU through
    its factory hook; the adapter's says to use Full4DParallel (not core's 'the loader does not support multigpu')."""
    sub = _patched(base).get_additional_models_with_key("full4d")[0]
    with pytest.raises(ValueError, match=r"MultiGPU_WorkUnits.*Full4DParallel"):
        sub.deepclone_multigpu(new_load_device=torch.device("cpu"))


@needs_core_multigpu
def test_cores_split_on_one_device_passes_the_model_through(base, scene, comfy_host):
    """This host has one device (the CPU): core's node finds no extra GPU, and sampling gives the same latents."""
    patched = _patched(base)
    split = comfy_host.node("MultiGPU_WorkUnits").execute(model=patched, max_gpus=2).result[0]
    assert split.get_additional_models_with_key("multigpu") == []
    torch.testing.assert_close(_sample(split, scene, steps=2), _sample(patched, scene, steps=2), rtol=0, atol=0)
