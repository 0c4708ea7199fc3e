"""Real-browser tests (issue 7): Debian chromium driven by Playwright against the real ComfyUI server and its
real frontend package. One server and one page are shared by the module.

* every UI workflow in workflows/ opened through the page's own "Open" file input: no missing-nodes dialog, no
  placeholder (unregistered) nodes, no console errors from the pack; screenshots workflow_<name>.png;
* the demo workflow opened, shrunk to a test size through its widgets and queued from the page: it succeeds, the
  Full4DSplatPreview canvas is not blank and the time slider changes it; screenshots demo_page.png, demo_t0.png,
  demo_tN.png;
* a preview of three hand-written PLY frames (red/green ball): screenshots preview_page.png, preview_t0.png,
  preview_t2.png.

Screenshots go to tests/artifacts/. Assertions read only the pixels of ``.full4d-preview canvas`` and drive the
``.full4d-time`` slider, so they do not depend on which renderer draws the splats.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest

from comfyui_full4d.client.workflow import FILE_INPUTS, api_stem, ui_stem
from fixtures.demo import DEMO, demo_size

CHROMIUM = "/usr/bin/chromium"
pytestmark = [pytest.mark.slow, pytest.mark.server,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="apt-get install chromium")]

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
WORKFLOW_IDS = [api_stem(p.stem) for p in WORKFLOWS]  # the API twins' short names (the UI files' are titles)
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
VIEWPORT = {"width": 1400, "height": 1000}
SHOT_SIZE = {"width": 2800, "height": 1500}  # workflow screenshots
PACK_MARKERS = ("full4d",)  # lower-cased: Full4D node types, [full4d] logs, /extensions/comfyui-full4d/ URLs
# Not the pack's: on opening a workflow the frontend asks the Comfy registry which pack each non-core node comes
# from (GET https://api.comfy.org/comfy-nodes/<NodeType>/node); the host started with --disable-api-nodes sends
# "connect-src 'self'", so chromium logs one CSP error per custom node type. Kept in browser_console.log.
FRONTEND_NOISE = ("violates the following Content Security Policy directive", "https://api.comfy.org/")
# The one preview widget on screen (widgets of nodes in other tabs or off-screen have no client rects).
PREVIEW_JS = """[...document.querySelectorAll('.full4d-preview')].filter(e => e.getClientRects().length)"""
# The frontend's missing-nodes report: 1.32 opens a dialog (key "global-missing-nodes", body class
# "comfy-missing-nodes", title "This workflow has missing nodes"); 1.49 and 1.58 show an error overlay instead
# (data-testid "error-overlay", title "Missing node: <type>" or "Some nodes are missing ..."), which also reports
# missing models and media: only its missing-node wording counts here.
MISSING_DIALOG_JS = """() => !!document.querySelector('.comfy-missing-nodes')
    || document.body.innerText.includes('This workflow has missing nodes')
    || [...document.querySelectorAll('.p-dialog, [role=dialog]')].some(d => /missing nodes/i.test(d.innerText))
    || [...document.querySelectorAll('[data-testid=error-overlay]')].some(
        d => d.getClientRects().length && /missing node|nodes are missing/i.test(d.innerText))"""
# What close_dialogs may click: dialog close buttons and the error overlay's dismiss button (both also labelled
# "Close"), never a workflow tab's close button (1.49+: aria-label "Close" too; closing the tab of an edited
# workflow opens a "save changes?" dialog and loses the graph under test).
CLOSE_BUTTONS = ".p-dialog-close-button, [role=dialog] button[aria-label='Close'], [data-testid=error-overlay-dismiss]"
NOT_CLOSE_BUTTONS = ".workflow-tabs, .workflow-tabs-container, [data-testid=close-workflow-button], .close-button"
# Widget values for a CI-sized demo run, keyed by node id: the sizes tests/test_run.py sets on the API twin and a
# 150-step 4D fit at the workflow's own learning rates, which must learn visible motion (the slider check below;
# 40 steps moved 19 of the 975 pixels that move in the 48x64 views, 150 steps 660).
DEMO_TEST_SIZE = {int(k): v for k, v in demo_size(json.loads(DEMO.read_text())).items()}
PREVIEW_NODE = 15
PLY_NAMES = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
             "rot_0", "rot_1", "rot_2", "rot_3"]


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


class Browser:
    """One chromium page on the server's frontend, collecting console errors and uncaught page errors."""

    def __init__(self, page, server, log_file: str = "browser_console.log") -> None:
        self.page, self.server, self.log_file = page, server, log_file
        self.errors: list[str] = []
        page.on("console", self._on_console)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}\n{getattr(e, 'stack', '') or ''}"))

    def _on_console(self, m) -> None:
        if m.type == "error":
            loc = m.location or {}
            self.errors.append(f"console: {m.text} @ {loc.get('url', '')}:{loc.get('lineNumber', '')}")

    def pack_errors(self) -> list[str]:
        """Console / page errors that mention the pack, less the registry look-ups (FRONTEND_NOISE)."""
        return [e for e in self.errors if any(k in e.lower() for k in PACK_MARKERS)
                and not all(k in e for k in FRONTEND_NOISE)]

    def log_errors(self, artifacts: Path, test: str) -> None:
        with open(artifacts / self.log_file, "a") as f:
            f.writelines(f"[{test}] {e}\n" for e in self.errors)

    def close_dialogs(self) -> None:
        """Close whatever dialog (first-run, missing models, errors) or error overlay sits over the canvas; never
        a workflow tab (``CLOSE_BUTTONS`` / ``NOT_CLOSE_BUTTONS``)."""
        for _ in range(6):
            shown = [b for b in self.page.locator(CLOSE_BUTTONS).all()
                     if b.is_visible() and not b.evaluate("(b, not) => !!b.closest(not)", NOT_CLOSE_BUTTONS)]
            if not shown:
                return
            try:
                shown[0].click(timeout=3000)
            except Exception:  # detached while closing (the same button matches both selectors)
                pass
            self.page.wait_for_timeout(300)

    def open_workflow(self, path: Path) -> None:
        """Open a workflow file the way a user does: the frontend's hidden "Open" file input (the same
        ``app.handleFile`` path a file drop takes)."""
        n = len(json.loads(path.read_text())["nodes"])
        self.page.evaluate("() => window.app.graph.clear()")
        self.page.set_input_files("#comfy-file-input", str(path))
        self.page.wait_for_function("n => window.app.graph.nodes.length === n", arg=n, timeout=60_000)
        self.page.wait_for_timeout(500)  # dialogs open after the graph is configured

    def missing_nodes_dialog(self) -> bool:
        return bool(self.page.evaluate(MISSING_DIALOG_JS))

    def unregistered_nodes(self) -> list[str]:
        """Nodes the frontend created as placeholders (type not in LiteGraph.registered_node_types), or marked
        with errors for another reason than a file the test server lacks (newer frontends, 1.49.6, flag a node
        whose file combo names a missing file: FILE_INPUTS)."""
        file_nodes = sorted({ct for ct, _ in FILE_INPUTS})
        return self.page.evaluate("""fileNodes => window.app.graph.nodes
            .filter(n => !window.LiteGraph.registered_node_types[n.type] || (n.has_errors && !fileNodes.includes(n.type)))
            .map(n => `${n.id}:${n.type}`)""", file_nodes)

    def fit_view(self) -> None:
        """The whole graph in view (the frontend's "Fit view" command, key '.')."""
        self.page.evaluate("() => window.app.extensionManager?.command?.execute('Comfy.Canvas.FitView')")
        self.page.wait_for_timeout(300)

    def page_prompt(self) -> dict:
        """The API-format prompt the page would queue (``app.graphToPrompt``)."""
        return self.page.evaluate("async () => (await window.app.graphToPrompt()).output")

    def set_widgets(self, values: dict[str, dict[str, object]]) -> list[str]:
        """Set widget values by node id and widget name, as typing them in would; returns the ones not found."""
        return self.page.evaluate("""values => {
            const missing = [];
            for (const [id, named] of Object.entries(values)) {
                const node = window.app.graph.getNodeById(Number(id));
                for (const [name, v] of Object.entries(named)) {
                    // a dynamic combo's nested widget (0.33's SaveVideo: `format.codec`) takes the API
                    // input's value too: the frontend queues the nested one, and setting `format` reset it
                    const ws = (node?.widgets ?? []).filter(w => w.name === name || w.name.endsWith(`.${name}`));
                    if (!ws.length) { missing.push(`${id}.${name}`); continue; }
                    for (const w of ws) { w.value = v; w.callback?.(v); }
                }
            }
            window.app.graph.setDirtyCanvas(true, true);
            return missing;
        }""", values)

    def widgets(self, node_id: str) -> list[str]:
        """``name=value`` of a node's widgets in the page, in order (for error messages)."""
        return self.page.evaluate("""id => (window.app.graph.getNodeById(Number(id))?.widgets ?? [])
            .map(w => `${w.name}=${JSON.stringify(w.value)}`)""", node_id)

    def wait_label(self, prefix: str, timeout: float = 60_000) -> None:
        """Wait until exactly one preview widget is on screen and its label starts with ``prefix``."""
        self.page.wait_for_function(f"""p => {{ const v = {PREVIEW_JS};
            return v.length === 1 && (v[0].querySelector('.full4d-label')?.textContent || '').startsWith(p); }}""",
                                    arg=prefix, timeout=timeout)

    def canvas_png(self) -> bytes:
        """The preview canvas's own pixels (independent of anything drawn over it)."""
        url = self.page.evaluate(f"() => {PREVIEW_JS}[0].querySelector('canvas').toDataURL('image/png')")
        return base64.b64decode(url.split(",", 1)[1])

    def set_time(self, frame: int) -> None:
        """Drag the time slider to ``frame`` (the input event the widget listens to)."""
        self.page.evaluate(f"""f => {{ const s = {PREVIEW_JS}[0].querySelector('.full4d-time'); s.value = String(f);
                                       s.dispatchEvent(new Event('input', {{bubbles: true}})); }}""", frame)

    def queue_and_wait(self, timeout: float = 600.0) -> dict:
        """``app.queuePrompt`` from the page; returns the server's history entry of the new prompt."""
        before = set(self.server.get_json("/history"))
        self.page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
        deadline, pid, idle = time.time() + timeout, None, 0
        while time.time() < deadline and pid is None:
            new = set(self.server.get_json("/history")) - before
            q = self.server.get_json("/queue")
            if new:
                pid = new.pop()
            elif not q["queue_running"] and not q["queue_pending"]:
                idle += 1
                if idle > 40:  # 10 s with nothing queued: the page's prompt was rejected
                    errs = self.page.evaluate("() => JSON.stringify(window.app.lastNodeErrors ?? null)")
                    raise AssertionError(f"the page queued nothing; node errors {errs}; console {self.errors}")
            time.sleep(0.25)
        assert pid is not None, f"no prompt finished in {timeout}s:\n{self.server.log()[-3000:]}"
        return self.server.wait_history(pid, timeout=max(1.0, deadline - time.time()))


