"""Template-browser thumbnails (issue 23): the host serves ``workflows/<name>.jpg`` beside each workflow's JSON at
``/api/workflow_templates/comfyui-full4d/<name>.jpg``, and the frontend shows it on the template's card (without
one: a blank gradient). scripts/make_thumbnails.py renders them; here every shipped workflow's is served as a real
JPEG with picture content, not a flat or gradient image."""

from __future__ import annotations

import io
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest

from comfyui_full4d.client.workflow import api_stem
from host import PACK_NAME, ROOT

WORKFLOWS = sorted(p.stem for p in (ROOT / "workflows").glob("*.json"))  # the template titles
MAX_BYTES = 100_000
MIN_SIDE = 256
# share of edge pixels a picture must reach (see ``detail``): the shipped renders measure 0.06 (the soft 4DGS fits)
# to 0.21; linear, radial and bilinear gradients after JPEG at quality 50-95 at most 0.0002
MIN_DETAIL = 0.02
EDGE = 6.0  # |Laplacian| of the luma (0-255) that counts as an edge: above JPEG's noise on smooth areas


def detail(rgb: np.ndarray) -> float:
    """Share of the interior pixels of an (H, W, 3) 0-255 image whose luma's 4-neighbour Laplacian exceeds EDGE:
    0 for a flat or linear-gradient image (whose Laplacian is 0 up to rounding and JPEG noise), and a smooth
    radial gradient stays near 0; a picture's edges and texture lift it."""
    y = rgb[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    lap = 4 * y[1:-1, 1:-1] - y[:-2, 1:-1] - y[2:, 1:-1] - y[1:-1, :-2] - y[1:-1, 2:]
    return float((np.abs(lap) > EDGE).mean())


def _jpeg_roundtrip(rgb: np.ndarray) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8)).save(buf, "JPEG", quality=88)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def test_detail_rejects_flat_and_gradient_images_and_accepts_texture():
    h = w = 384
    yy, xx = np.mgrid[0:h, 0:w] / (h - 1)
    linear = np.stack([255 * xx, 255 * yy, 128 + 0 * xx], -1)
    radial = np.stack([255 * np.hypot(xx - 0.5, yy - 0.5)] * 3, -1)
    flat = np.full((h, w, 3), 90.0)
    for name, img in (("linear", linear), ("radial", radial), ("flat", flat)):
        assert detail(_jpeg_roundtrip(img)) < MIN_DETAIL / 4, name
    # a few discs on a gradient: the kind of picture a thumbnail is
    disc = ((xx - 0.3) ** 2 + (yy - 0.4) ** 2 < 0.02) | ((xx - 0.7) ** 2 + (yy - 0.6) ** 2 < 0.03)
    checker = ((xx * 12).astype(int) + (yy * 12).astype(int)) % 2
    picture = linear * 0.5 + 100 * disc[..., None] + 30 * checker[..., None]
    assert detail(_jpeg_roundtrip(picture)) > MIN_DETAIL


@pytest.mark.server
@pytest.mark.parametrize("name", WORKFLOWS, ids=[api_stem(n) for n in WORKFLOWS])
def test_thumbnail_is_served_as_a_real_image(comfy_server, name):
    from PIL import Image

    url = f"{comfy_server.url}/api/workflow_templates/{PACK_NAME}/{urllib.parse.quote(name)}.jpg"
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            status, ctype, data = r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        pytest.fail(f"GET {url}: {e.code}; run .venv/bin/python scripts/make_thumbnails.py {api_stem(name)}")
    assert status == 200 and ctype.startswith("image/jpeg"), (status, ctype)
    assert len(data) < MAX_BYTES, f"{name}.jpg is {len(data)} bytes (keep thumbnails under {MAX_BYTES})"
    img = Image.open(io.BytesIO(data))
    assert img.format == "JPEG" and min(img.size) >= MIN_SIDE, (img.format, img.size)
    d = detail(np.asarray(img.convert("RGB")))
    assert d > MIN_DETAIL, f"{name}.jpg looks blank or like a gradient (detail {d:.2f} <= {MIN_DETAIL})"
