"""No node covers another as the frontend draws the shipped UI workflows (issue 23).

Each workflow in workflows/ is opened through the page's own "Open" file input (``Browser`` of
tests/test_browser.py) and the rectangles the frontend draws are read back, in graph units:

* classic (LiteGraph canvas) mode: ``node.pos`` / ``node.size`` after loading, which is the saved size grown to
  the node's ``computeSize()`` (the frontend widens a node to its title and widgets), plus the title bar
  (``LiteGraph.NODE_TITLE_HEIGHT``) drawn above ``pos``;
* Vue node mode (``Comfy.VueNodes.Enabled``, "Modern Node Design" / "Nodes 2.0", where the frontend has the
  setting): the DOM rectangles of the ``[data-node-id]`` elements, which grow with their content.

A test fails naming every pair of node ids whose rectangles intersect. Another checks the groups (issue 32): one per
pipeline stage of ``comfyui_full4d.client.layout``, each drawn around every node of its stage (and the frontend's own
group membership, which moves those nodes with the group, is exactly them), and the drawn graph is not one long
row: its bounding box at most ``MAX_ASPECT`` times as wide as tall. The server's input/ holds a 16:9 clip
under the file name the workflows' Full4DLoadVideo nodes name (``my_video.mp4``), so the loader draws its video
preview as it does for a user who put a video there. Screenshots go to tests/artifacts/
(layout_<mode>_<workflow>.png).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfyui_full4d.client.layout import STAGES, node_stages
from comfyui_full4d.client.workflow import api_stem, ui_ids
from test_browser import ARGS, CHROMIUM, VIEWPORT, WORKFLOW_IDS, WORKFLOWS, Browser

pytestmark = [pytest.mark.slow, pytest.mark.server,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="apt-get install chromium")]

VUE_SETTING = "Comfy.VueNodes.Enabled"
USER_VIDEO = "my_video.mp4"  # the file the shipped Full4DLoadVideo nodes name
# big enough that a fitted graph is drawn at a scale where Vue nodes keep their full content (and none is culled)
LAYOUT_VIEWPORT = {"width": 2800, "height": 1500}

# Before issue 32 full_pipeline and training_free_pipeline were one row of groupless nodes, 3.4 and 3.6 times as wide
# as tall (the frontend's Fit View then hid all text); the grouped, wrapped graphs are 1.6 to 2.6.
MAX_ASPECT = 2.8
# Drawn group rectangles [title, x, y, w, h] in graph units, and the ids of the nodes the frontend counts as inside.
GROUPS_JS = """() => window.app.graph.groups.map(g => { g.recomputeInsideNodes();
    return [g.title, ...g._bounding, g.nodes.map(n => Number(n.id)).sort((a, b) => a - b)]; })"""
# Drawn node rectangles [id, x, y, w, h] in graph units (y includes the title bar).
CLASSIC_RECTS_JS = """() => { const T = window.LiteGraph.NODE_TITLE_HEIGHT;
    return window.app.graph.nodes.map(n => [n.id, n.pos[0], n.pos[1] - T, n.size[0], n.size[1] + T]); }"""
VUE_RECTS_JS = """() => { const c = window.app.canvas, s = c.ds.scale, [ox, oy] = c.ds.offset;
    const box = c.canvas.getBoundingClientRect();
    return [...document.querySelectorAll('[data-node-id]')].map(e => { const r = e.getBoundingClientRect();
        return [Number(e.getAttribute('data-node-id')), (r.x - box.x) / s - ox, (r.y - box.y) / s - oy,
                r.width / s, r.height / s]; }); }"""


def overlaps(rects: list[list[float]], tol: float = 0.5) -> list[str]:
    """``"a x b"`` for every pair of rectangles [id, x, y, w, h] that intersect by more than ``tol`` both ways."""
    out = []
    for i, (a, ax, ay, aw, ah) in enumerate(rects):
        for b, bx, by, bw, bh in rects[i + 1:]:
            dx = min(ax + aw, bx + bw) - max(ax, bx)
            dy = min(ay + ah, by + bh) - max(ay, by)
            if dx > tol and dy > tol:
                out.append(f"{min(a, b)} x {max(a, b)} ({dx:.0f} x {dy:.0f} px)")
    return sorted(out)


def test_overlaps_names_intersecting_pairs_only():
    # 1 and 2 share a 10 x 50 corner; 3 touches 4's right edge; 4 touches 1's right edge and ends above 2
    rects = [[1, 0, 0, 100, 100], [2, 90, 50, 100, 100], [3, 200, 0, 50, 50], [4, 100, 0, 100, 40]]
    assert overlaps(rects) == ["1 x 2 (10 x 50 px)"]
    assert overlaps([[7, 0, 0, 10, 10], [5, 5, 5, 10, 10]]) == ["5 x 7 (5 x 5 px)"]


@pytest.fixture(scope="module")
def layout_browser(comfy_server, tmp_path_factory):
    sync_api = pytest.importorskip("playwright.sync_api")
    from media import synthetic_video

    clip = comfy_server.input_dir / USER_VIDEO
    if not clip.exists():
        synthetic_video(clip, T=9, H=216, W=384)
    for key, value in (("Comfy.TutorialCompleted", True), ("Comfy.Minimap.Visible", False),
                       ("LiteGraph.Canvas.MinFontSizeForLOD", 1)):
        comfy_server.request(f"/settings/{key}", value)
    with sync_api.sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(str(tmp_path_factory.mktemp("chromium_layout")),
                                                    executable_path=CHROMIUM, args=ARGS, headless=True,
                                                    viewport=LAYOUT_VIEWPORT)
        ctx.add_init_script("localStorage.setItem('vueNodesBannerDismissed', 'true')")
        page = ctx.new_page()
        b = Browser(page, comfy_server)
        page.goto(comfy_server.url, wait_until="networkidle", timeout=120_000)
        page.wait_for_function("() => window.app && window.app.graph && window.LiteGraph", timeout=120_000)
        page.keyboard.press("Escape")
        page.wait_for_timeout(300)
        b.close_dialogs()
        yield b
        ctx.close()


def _set_vue(b: Browser, on: bool) -> bool:
    """Switch the frontend's Vue node mode; False where the frontend has no such setting."""
    return bool(b.page.evaluate("""async on => { const s = window.app.extensionManager?.setting;
        if (!s || s.get(%r) === undefined) return false;
        await s.set(%r, on); return true; }""" % (VUE_SETTING, VUE_SETTING), on))


