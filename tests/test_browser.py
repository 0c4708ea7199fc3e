"""Real-browser test of the Full4DSplatPreview widget: Debian chromium driven by Playwright against the real
ComfyUI server. Screenshots in tests/artifacts/preview_*.png."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.server]

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
NAMES = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
         "rot_0", "rot_1", "rot_2", "rot_3"]


def _write_frames(folder: Path, t: int = 3, n: int = 3000) -> None:
    """A coloured ball (red/green halves) around (0, 0, 1) moving along +x over the frames."""
    folder.mkdir(parents=True, exist_ok=True)
    r = np.random.default_rng(0)
    d = r.normal(size=(n, 3)); d /= np.linalg.norm(d, axis=1, keepdims=True)
    for k in range(t):
        v = np.zeros((n, len(NAMES)), "<f4")
        v[:, 0:3] = 0.3 * d + [0.25 * (k - 1), 0.0, 1.0]
        rgb = np.where(d[:, :1] > 0, [1.0, 0.1, 0.1], [0.1, 0.9, 0.2])
        v[:, 3:6] = (rgb - 0.5) / 0.28209479
        v[:, 6] = 4.0
        v[:, 7:10] = np.log(0.03)
        v[:, 10] = 1.0
        head = f"ply\nformat binary_little_endian 1.0\nelement vertex {n}\n"
        head += "".join(f"property float {k_}\n" for k_ in NAMES) + "end_header\n"
        (folder / f"frame_{k:03d}.ply").write_bytes(head.encode() + v.tobytes())


def _canvas_png(page) -> bytes:
    """The WebGL canvas's own pixels (preserveDrawingBuffer), independent of anything drawn over it."""
    import base64
    url = page.evaluate("() => document.querySelector('.full4d-preview canvas').toDataURL('image/png')")
    return base64.b64decode(url.split(",", 1)[1])


def _pixels(png: bytes) -> np.ndarray:
    import io

    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="apt-get install chromium")
def test_preview_widget_in_browser(comfy_server, artifacts, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    _write_frames(comfy_server.output_dir / "browser_preview")
    errors: list[str] = []
    comfy_server.request("/settings/Comfy.TutorialCompleted", True)  # no first-run templates dialog
    with sync_api.sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                    args=ARGS, headless=True, viewport={"width": 1400, "height": 1000})
        page = ctx.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(comfy_server.url, wait_until="networkidle", timeout=120_000)
        page.wait_for_function("() => window.app && window.app.graph", timeout=120_000)
        page.keyboard.press("Escape")  # first-run templates dialog
        page.wait_for_timeout(300)
        page.evaluate("""async () => {
            const app = window.app;
            app.graph.clear();
            const LG = window.LiteGraph;
            const node = LG.createNode("Full4DSplatPreview");
            node.pos = [50, 50];
            app.graph.add(node);
            node.widgets.find(w => w.name === "ply_path").value = "browser_preview/frame_*.ply";
            node.setSize([600, 620]);
            app.canvas.ds.offset = [0, 0]; app.canvas.ds.scale = 1; app.graph.setDirtyCanvas(true, true);
            await app.queuePrompt(0, 1);
        }""")
        page.wait_for_function("() => (document.querySelector('.full4d-label')?.textContent || '').startsWith('t 1/3')",
                               timeout=120_000)
        page.wait_for_timeout(500)
        for sel in (".p-dialog-close-button", "button[aria-label='Close']"):  # first-run dialogs over the canvas
            for b in page.locator(sel).all():
                if b.is_visible():
                    b.click()
        page.wait_for_timeout(300)
        page.screenshot(path=str(artifacts / "preview_page.png"))
        a = _canvas_png(page)
        (artifacts / "preview_t0.png").write_bytes(a)
        page.evaluate("""() => { const s = document.querySelector('.full4d-time'); s.value = '2';
                                  s.dispatchEvent(new Event('input')); }""")
        page.wait_for_function("() => document.querySelector('.full4d-label').textContent.startsWith('t 3/3')")
        b = _canvas_png(page)
        (artifacts / "preview_t2.png").write_bytes(b)
        ctx.close()
    pa, pb = _pixels(a), _pixels(b)
    assert pa.std() > 5, "canvas is blank"
    assert (pa[..., 0] > pa[..., 1] + 60).sum() > 100, "red half of the ball not drawn"
    assert np.abs(pa - pb).mean() > 1.0, "moving the time slider did not change the picture"
    ours = [e for e in errors if "full4d" in e.lower()]
    assert not ours, ours
