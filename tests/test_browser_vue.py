"""Real-browser tests in the frontend's Vue node mode (issue 23): ``Comfy.VueNodes.Enabled`` ("Nodes 2.0", a
user setting many have on), where nodes are Vue components over the graph canvas instead of LiteGraph drawings.
Same server, chromium and helpers as tests/test_browser.py (the classic mode), one page for the module.

* the preview widget (a node built by hand previewing three PLY frames of a red/green ball): it is drawn inside a
  Vue node, scrubs with the time slider, orbits on a mouse drag (the node stays where it is), and the mouse wheel
  over it zooms the splat view (camera distance) while the graph's scale stays; over empty graph the wheel still
  zooms the graph. The widget fills its node: no empty band under its controls, also after the node is enlarged;
* every shipped UI workflow opens with no missing-nodes report, no placeholder nodes and no console errors from
  the pack (web/); the preview nodes of the workflows fill their node as above. Screenshots vue_*.png.

Skipped, with the frontend's version in the reason, on a frontend that has no Vue node mode. Console errors go to
tests/artifacts/browser_console_vue.log.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from comfyui_full4d.client.workflow import api_stem
from test_browser import (CHROMIUM, PREVIEW_JS, WORKFLOW_IDS, WORKFLOWS, Browser, _pixels, _write_frames,
                          add_ply_preview_node, browser_page, check_wheel_zoom, preview_canvas_centre, preview_view)

pytestmark = [pytest.mark.slow, pytest.mark.server,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="apt-get install chromium")]

SETTING = "Comfy.VueNodes.Enabled"
# Most space a preview node may keep under the widget's last row: the Vue node's own footer (1.49 / 1.58 draw the
# pack's badge, ~36 px; 1.32.9 its padding, ~13 px). Before issue 23 the widget kept its own height in 1.32.9's Vue
# rows and left 150 px of an enlarged node empty.
MAX_GAP_PX = 48


def _setting_known(b: Browser) -> bool:
    """Whether the frontend registers the Vue node setting (a stored value alone is no sign: it is the server's)."""
    return b.page.evaluate("""id => { const s = window.app.ui?.settings;
        return !!(s?.settingsLookup?.[id] ?? window.app.extensionManager?.setting?.settings?.[id]); }""", SETTING)


@pytest.fixture(scope="module")
def vue_browser(comfy_server, tmp_path_factory, artifacts):
    with browser_page(comfy_server, tmp_path_factory.mktemp("chromium_profile_vue"), artifacts, vue_nodes=True,
                      log_file="browser_console_vue.log") as b:
        version = b.page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__ ?? 'unknown'")
        if not _setting_known(b):
            pytest.skip(f"frontend {version} has no Vue node mode (no setting {SETTING})")
        assert b.page.evaluate(f"() => window.app.extensionManager.setting.get('{SETTING}')") is True
        yield b


@pytest.fixture
def browser(vue_browser, artifacts, request):
    vue_browser.errors.clear()
    yield vue_browser
    vue_browser.log_errors(artifacts, request.node.name)


def _preview_layout(b: Browser) -> list[dict]:
    """Per on-screen preview widget: the Vue node element it sits in (None in the classic mode) and the empty
    space between its last row (the camera buttons, else the play bar) and the bottom of that node element."""
    return b.page.evaluate("""() => [...document.querySelectorAll('.full4d-preview')]
        .filter(e => e.getClientRects().length).map(w => {
            const node = w.closest('[data-node-id]');
            const rows = [...w.children].filter(c => c.getBoundingClientRect().height > 0);
            const last = rows[rows.length - 1].getBoundingClientRect().bottom;
            return { node: node?.dataset.nodeId ?? null, gap: node ? node.getBoundingClientRect().bottom - last : null,
                     nodeHeight: node?.getBoundingClientRect().height ?? null };
        })""")


def _assert_fills_node(b: Browser, what: str) -> None:
    layout = _preview_layout(b)
    assert layout and all(x["node"] is not None for x in layout), f"{what}: preview widget not in a Vue node: {layout}"
    bad = [x for x in layout if x["gap"] > MAX_GAP_PX]
    assert not bad, f"{what}: the node keeps more than {MAX_GAP_PX} px empty under the preview's controls: {bad}"


def test_vue_preview_draws_orbits_scrubs_and_zooms(browser, comfy_server, artifacts):
    _write_frames(comfy_server.output_dir / "browser_preview_vue")
    page = browser.page
    add_ply_preview_node(browser, "browser_preview_vue/frame_*.ply")
    hist = browser.queue_and_wait(timeout=120)
    assert hist.get("status", {}).get("status_str") == "success", json.dumps(hist.get("status"))[:3000]
    browser.wait_label("t 1/3")
    page.wait_for_timeout(500)
    browser.close_dialogs()
    page.screenshot(path=str(artifacts / "vue_preview_page.png"))
    _assert_fills_node(browser, "new preview node")

    a = browser.canvas_png()
    (artifacts / "vue_preview_t0.png").write_bytes(a)
    pa = _pixels(a)
    assert pa.std() > 5, "canvas is blank"
    assert (pa[..., 0] > pa[..., 1] + 60).sum() > 100, "red half of the ball not drawn"

    # scrub
    browser.set_time(2)
    browser.wait_label("t 3/3")
    pb = _pixels(browser.canvas_png())
    assert np.abs(pa - pb).mean() > 1.0, "moving the time slider did not change the picture"

    # orbit: a left drag over the view turns the camera; the Vue node under it does not move
    pos0 = page.evaluate("() => [...window.app.graph.nodes[0].pos]")
    v0 = preview_view(browser)
    x, y = preview_canvas_centre(browser)
    page.evaluate(f"() => {{ {PREVIEW_JS}[0].querySelector('.full4d-label').textContent = ''; }}")
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 80, y + 10, steps=6)
    page.mouse.up()
    browser.wait_label("t 3/3")
    v1 = preview_view(browser)
    assert abs(v1["az"] - v0["az"]) > 0.3, f"the drag did not orbit the view: {v0} -> {v1}"
    assert page.evaluate("() => [...window.app.graph.nodes[0].pos]") == pos0, "the drag moved the node"
    assert v1["graph_offset"] == v0["graph_offset"], "the drag panned the graph"
    pc = _pixels(browser.canvas_png())
    (artifacts / "vue_preview_orbit.png").write_bytes(browser.canvas_png())
    assert np.abs(pc - pb).mean() > 1.0, "orbiting did not change the picture"

    # wheel: the splat view zooms, the graph does not; over empty graph the graph zooms
    check_wheel_zoom(browser, pc)

    # an enlarged node: the widget grows with it
    page.evaluate("""() => { const app = window.app, n = app.graph.nodes[0];
        app.canvas.ds.offset = [20, 60]; app.canvas.ds.scale = 0.8; n.setSize([n.size[0] + 60, n.size[1] + 220]);
        app.graph.setDirtyCanvas(true, true); }""")
    page.wait_for_timeout(800)
    page.screenshot(path=str(artifacts / "vue_preview_enlarged.png"))
    _assert_fills_node(browser, "enlarged preview node")
    assert not browser.pack_errors(), browser.pack_errors()


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=WORKFLOW_IDS)
def test_vue_workflow_opens(browser, artifacts, workflow):
    browser.open_workflow(workflow)
    missing = browser.missing_nodes_dialog()
    placeholders = browser.unregistered_nodes()
    browser.close_dialogs()
    browser.fit_view()
    browser.page.screenshot(path=str(artifacts / f"vue_workflow_{api_stem(workflow.stem)}.png"))
    assert not missing, f"{workflow.name}: missing-nodes report shown"
    assert not placeholders, f"{workflow.name}: unregistered nodes {placeholders}"
    nodes = json.loads(workflow.read_text())["nodes"]
    previews = [str(n["id"]) for n in nodes if n["type"] == "Full4DSplatPreview"]
    for nid in previews:  # each preview node at scale 1 in view, filling its node
        browser.page.evaluate("""id => { const app = window.app, n = app.graph.getNodeById(id);
            app.canvas.ds.scale = 1; app.canvas.ds.offset = [-n.pos[0] + 100, -n.pos[1] + 80];
            app.graph.setDirtyCanvas(true, true); }""", int(nid))
        browser.page.wait_for_timeout(800)
        layout = [x for x in _preview_layout(browser) if x["node"] == nid]
        assert layout, f"{workflow.name}: preview node {nid} not drawn as a Vue node with its widget"
        assert layout[0]["gap"] <= MAX_GAP_PX, f"{workflow.name}: node {nid} empty under the preview: {layout}"
    assert not browser.pack_errors(), browser.pack_errors()
