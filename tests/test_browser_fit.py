"""Full4DFit4DGS in the real frontend (issue 32), classic node mode.

* UI workflows saved before the fit's options and FMD teacher had their own nodes (tests/fixtures/old_workflows/ui/:
  workflows/*.json as they were) opened in the page: web/full4d_fit_upgrade.js replaces their Fit node, whose widget
  values the frontend would otherwise assign by position to the node's new, fewer widgets. What the page then queues
  is checked against the node definitions the server reports and, for the demo, against today's demo API twin (the
  same fit, its old settings on a Full4DFitOptions node); an old graph with FMD wired gets a Full4DFMDTeacher node.
* The fit's status text under the node (the host's progress text; the frontend's box breaks lines anywhere) keeps
  every word on one line, at the node's saved width and at its narrowest; a control line of the old, unwrapped kind
  does get a word cut. Screenshot: artifacts/fit_status_text.png.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfyui_full4d.client.workflow import ui_stem, validate_api
from test_browser import CHROMIUM, ROOT, _is_link, _prompt_mismatches, browser_page

pytestmark = [pytest.mark.slow, pytest.mark.server,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="apt-get install chromium")]

OLD_UI = ROOT / "tests" / "fixtures" / "old_workflows" / "ui"
OLD_WIDGETS = ["iterations", "lr_means", "lr_planes", "lambda_dssim", "lambda_tv", "max_gaussians", "prune_opacity",
               "sh_degree", "checkpoint_every", "resume", "render_time", "orbit_frames", "init", "lambda_fmd",
               "recalibrate"]
OPTIONS = {"lr_means": 1.6e-4, "lr_planes": 0.05, "lambda_dssim": 0.2, "lambda_tv": 2e-4, "prune_opacity": 0.015,
           "sh_degree": 3, "checkpoint_every": 500, "recalibrate": True}


@pytest.fixture(scope="module")
def page(comfy_server, tmp_path_factory, artifacts):
    with browser_page(comfy_server, tmp_path_factory.mktemp("chromium_upgrade"), artifacts,
                      log_file="browser_console_upgrade.log") as b:
        yield b


@pytest.fixture(scope="module")
def object_info(comfy_server):
    return comfy_server.get_json("/object_info")


def _open(page, path: Path) -> dict:
    """Open ``path`` through the page's "Open" file input (as ``Browser.open_workflow``, which waits for exactly the
    file's node count: an upgrade adds nodes) and return what the page would queue."""
    page.errors.clear()
    n = len(json.loads(path.read_text())["nodes"])
    page.page.evaluate("() => window.app.graph.clear()")
    page.page.set_input_files("#comfy-file-input", str(path))
    page.page.wait_for_function("n => window.app.graph.nodes.length >= n", arg=n, timeout=60_000)
    page.page.wait_for_timeout(800)  # dialogs open, and the upgrade runs, after the graph is configured
    page.close_dialogs()
    return page.page_prompt()


def _fit(ui: dict) -> tuple[dict, dict]:
    """The old file's Fit node and its widget values by name."""
    (node,) = [n for n in ui["nodes"] if n["type"] == "Full4DFit4DGS"]
    return node, dict(zip(OLD_WIDGETS, node["widgets_values"]))


@pytest.mark.parametrize("name", sorted(p.stem for p in OLD_UI.glob("*.json")))
def test_an_old_ui_workflow_queues_the_fit_it_was_saved_with(page, object_info, name):
    ui = json.loads((OLD_UI / f"{name}.json").read_text())
    node, old = _fit(ui)
    prompt = _open(page, OLD_UI / f"{name}.json")
    assert validate_api(prompt, object_info, files_may_be_missing=True) == []
    fit = prompt[str(node["id"])]
    assert fit["class_type"] == "Full4DFit4DGS"
    for k in ("iterations", "max_gaussians", "orbit_frames", "render_time", "resume", "init"):
        assert fit["inputs"][k] == old[k], (k, fit["inputs"][k], old[k])
    links = {ui_in["name"]: next(li for li in ui["links"] if li[0] == ui_in["link"])
             for ui_in in node["inputs"] if ui_in["link"] is not None}
    for slot, li in links.items():  # every link into the old node, into the new one
        assert fit["inputs"][slot] == [str(li[1]), li[2]], slot
    outputs = [li for li in ui["links"] if li[1] == node["id"]]
    for li in outputs:  # and every link out of it
        target = [n for n in ui["nodes"] if n["id"] == li[3]][0]
        name_in = target["inputs"][li[4]]["name"]
        assert prompt[str(li[3])]["inputs"][name_in] == [str(node["id"]), li[2]], (li, name_in)
    changed = {k: old[k] for k in OPTIONS if old[k] != OPTIONS[k]}
    if changed:
        options = prompt[fit["inputs"]["options"][0]]
        assert options["class_type"] == "Full4DFitOptions"
        assert {k: options["inputs"][k] for k in OPTIONS} == {**OPTIONS, **changed}
    else:
        assert "options" not in fit["inputs"]
    assert not page.pack_errors(), page.pack_errors()