def _is_link(v) -> bool:
    return isinstance(v, list) and len(v) == 2 and isinstance(v[1], int)


def _api_twin(workflow: Path) -> dict:
    return json.loads((workflow.parent / "api" / f"{api_stem(workflow.stem)}_api.json").read_text())


def _prompt_mismatches(page_prompt: dict, api: dict) -> list[str]:
    """Widget values (and node types) where the prompt the page builds differs from the API twin."""
    out = []
    for nid, node in api.items():
        got = page_prompt.get(nid)
        if got is None or got["class_type"] != node["class_type"]:
            out.append(f"node {nid} ({node['class_type']}): page has {got and got['class_type']}")
            continue
        # newer hosts (0.33) nest a dynamic combo's inputs: the page sends format.codec, which SaveVideo reads
        # before its hidden legacy input of the same name (that one keeps its default)
        nested = {k.split(".", 1)[1]: g for k, g in got["inputs"].items()
                  if k.count(".") == 1 and k.split(".", 1)[0] in node.get("inputs", {})}
        for name, v in node.get("inputs", {}).items():
            g = nested.get(name, got["inputs"].get(name))
            if _is_link(v) or g == v or (isinstance(v, float) and isinstance(g, (int, float)) and abs(g - v) < 1e-9):
                continue
            out.append(f"node {nid} ({node['class_type']}).{name}: page {g!r}, API twin {v!r}")
    return out


