"""Every shared workflow matches the node definitions the real server reports."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import pytest

from comfyui_full4d.client.layout import STAGES, node_stages
from comfyui_full4d.client.workflow import TEMPLATES, api_stem, api_to_ui, ui_ids, ui_stem, validate_api
from host import ROOT, host_version

pytestmark = pytest.mark.server
API = sorted((ROOT / "workflows" / "api").glob("*_api.json"))
SHORT = [p.name[:-len("_api.json")] for p in API]
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


def ui_file(api: Path) -> Path:
    """The UI twin of ``workflows/api/<short>_api.json``: ``workflows/<its template title>.json``."""
    return ROOT / "workflows" / f"{ui_stem(api.name[:-len('_api.json')])}.json"


def test_there_are_workflows_and_each_has_a_twin():
    assert API
    for api in API:
        assert ui_file(api).is_file(), f"{api.name} has no UI twin"
    for ui in (ROOT / "workflows").glob("*.json"):
        assert (ROOT / "workflows" / "api" / f"{api_stem(ui.stem)}_api.json").is_file(), f"{ui.name} has no API twin"


@pytest.mark.parametrize("api", API, ids=lambda p: p.name)
def test_api_workflow_matches_object_info(api, object_info):
    assert validate_api(json.loads(api.read_text()), object_info, files_may_be_missing=True) == []


@pytest.mark.parametrize("api", API, ids=lambda p: p.name)
def test_ui_workflow_is_in_sync_with_its_api_twin(api, object_info):
    ui = json.loads(ui_file(api).read_text())
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
    names = sorted(ui_stem(s) for s in SHORT)
    assert sorted(listed) == names, listed
    # the frontend asks /api/workflow_templates/<pack>/<name>.json, the name URL-encoded (spaces, commas)
    demo = urllib.parse.quote(ui_stem("demo_synthetic"))
    assert comfy_server.get_json(f"/api/workflow_templates/comfyui-full4d/{demo}.json")["nodes"]


# Words a template's title must hold for each model loader its graph has (the card is all a user sees first).
TITLE_WORDS = {"UNETLoader": "Wan2.2 TI2V 5B", "VAELoader": "VAE", "CLIPLoader": "umT5",
               "Full4DDA3Loader": "Depth Anything 3"}


def test_template_titles_say_what_each_graph_needs_and_number_the_demo_first():
    """The frontend (1.32.9, 1.49.6) shows a pack's template by its file name only: title, description (the name
    with - and _ as spaces) and, sorted A-Z, the order."""
    numbers = sorted(int(TEMPLATES[s].split()[0]) for s in SHORT)
    assert numbers == list(range(1, len(SHORT) + 1)), numbers
    for short, api in zip(SHORT, API):
        prompt = json.loads(api.read_text())
        title, classes = TEMPLATES[short], {n["class_type"] for n in prompt.values() if not _embedded(n)}
        assert not set('<>:"/\\|?*') & set(title), f"{title!r}: not a file name on every system"
        missing = [w for c, w in TITLE_WORDS.items() if c in classes and w not in title]
        assert not missing, f"{title!r} does not name {missing}"
        if not classes & set(TITLE_WORDS):
            assert "no model files" in title, title
    assert TEMPLATES["demo_synthetic"].startswith("1 ") and TEMPLATES["demo_training_free"].startswith("2 ")


def _embedded(node: dict) -> bool:
    """A loader that names a file of the nano model the pack embeds (models/nano/): not a file the user gets."""
    from comfyui_full4d.training.nano import NANO_FILES

    return any(v in NANO_FILES.values() for v in node["inputs"].values() if isinstance(v, str))


# Where ComfyUI looks for the files each loader names (the host's folders and the pack's, comfyui_full4d/host/paths.py)
MODEL_DIRS = {("UNETLoader", "unet_name"): "models/diffusion_models/", ("VAELoader", "vae_name"): "models/vae/",
              ("CLIPLoader", "clip_name"): "models/text_encoders/",
              ("Full4DDA3Loader", "model"): "models/depth_anything_3/",
              ("Full4DAdapterLoader", "adapter"): "models/full4d/"}


@pytest.mark.parametrize("api", API, ids=SHORT)
def test_note_lists_every_model_file_and_its_folder(api):
    prompt = json.loads(api.read_text())
    notes = [n for n in json.loads(ui_file(api).read_text())["nodes"] if n["type"] == "Note"]
    assert len(notes) == 1
    text = notes[0]["widgets_values"][0]
    wanted = [MODEL_DIRS[(n["class_type"], k)] + ("" if k == "adapter" else v) for n in prompt.values()
              for k, v in n["inputs"].items() if (n["class_type"], k) in MODEL_DIRS and not _embedded(n)]
    assert all(w in text for w in wanted), (wanted, text)
    if not wanted:
        assert "no model files" in text
    if any(_embedded(n) for n in prompt.values()):
        assert "models/nano" in text and "embedded" in text, text


def test_model_folders_are_the_hosts(comfy_host):
    import folder_paths

    from comfyui_full4d.host.paths import DEPTH, FULL4D, register

    register()
    for folder in MODEL_DIRS.values():
        assert folder.split("/")[1] in folder_paths.folder_names_and_paths, folder
    assert {DEPTH, FULL4D} <= {f.split("/")[1] for f in MODEL_DIRS.values()}


@pytest.mark.parametrize("api", API, ids=SHORT)
def test_each_stage_is_a_group_around_its_saved_nodes(api):
    """The file's own rectangles (title bar above ``pos``); tests/test_browser_layout.py checks what the frontend
    draws, in both node modes."""
    prompt, ui = json.loads(api.read_text()), json.loads(ui_file(api).read_text())
    ids, stages = ui_ids(prompt), node_stages(prompt)
    nodes = {n["id"]: n for n in ui["nodes"]}
    titles = {key: title for key, title, _ in STAGES}
    assert [g["title"] for g in ui["groups"]] == [titles[k] for k in titles if k in stages.values()]
    for g in ui["groups"]:
        gx, gy, gw, gh = g["bounding"]
        for nid in (n for n in prompt if titles[stages[n]] == g["title"]):
            (x, y), (w, h) = nodes[ids[nid]]["pos"], nodes[ids[nid]]["size"]
            assert gx <= x and gy <= y - 30 and x + w <= gx + gw and y + h <= gy + gh, (g["title"], nid)