def test_the_old_demo_queues_todays_demo(page):
    """Node for node and value for value, the old demo UI file queues what the old demo is on today's nodes (its
    Fit node's old settings on a Full4DFitOptions node; tests/fixtures/old_workflows/demo_synthetic_upgraded_api.json,
    the demo's API twin before the demo ran the diffusion stage)."""
    prompt = _open(page, OLD_UI / "demo_synthetic.json")
    today = json.loads((ROOT / "tests" / "fixtures" / "old_workflows" / "demo_synthetic_upgraded_api.json").read_text())
    (fit,) = [k for k, v in today.items() if v["class_type"] == "Full4DFit4DGS"]
    opt_today, opt_page = today[fit]["inputs"]["options"][0], prompt[fit]["inputs"]["options"][0]
    today[opt_page] = today.pop(opt_today)
    assert _prompt_mismatches(prompt, today) == []
    assert set(prompt) == set(today)
    for nid, node in today.items():
        links = {k: v for k, v in node["inputs"].items() if _is_link(v)}
        linked = {k: v for k, v in prompt[nid]["inputs"].items() if _is_link(v)}
        assert linked == {k: [opt_page if v[0] == opt_today else v[0], v[1]] for k, v in links.items()}, nid


def test_an_old_graph_with_fmd_wired_gets_a_teacher_node(page, tmp_path):
    """The old demo with FMD on (lambda_fmd 0.5) and its fmd_* inputs linked to a model, a VAE, a prompt, the
    source video and its latent: the upgraded graph has a Full4DFMDTeacher with those, weight 0.5."""
    ui = json.loads((OLD_UI / "demo_synthetic.json").read_text())
    node, _ = _fit(ui)
    node["widgets_values"][OLD_WIDGETS.index("lambda_fmd")] = 0.5
    extra = [(100, "UNETLoader", [], [{"name": "MODEL", "type": "MODEL"}], ["wan.safetensors", "default"]),
             (101, "VAELoader", [], [{"name": "VAE", "type": "VAE"}], ["wan_vae.safetensors"]),
             (102, "CLIPTextEncode", [{"name": "clip", "type": "CLIP", "link": None}],
              [{"name": "CONDITIONING", "type": "CONDITIONING"}], ["a scene"]),
             (103, "VAEEncode", [{"name": "pixels", "type": "IMAGE", "link": None},
                                 {"name": "vae", "type": "VAE", "link": None}], [{"name": "LATENT", "type": "LATENT"}],
              [])]
    for i, (nid, typ, inputs, outputs, widgets) in enumerate(extra):
        ui["nodes"].append({"id": nid, "type": typ, "pos": [-900, 300 * i], "size": [300, 120], "flags": {},
                            "order": 100 + i, "mode": 0, "inputs": inputs,
                            "outputs": [{**o, "links": [], "slot_index": 0} for o in outputs],
                            "properties": {}, "widgets_values": widgets})
    nodes = {n["id"]: n for n in ui["nodes"]}

    def link(src: int, slot: int, dst: int, name: str, typ: str) -> None:
        lid = max(li[0] for li in ui["links"]) + 1
        target = nodes[dst]["inputs"]
        index = next(i for i, x in enumerate(target) if x["name"] == name)
        target[index]["link"] = lid
        nodes[src]["outputs"][slot]["links"].append(lid)
        ui["links"].append([lid, src, slot, dst, index, typ])

    fit = node["id"]
    for src, slot, name, typ in ((100, 0, "fmd_model", "MODEL"), (101, 0, "fmd_vae", "VAE"),
                                 (102, 0, "fmd_positive", "CONDITIONING"), (1, 0, "fmd_source", "IMAGE"),
                                 (103, 0, "fmd_source_latent", "LATENT")):
        link(src, slot, fit, name, typ)
    link(1, 0, 103, "pixels", "IMAGE")
    link(101, 0, 103, "vae", "VAE")
    ui["last_link_id"], ui["last_node_id"] = max(li[0] for li in ui["links"]), 103
    path = tmp_path / "old_demo_with_fmd.json"
    path.write_text(json.dumps(ui))
    prompt = _open(page, path)
    teacher = prompt[prompt[str(fit)]["inputs"]["fmd_teacher"][0]]
    assert teacher["class_type"] == "Full4DFMDTeacher"
    assert teacher["inputs"] == {"model": ["100", 0], "vae": ["101", 0], "positive": ["102", 0], "source": ["1", 0],
                                 "weight": 0.5}
    assert not any(k.startswith("fmd_") and k != "fmd_teacher" for k in prompt[str(fit)]["inputs"])