def _pixels(png: bytes) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def _write_frames(folder: Path, t: int = 3, n: int = 3000) -> None:
    """A coloured ball (red/green halves) around (0, 0, 1) moving along +x over the frames."""
    folder.mkdir(parents=True, exist_ok=True)
    r = np.random.default_rng(0)
    d = r.normal(size=(n, 3)); d /= np.linalg.norm(d, axis=1, keepdims=True)
    for k in range(t):
        v = np.zeros((n, len(PLY_NAMES)), "<f4")
        v[:, 0:3] = 0.3 * d + [0.25 * (k - 1), 0.0, 1.0]
        rgb = np.where(d[:, :1] > 0, [1.0, 0.1, 0.1], [0.1, 0.9, 0.2])
        v[:, 3:6] = (rgb - 0.5) / 0.28209479
        v[:, 6] = 4.0
        v[:, 7:10] = np.log(0.03)
        v[:, 10] = 1.0
        head = f"ply\nformat binary_little_endian 1.0\nelement vertex {n}\n"
        head += "".join(f"property float {k_}\n" for k_ in PLY_NAMES) + "end_header\n"
        (folder / f"frame_{k:03d}.ply").write_bytes(head.encode() + v.tobytes())


@contextlib.contextmanager
def browser_page(server, profile: Path, artifacts: Path, vue_nodes: bool = False,
                 log_file: str = "browser_console.log"):
    """A chromium page on the server's frontend with the node mode set: ``Comfy.VueNodes.Enabled`` (the
    frontend's Vue node rendering, "Nodes 2.0") on or off, written to the server's user settings before the page
    loads. ``artifacts/<log_file>`` starts empty and gets the console errors of the load, then each test's."""
    sync_api = pytest.importorskip("playwright.sync_api")
    server.request("/settings/Comfy.TutorialCompleted", True)  # no first-run templates dialog
    server.request("/settings/Comfy.Workflow.ShowMissingNodesWarning", True)  # the dialog under test
    server.request("/settings/Comfy.Minimap.Visible", False)  # keeps the screenshots' corner clear
    server.request("/settings/LiteGraph.Canvas.MinFontSizeForLOD", 1)  # text in zoomed-out screenshots
    server.request("/settings/Comfy.VueNodes.Enabled", vue_nodes)
    with sync_api.sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, args=ARGS,
                                                    headless=True, viewport=VIEWPORT)
        ctx.add_init_script("localStorage.setItem('vueNodesBannerDismissed', 'true')")  # "Nodes 2.0" banner
        page = ctx.new_page()
        b = Browser(page, server, log_file)
        page.goto(server.url, wait_until="networkidle", timeout=120_000)
        page.wait_for_function("() => window.app && window.app.graph && window.LiteGraph", timeout=120_000)
        page.keyboard.press("Escape")  # first-run templates dialog
        page.wait_for_timeout(300)
        b.close_dialogs()
        (artifacts / log_file).write_text("")
        b.log_errors(artifacts, "page load")
        try:
            yield b
        finally:
            ctx.close()