def drawn_rects(b: Browser, workflow: Path, mode: str) -> list[list[float]]:
    b.open_workflow(workflow)
    b.close_dialogs()
    b.page.wait_for_timeout(1000)  # DOM widgets (video preview, splat preview) size themselves after mounting
    b.fit_view()
    b.page.wait_for_timeout(800)
    if mode == "vue":
        n = len(json.loads(workflow.read_text())["nodes"])
        b.page.wait_for_function("n => document.querySelectorAll('[data-node-id]').length >= n", arg=n,
                                 timeout=30_000)
        return b.page.evaluate(VUE_RECTS_JS)
    return b.page.evaluate(CLASSIC_RECTS_JS)


@pytest.mark.parametrize("mode", ["classic", "vue"])
@pytest.mark.parametrize("workflow", WORKFLOWS, ids=WORKFLOW_IDS)
def test_no_node_covers_another(layout_browser, artifacts, workflow, mode):
    b = layout_browser
    if not _set_vue(b, mode == "vue"):
        if mode == "vue":
            pytest.skip(f"this frontend has no {VUE_SETTING} setting")
    try:
        rects = drawn_rects(b, workflow, mode)
        b.page.screenshot(path=str(artifacts / f"layout_{mode}_{api_stem(workflow.stem)}.png"))
    finally:
        _set_vue(b, False)
    saved = {n["id"]: n for n in json.loads(workflow.read_text())["nodes"]}
    rects = [[int(r[0]), *r[1:]] for r in rects]  # newer frontends keep node ids as strings
    assert sorted(r[0] for r in rects) == sorted(saved), "not every node was drawn"
    bad = overlaps(rects)
    drawn = "\n".join(f"  node {i} ({saved[i]['type']}): saved pos {saved[i]['pos']} size {saved[i]['size']}, drawn "
                      f"x {x:.0f} y {y:.0f} w {w:.0f} h {h:.0f}" for i, x, y, w, h in rects)
    assert not bad, f"{workflow.name} ({mode} nodes): overlapping nodes " + ", ".join(bad) + "\n" + drawn


def outside(rect: list[float], box: list[float], tol: float = 1.0) -> bool:
    """Whether ``rect`` [id, x, y, w, h] reaches out of ``box`` [x, y, w, h] by more than ``tol``."""
    _, x, y, w, h = rect
    bx, by, bw, bh = box
    return x < bx - tol or y < by - tol or x + w > bx + bw + tol or y + h > by + bh + tol


def test_outside_sees_a_rectangle_leave_its_box():
    assert not outside([1, 10, 10, 50, 50], [0, 0, 100, 100])
    assert outside([1, 60, 10, 50, 50], [0, 0, 100, 100])  # 10 past the right edge
    assert outside([1, 10, -5, 50, 50], [0, 0, 100, 100])  # 5 above the top


@pytest.mark.parametrize("mode", ["classic", "vue"])
@pytest.mark.parametrize("workflow", WORKFLOWS, ids=WORKFLOW_IDS)
def test_each_stage_is_a_group_around_its_nodes(layout_browser, workflow, mode):
    b = layout_browser
    if not _set_vue(b, mode == "vue"):
        if mode == "vue":
            pytest.skip(f"this frontend has no {VUE_SETTING} setting")
    try:
        rects = {int(r[0]): [int(r[0]), *r[1:]] for r in drawn_rects(b, workflow, mode)}
        groups = b.page.evaluate(GROUPS_JS)
    finally:
        _set_vue(b, False)
    prompt = json.loads((workflow.parent / "api" / f"{api_stem(workflow.stem)}_api.json").read_text())
    ids, stages = ui_ids(prompt), node_stages(prompt)
    titles = {key: title for key, title, _ in STAGES}
    expected = {titles[s]: sorted(ids[n] for n in prompt if stages[n] == s) for s in titles if s in stages.values()}
    assert [g[0] for g in groups] == list(expected), "one group per stage, in stage order"
    for title, x, y, w, h, inside in groups:
        out = [i for i in expected[title] if outside(rects[i], [x, y, w, h])]
        assert not out, f"{workflow.name} ({mode}): group {title!r} [{x:.0f}, {y:.0f}, {w:.0f}, {h:.0f}] does " \
                        f"not hold nodes " + ", ".join(f"{i} {[round(v) for v in rects[i][1:]]}" for i in out)
        assert inside == expected[title], f"{workflow.name} ({mode}): the frontend puts {inside} in {title!r}"
    boxes = [r[1:] for r in rects.values()] + [g[1:5] for g in groups]
    width = max(x + w for x, _, w, _ in boxes) - min(x for x, _, _, _ in boxes)
    height = max(y + h for _, y, _, h in boxes) - min(y for _, y, _, _ in boxes)
    assert width / height <= MAX_ASPECT, f"{workflow.name} ({mode}): {width:.0f} x {height:.0f}, one long row"
