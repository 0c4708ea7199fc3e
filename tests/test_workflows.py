"""Every shared workflow matches the node definitions the real server reports."""

from __future__ import annotations

import json

import pytest

from comfyui_full4d.client.workflow import api_to_ui, validate_api
from host import ROOT

pytestmark = pytest.mark.server
API = sorted((ROOT / "workflows" / "api").glob("*_api.json"))


@pytest.fixture(scope="module")
def object_info(comfy_server):
    return comfy_server.get_json("/object_info")


def test_there_are_workflows_and_each_has_a_twin():
    assert API
    for api in API:
        assert (ROOT / "workflows" / api.name.replace("_api.json", ".json")).is_file(), f"{api.name} has no UI twin"
    for ui in (ROOT / "workflows").glob("*.json"):
        assert (ROOT / "workflows" / "api" / ui.name.replace(".json", "_api.json")).is_file(), f"{ui.name} has no API twin"


@pytest.mark.parametrize("api", API, ids=lambda p: p.name)
def test_api_workflow_matches_object_info(api, object_info):
    assert validate_api(json.loads(api.read_text()), object_info, files_may_be_missing=True) == []


@pytest.mark.parametrize("api", API, ids=lambda p: p.name)
def test_ui_workflow_is_in_sync_with_its_api_twin(api, object_info):
    ui = json.loads((ROOT / "workflows" / api.name.replace("_api.json", ".json")).read_text())
    assert ui == api_to_ui(json.loads(api.read_text()), object_info), \
        "UI workflow out of date: run .venv/bin/python scripts/make_workflows.py"


def test_validate_api_catches_renamed_inputs_and_wrong_types(object_info):
    p = {"1": {"class_type": "CreateVideo", "inputs": {"imgs": ["2", 0], "fps": "fast"}},
         "2": {"class_type": "VAEEncode", "inputs": {}},
         "3": {"class_type": "NoSuchNode", "inputs": {}}}
    errs = "\n".join(validate_api(p, object_info))
    assert "no input named 'imgs'" in errs
    assert "required input 'images' missing" in errs
    assert "expects FLOAT, got 'fast'" in errs
    assert "unknown class_type 'NoSuchNode'" in errs
    bad_link = {"1": {"class_type": "CreateVideo", "inputs": {"images": ["2", 0], "fps": 8.0}},
                "2": {"class_type": "VAEEncode", "inputs": {}}}
    assert any("expects IMAGE, linked to LATENT" in e for e in validate_api(bad_link, object_info))
    missing = {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": "nope.safetensors", "weight_dtype": "default"}}}
    assert any("not in" in e for e in validate_api(missing, object_info))
    assert validate_api(missing, object_info, files_may_be_missing=True) == []