@pytest.fixture(scope="module")
def shared_browser(comfy_server, tmp_path_factory, artifacts):
    """The classic (LiteGraph canvas) node mode; tests/test_browser_vue.py covers the Vue node mode."""
    with browser_page(comfy_server, tmp_path_factory.mktemp("chromium_profile"), artifacts, vue_nodes=False) as b:
        assert b.page.evaluate("() => window.app.extensionManager?.setting?.get('Comfy.VueNodes.Enabled')") in (
            False, None), "Vue node mode is on in the classic tests"
        yield b


@pytest.fixture
def browser(shared_browser, artifacts, request):
    """The shared page, with the console errors of this test only (all of them appended to its log file)."""
    shared_browser.errors.clear()
    yield shared_browser
    shared_browser.log_errors(artifacts, request.node.name)


# ---------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------


def test_missing_node_is_detected(browser, tmp_path):
    """Control for the checks below: a workflow with an unknown node type does show the dialog."""
    bogus = {"last_node_id": 1, "last_link_id": 0, "nodes": [
        {"id": 1, "type": "NoSuchNodeForBrowserTest", "pos": [0, 0], "size": [200, 60], "flags": {}, "order": 0,
         "mode": 0, "inputs": [], "outputs": [], "properties": {}, "widgets_values": []}],
        "links": [], "groups": [], "config": {}, "extra": {}, "version": 0.4}
    path = tmp_path / "bogus.json"
    path.write_text(json.dumps(bogus))
    try:
        browser.open_workflow(path)
        assert browser.missing_nodes_dialog(), "the frontend showed no missing-nodes dialog for an unknown node"
        assert browser.unregistered_nodes() == ["1:NoSuchNodeForBrowserTest"]
    finally:
        browser.close_dialogs()
    assert not browser.missing_nodes_dialog()


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=WORKFLOW_IDS)
def test_workflow_loads_in_browser(browser, artifacts, workflow):
    browser.open_workflow(workflow)
    missing = browser.missing_nodes_dialog()
    placeholders = browser.unregistered_nodes()
    types = browser.page.evaluate("() => window.app.graph.nodes.map(n => n.type).sort()")
    browser.page.set_viewport_size(SHOT_SIZE)  # the whole graph, readable
    try:
        browser.page.wait_for_timeout(500)  # the canvas follows the window size on the next frame
        browser.fit_view()
        browser.page.screenshot(path=str(artifacts / f"workflow_{api_stem(workflow.stem)}.png"))
    finally:
        browser.page.set_viewport_size(VIEWPORT)
    browser.close_dialogs()
    assert not missing, f"{workflow.name}: missing-nodes dialog shown"
    assert not placeholders, f"{workflow.name}: unregistered nodes {placeholders}"
    assert types == sorted(n["type"] for n in json.loads(workflow.read_text())["nodes"])
    assert not browser.pack_errors(), browser.pack_errors()


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=WORKFLOW_IDS)
def test_workflow_widgets_match_api_twin(browser, workflow):
    """What the page would queue for an opened workflow is its API twin: every widget value of the UI file landed
    on the widget of that name (the frontend assigns widgets_values by position)."""
    browser.open_workflow(workflow)
    browser.close_dialogs()
    bad = _prompt_mismatches(browser.page_prompt(), _api_twin(workflow))
    nodes = json.loads(workflow.read_text())["nodes"]
    detail = [f"node {n['id']} widgets_values {n.get('widgets_values')} -> page {browser.widgets(str(n['id']))}"
              for n in nodes if any(b.startswith(f"node {n['id']} ") for b in bad)]
    assert not bad, f"{workflow.name} in the frontend differs from its API twin:\n" + "\n".join(bad + detail)