# Words of the visible text box that holds `probe`, each with the number of lines it is drawn on.
WORD_LINES_JS = """probe => {
    const box = [...document.querySelectorAll('span')].find(s => s.textContent.includes(probe)
                                                                 && s.getClientRects().length);
    if (!box) return null;
    const out = [], walk = document.createTreeWalker(box, NodeFilter.SHOW_TEXT);
    for (let n = walk.nextNode(); n; n = walk.nextNode())
        for (const m of n.data.matchAll(/\\S+/g)) {
            const r = document.createRange();
            r.setStart(n, m.index); r.setEnd(n, m.index + m[0].length);
            const tops = [...r.getClientRects()].filter(q => q.width > 0).map(q => Math.round(q.top));
            out.push([m[0], new Set(tops).size]);
        }
    return out; }"""
OLD_STYLE_LINE = ("training-view PSNR 23.14 dB (per view: 21.6, 24.0, 23.8); 3,000 Gaussians; init: views: "
                  "ground-truth depth; rolled back 2x; kept the rig for view 2")


def _cut_words(page, probe: str) -> list[str]:
    page.page.wait_for_function("p => [...document.querySelectorAll('span')].some(s => s.textContent.includes(p) "
                                "&& s.getClientRects().length)", arg=probe, timeout=60_000)
    page.page.wait_for_timeout(300)
    return [w for w, lines in page.page.evaluate(WORD_LINES_JS, probe) if lines > 1]


@pytest.mark.timeout(2400)
def test_the_fit_status_text_never_cuts_a_word(page, comfy_server, artifacts):
    demo = ROOT / "workflows" / f"{ui_stem('demo_synthetic')}.json"
    _open(page, demo)
    api = json.loads((ROOT / "workflows" / "api" / "demo_synthetic_api.json").read_text())
    (fit,) = [k for k, v in api.items() if v["class_type"] == "Full4DFit4DGS" and v["inputs"]["images"][0] == "1"]
    options = api[fit]["inputs"]["options"][0]
    prompt = {k: api[k] for k in ("1", fit, options)}
    prompt["1"]["inputs"].update(num_views=3, num_frames=5, width=48, height=32)
    prompt[fit]["inputs"].update(iterations=10, max_gaussians=3000, orbit_frames=2, resume=False)
    prompt["show"] = {"class_type": "PreviewImage", "inputs": {"images": [fit, 1]}}
    page.page.evaluate("""id => { const c = window.app.canvas, n = window.app.graph.getNodeById(id);
        n.setSize([n.computeSize()[0], n.size[1]]); c.ds.scale = 1; c.ds.offset = [-n.pos[0] + 60, -n.pos[1] + 80];
        window.app.graph.setDirtyCanvas(true, true); }""", int(fit))
    # control: a line of the old kind, in the same box at the node's narrowest, is cut mid-word
    page.page.evaluate("([id, text]) => window.app.api.dispatchCustomEvent('progress_text', {nodeId: id, text})",
                       [fit, OLD_STYLE_LINE])
    assert _cut_words(page, "ground-truth"), "the control line was not cut: the check below could not fail"
    client = page.page.evaluate("() => window.app.api.clientId ?? window.app.api.initialClientId")
    answer = comfy_server.post_prompt(prompt, client)
    assert "prompt_id" in answer, answer
    status = comfy_server.wait_history(answer["prompt_id"], timeout=1500).get("status", {})
    assert status.get("status_str") == "success", status
    cut = _cut_words(page, "training-view PSNR")
    page.page.screenshot(path=str(artifacts / "fit_status_text.png"))
    assert not cut, f"words cut across lines at the node's narrowest: {cut}"
    page.page.evaluate("id => { const n = window.app.graph.getNodeById(id); n.setSize([n.size[0] * 1.6, n.size[1]]);"
                       " window.app.graph.setDirtyCanvas(true, true); }", int(fit))
    assert not _cut_words(page, "training-view PSNR"), "words cut across lines at a wider node"
