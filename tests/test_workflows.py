"""Every shared workflow matches the node definitions the real server reports."""

from __future__ import annotations

import json

import pytest

from comfyui_full4d.client.workflow import api_to_ui, validate_api
from host import ROOT, host_version

pytestmark = pytest.mark.server
API = sorted((ROOT / "workflows" / "api").glob("*_api.json"))
# scripts/make_workflows.py lays the UI graphs out from this host's /object_info
CANONICAL_HOST = (0, 3, 75)


def appended_only(saved: dict, laid: dict) -> list[str]:
    """Where a saved UI graph would not load positionally into a host whose own layout is ``laid``.

    Newer hosts append inputs, widgets and outputs to core nodes (0.33: CreateVideo.bit_depth, a
    pass-through output on SaveVideo / PreviewImage); the frontend fills those with their defaults.
    Anything else (a renamed or reordered widget, another link) is a problem.
    """
    problems = []
    if saved["links"] != laid["links"]:
        problems.append("links differ")
    for a, b in zip(saved["nodes"], laid["nodes"]):
        where = f"node {a['id']} ({a['type']})"
        if (a["id"], a["type"]) != (b["id"], b["type"]):
            problems.append(f"{where}: laid out as node {b['id']} ({b['type']})")
            continue
        for key in ("inputs", "outputs", "widgets_values"):
            if b[key][:len(a[key])] != a[key]:
                problems.append(f"{where}.{key}: saved {a[key]} is not a prefix of {b[key]}")
    if len(saved["nodes"]) != len(laid["nodes"]):
        problems.append(f"{len(saved['nodes'])} nodes saved, {len(laid['nodes'])} laid out")
    return problems


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
    laid = api_to_ui(json.loads(api.read_text()), object_info)
    if host_version() == CANONICAL_HOST:
        assert ui == laid, "UI workflow out of date: run .venv/bin/python scripts/make_workflows.py"
    else:  # another host (FULL4D_TEST_HOST): the one saved file must still load there
        assert appended_only(ui, laid) == []


def test_appended_only_catches_a_reordered_widget_and_accepts_an_appended_one():
    saved = {"links": [], "nodes": [{"id": 1, "type": "X", "inputs": [], "outputs": [], "widgets_values": [8.0, "a"]}]}
    appended = {"links": [], "nodes": [{**saved["nodes"][0], "widgets_values": [8.0, "a", 8]}]}
    swapped = {"links": [], "nodes": [{**saved["nodes"][0], "widgets_values": ["a", 8.0]}]}
    assert appended_only(saved, appended) == []
    assert "widgets_values" in "".join(appended_only(saved, swapped))


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


DYNAMIC_INFO = {"Save": {"input": {"required": {"format": ["COMFY_DYNAMICCOMBO_V3", {"options": [
    {"key": "mp4", "inputs": {"required": {"codec": ["COMBO", {"options": ["auto", "h264"]}]}}},
    {"key": "webm", "inputs": {"required": {"crf": ["INT", {"min": 0, "max": 63}]}}}]}]}}, "output": []}}


def test_validate_api_reads_dynamic_combos_and_their_nested_inputs():
    """0.33 declares SaveVideo.format as a dynamic combo: its keys are the literal's options and the
    selected option's inputs are named ``format.<nested>``."""
    ok = {"1": {"class_type": "Save", "inputs": {"format": "mp4", "format.codec": "h264"}}}
    assert validate_api(ok, DYNAMIC_INFO) == []
    errs = "\n".join(validate_api({"1": {"class_type": "Save", "inputs": {
        "format": "avi"}}, "2": {"class_type": "Save", "inputs": {"format": "mp4", "format.codec": "vp9"}},
        "3": {"class_type": "Save", "inputs": {"format": "mp4", "format.crf": 3}},
        "4": {"class_type": "Save", "inputs": {"format": "webm", "format.crf": 99}}}, DYNAMIC_INFO))
    assert "'avi' not in ['mp4', 'webm']" in errs
    assert "'vp9' not in ['auto', 'h264']" in errs
    assert "no input named 'format.crf'" in errs  # crf belongs to the webm option, not mp4
    assert "99 outside [0, 63]" in errs


def test_template_browser_lists_each_workflow_once(comfy_server):
    """The host scans example_workflows/, examples/, workflows/ ... of a pack: one folder only, or every
    graph shows twice in the template browser."""
    listed = comfy_server.get_json("/workflow_templates").get("comfyui-full4d", [])
    names = sorted(p.name.replace("_api.json", "") for p in API)
    assert sorted(listed) == names, listed
    assert comfy_server.get_json("/api/workflow_templates/comfyui-full4d/demo_synthetic.json")["nodes"]