def test_demo_workflow_runs_from_page(browser, artifacts):
    """Open the demo, shrink it to a CI size through its widgets, queue it from the page, scrub the preview."""
    workflow = ROOT / "workflows" / f"{ui_stem('demo_synthetic')}.json"
    browser.open_workflow(workflow)
    browser.close_dialogs()
    # The API twin's widget values with the test sizes on top, typed into the widgets by name (this also undoes
    # any widget misalignment in the UI file, which test_workflow_widgets_match_api_twin reports on its own).
    expected = _api_twin(workflow)
    for nid, values in DEMO_TEST_SIZE.items():
        expected[str(nid)]["inputs"].update(values)
    widgets = {nid: {k: v for k, v in node["inputs"].items() if not _is_link(v)} for nid, node in expected.items()}
    unset = browser.set_widgets(widgets)
    assert not unset, f"widgets not found in the page: {unset}"
    browser.set_widgets({"1": {"control_after_generate": "fixed"}})  # the frontend's seed control, if any
    bad = _prompt_mismatches(browser.page_prompt(), expected)
    assert not bad, "the page would queue something else:\n" + "\n".join(bad)
    # the preview node big and in view, as a user would arrange it before running
    browser.page.evaluate("""id => { const app = window.app, n = app.graph.getNodeById(id);
        n.setSize([620, 600]); app.canvas.ds.scale = 1;
        app.canvas.ds.offset = [-n.pos[0] + 380, -n.pos[1] + 80]; app.graph.setDirtyCanvas(true, true); }""",
                          PREVIEW_NODE)

    hist = browser.queue_and_wait()
    status = hist.get("status", {})
    assert status.get("status_str") == "success", json.dumps(status)[:3000]
    ui = hist["outputs"][str(PREVIEW_NODE)]
    assert ui["full4d_preview"][0]["frames"] == DEMO_TEST_SIZE[PREVIEW_NODE]["num_frames"]
    t = DEMO_TEST_SIZE[PREVIEW_NODE]["num_frames"]
    browser.wait_label(f"t 1/{t}")
    browser.page.wait_for_timeout(500)
    browser.close_dialogs()
    browser.page.screenshot(path=str(artifacts / "demo_page.png"))
    a = browser.canvas_png()
    (artifacts / "demo_t0.png").write_bytes(a)
    browser.set_time(t - 1)
    browser.wait_label(f"t {t}/{t}")
    b = browser.canvas_png()
    (artifacts / "demo_tN.png").write_bytes(b)

    pa, pb = _pixels(a), _pixels(b)
    assert pa.std() > 5, "preview canvas is blank"
    changed = (np.abs(pa - pb).max(-1) > 8).sum()
    assert changed > 50, f"moving the time slider changed only {changed} pixels"
    # zoomed far out, the canvas corners show no splat: there the widget draws the scene's own background colour
    # (the fit's, as in its renders and the orbit video), not the widget's dark grey
    background = ui["full4d_preview"][0]["background"]
    browser.page.evaluate(f"""() => {{ const w = {PREVIEW_JS}[0]; w.querySelector('.full4d-label').textContent = '';
        w.querySelector('canvas').dispatchEvent(new WheelEvent('wheel', {{deltaY: 4000, bubbles: true,
                                                                          cancelable: true}})); }}""")
    browser.wait_label(f"t {t}/{t}")
    c = _pixels(browser.canvas_png())
    (artifacts / "demo_zoomed_out.png").write_bytes(browser.canvas_png())
    corners = np.stack([c[2, 2], c[2, -3], c[-3, 2], c[-3, -3]]).astype(float)
    assert np.abs(corners - 255 * np.asarray(background)).max() < 12, (corners, background)
    assert not browser.pack_errors(), browser.pack_errors()


def add_ply_preview_node(browser: "Browser", ply_path: str, size: tuple[int, int] | None = None) -> None:
    """A fresh graph with one ``Full4DSplatPreview`` reading ``ply_path`` (output-relative glob), in view at scale 1."""
    browser.page.evaluate("""([path, size]) => {
        const app = window.app;
        app.graph.clear();
        const node = window.LiteGraph.createNode("Full4DSplatPreview");
        node.pos = [50, 50];
        app.graph.add(node);
        node.widgets.find(w => w.name === "ply_path").value = path;
        if (size) node.setSize(size);
        app.canvas.ds.offset = [20, 60]; app.canvas.ds.scale = 1; app.graph.setDirtyCanvas(true, true);
    }""", [ply_path, list(size) if size else None])


def test_preview_widget_in_browser(browser, comfy_server, artifacts):
    """Three PLY frames of a red/green ball moving along +x, previewed from a node built by hand."""
    _write_frames(comfy_server.output_dir / "browser_preview")
    page = browser.page
    add_ply_preview_node(browser, "browser_preview/frame_*.ply", size=(600, 620))
    hist = browser.queue_and_wait(timeout=120)
    assert hist.get("status", {}).get("status_str") == "success", json.dumps(hist.get("status"))[:3000]
    browser.wait_label("t 1/3")
    page.wait_for_timeout(500)
    browser.close_dialogs()
    page.screenshot(path=str(artifacts / "preview_page.png"))
    a = browser.canvas_png()
    (artifacts / "preview_t0.png").write_bytes(a)
    browser.set_time(2)
    browser.wait_label("t 3/3")
    b = browser.canvas_png()
    (artifacts / "preview_t2.png").write_bytes(b)
    pa, pb = _pixels(a), _pixels(b)
    assert pa.std() > 5, "canvas is blank"
    assert (pa[..., 0] > pa[..., 1] + 60).sum() > 100, "red half of the ball not drawn"
    assert np.abs(pa - pb).mean() > 1.0, "moving the time slider did not change the picture"
    check_wheel_zoom(browser, pb)
    assert not browser.pack_errors(), browser.pack_errors()


def preview_view(browser: Browser) -> dict:
    """The on-screen preview widget's view (camera distance ``dist``, azimuth ``az``, ...) and the graph's
    scale and offset (``graph_scale``, ``graph_offset``)."""
    return browser.page.evaluate(f"""() => {{ const w = {PREVIEW_JS}[0], app = window.app;
        const n = app.graph.nodes.find(n => n.full4d?.root === w);
        return {{ ...n.full4d.state.view, graph_scale: app.canvas.ds.scale, graph_offset: [...app.canvas.ds.offset] }};
    }}""")


def preview_canvas_centre(browser: Browser) -> list[float]:
    """Page coordinates of the middle of the on-screen preview canvas."""
    return browser.page.evaluate(f"""() => {{ const r = {PREVIEW_JS}[0].querySelector('canvas').getBoundingClientRect();
                                              return [r.x + r.width / 2, r.y + r.height / 2]; }}""")


def check_wheel_zoom(browser: Browser, before: np.ndarray) -> None:
    """Real mouse-wheel input over the preview canvas (``before``: its pixels now) zooms the splat view (its
    camera distance shrinks, the pixels change) and leaves the graph's scale alone; the same wheel over empty
    graph to the right of the widget still zooms the graph (issue 23: the Vue node layer sent it to the graph)."""
    page = browser.page
    v0 = preview_view(browser)
    page.evaluate(f"() => {{ {PREVIEW_JS}[0].querySelector('.full4d-label').textContent = ''; }}")  # set on redraw
    page.mouse.move(*preview_canvas_centre(browser))
    page.mouse.wheel(0, -600)
    page.wait_for_timeout(500)
    v1 = preview_view(browser)
    assert v1["graph_scale"] == v0["graph_scale"], f"the wheel over the splat view zoomed the graph: {v0} -> {v1}"
    assert v1["dist"] < 0.7 * v0["dist"], f"the wheel over the splat view did not zoom it: {v0} -> {v1}"
    browser.wait_label("t ")
    zoomed = _pixels(browser.canvas_png())
    assert np.abs(zoomed - before).mean() > 1.0, "the splat view's pixels did not change with the zoom"
    right = page.evaluate(f"() => {PREVIEW_JS}[0].getBoundingClientRect().right")
    width = page.viewport_size["width"]
    assert right + 100 < width, "no empty graph right of the preview widget to wheel over"
    page.mouse.move(min(width - 60, right + 150), page.viewport_size["height"] / 2)
    page.mouse.wheel(0, -600)
    page.wait_for_timeout(500)
    v2 = preview_view(browser)
    assert v2["graph_scale"] != v1["graph_scale"], "the wheel over empty graph no longer zooms the graph"
    assert v2["dist"] == v1["dist"], "the wheel over the graph zoomed the splat view"
