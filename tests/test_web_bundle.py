"""The preview's bundled renderer (issue 7): web-src/ pins Spark + three.js, scripts/build_web.sh bundles them into
web/lib/spark_bundle.mjs. Checks the pinning, that web/lib holds only lazily loaded .mjs modules all reachable from
splat_renderer.mjs, the licence notice, what Spark is given per splat (read back with Spark's own unpackSplat), the
OpenCV -> three.js camera, and (slow) that the committed bundle is what the build script produces."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from comfyui_full4d.gaussians.preview import decode_frames, encode_frames

ROOT = Path(__file__).resolve().parents[1]
WEB, LIB, SRC = ROOT / "web", ROOT / "web" / "lib", ROOT / "web-src"
BUNDLE = LIB / "spark_bundle.mjs"
BUNDLED = ("@sparkjsdev/spark", "three")  # what package.json asks for; fflate comes inside Spark's dist
needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")


def _node(script: str) -> dict:
    out = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_lock_pins_package_json_versions():
    pkg = json.loads((SRC / "package.json").read_text())
    lock = json.loads((SRC / "package-lock.json").read_text())
    wanted = {**pkg["dependencies"], **pkg["devDependencies"]}
    assert set(BUNDLED) <= set(pkg["dependencies"]) and "esbuild" in pkg["devDependencies"]
    for name, version in wanted.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name}: {version!r} is not an exact version"
        assert lock["packages"][f"node_modules/{name}"]["version"] == version, name
    root = lock["packages"][""]
    assert {**root.get("dependencies", {}), **root.get("devDependencies", {})} == wanted


def test_web_lib_is_only_lazy_mjs():
    """The host's /extensions imports every *.js under web/ on every page: the bundle must not be one."""
    assert BUNDLE.is_file() and 1_000_000 < BUNDLE.stat().st_size < 4_000_000, BUNDLE.stat().st_size
    assert not list(LIB.rglob("*.js")), "web/lib must hold .mjs modules only"
    # the preview widget and the small opener of graphs saved with the Fit node's old inputs (issue 32)
    assert sorted(p.name for p in WEB.rglob("*.js")) == ["full4d_fit_upgrade.js", "full4d_preview.js"]
    assert (WEB / "full4d_fit_upgrade.js").stat().st_size < 20_000
    for name in ("full4d_preview.js", "full4d_fit_upgrade.js"):
        src = (WEB / name).read_text()
        assert not re.search(r"^\s*import .*lib/", src, re.M), f"{name}: the renderer must be imported lazily"


def _module_refs(src: str) -> set[str]:
    pats = (r"""\bfrom\s*["'](\.{1,2}/[^"']+)["']""", r"""\bimport\s*\(\s*["'](\.{1,2}/[^"']+)["']""",
            r"""new URL\(\s*["'](\.{1,2}/[^"']+\.mjs)["']""")
    return {m for p in pats for m in re.findall(p, src)}


def test_every_lib_module_is_reachable_from_the_widget():
    seen, todo = set(), [WEB / "full4d_preview.js"]
    while todo:
        p = todo.pop()
        text = p.read_text(errors="ignore") if p.stat().st_size < 200_000 else ""  # the minified bundle: a leaf
        for ref in _module_refs(text):
            q = (p.parent / ref).resolve()
            if not q.is_relative_to(WEB):  # the host's own modules (../../scripts/app.js)
                continue
            assert q.is_file(), f"{p.name} refers to missing {ref}"
            if q not in seen:
                seen.add(q)
                todo.append(q)
    assert seen == {p.resolve() for p in LIB.rglob("*.mjs")}


def test_licence_notice_names_every_bundled_package():
    notice = (LIB / "THIRD_PARTY_LICENSES.txt").read_text()
    lock = json.loads((SRC / "package-lock.json").read_text())["packages"]
    for name in (*BUNDLED, "fflate"):
        assert f"{name} {lock[f'node_modules/{name}']['version']} (MIT)" in notice, name
    assert notice.count("Permission is hereby granted") == 3
    assert "THIRD_PARTY_LICENSES.txt" in BUNDLE.read_text()[:300]


def _f4dp(tmp_path: Path, n: int = 400, t: int = 2) -> tuple[Path, list[dict]]:
    r = np.random.default_rng(1)
    base = r.normal(size=(n, 3)) * [2.0, 1.0, 3.0] + [0.5, -0.2, 4.0]
    frames = [dict(means=torch.tensor(base + 0.1 * k), quats=torch.tensor(r.normal(size=(n, 4))),
                   scales=torch.tensor(np.exp(r.uniform(-6, -1, size=(n, 3)))), opacities=torch.tensor(r.random(n)),
                   colors=torch.tensor(r.random((n, 3)))) for k in range(t)]
    path = tmp_path / "a.f4dp"
    path.write_bytes(encode_frames(frames))
    return path, decode_frames(path.read_bytes())[1]


@needs_node
def test_spark_gets_the_decoded_frame(tmp_path):
    """packFrame's 16-byte Spark splats, unpacked by Spark itself, match the Python decoder within Spark's packing
    precision: float16 centres around the AABB centre, 8-bit log-scales over [-12, 9], 24-bit quaternions."""
    path, ref = _f4dp(tmp_path)
    res = _node(f"""
        import {{ readFileSync }} from "node:fs";
        const B = await import("{BUNDLE.as_uri()}");
        const m = await import("{(LIB / 'splat_renderer.mjs').as_uri()}");
        const b = readFileSync("{path}");
        const f = m.decodeF4DP(b.buffer.slice(b.byteOffset, b.byteOffset + b.length)).frames[1];
        const packed = m.packFrame(B, f), out = {{ c: [], s: [], q: [], rgba: [] }};
        for (let i = 0; i < packed.length / 4; i++) {{
          const u = B.unpackSplat(packed, i);
          out.c.push(...u.center.toArray().map((v, k) => v + f.center[k])); out.s.push(...u.scales.toArray());
          out.q.push(u.quaternion.w, u.quaternion.x, u.quaternion.y, u.quaternion.z);
          out.rgba.push(u.color.r, u.color.g, u.color.b, u.opacity);
        }}
        console.log(JSON.stringify(out));""")
    fr = ref[1]
    half_extent = np.abs(fr["means"] - fr["means"].mean(0)).max() * 1.1
    np.testing.assert_allclose(np.reshape(res["c"], (-1, 3)), fr["means"], atol=half_extent / 1024)
    np.testing.assert_allclose(np.reshape(res["rgba"], (-1, 4)),
                               np.c_[fr["colors"], fr["opacities"]], atol=0.5 / 255 + 1e-6)
    np.testing.assert_allclose(np.log(np.reshape(res["s"], (-1, 3))), np.log(fr["scales"]), atol=21 / 254 / 2 + 1e-3)
    q = np.reshape(res["q"], (-1, 4))
    qr = fr["quats"] / np.linalg.norm(fr["quats"], axis=1, keepdims=True)
    assert np.abs((q * qr).sum(1)).min() > 0.995  # same rotation up to sign, within ~6 degrees


@needs_node
def test_camera_matches_the_opencv_pinhole():
    """A world point seen through three.js's camera from threeCameraToWorld(lookAt(...)) lands on the pixel that
    the OpenCV pinhole K [R | T] gives (world up = -y, image y down)."""
    res = _node(f"""
        const B = await import("{BUNDLE.as_uri()}");
        const m = await import("{(LIB / 'splat_renderer.mjs').as_uri()}");
        const W = 640, H = 400, fov = 50, eye = [1.5, -0.7, -2.0], target = [0.1, 0.2, 1.0];
        const {{ R, T }} = m.lookAt(eye, target);
        const cam = new B.PerspectiveCamera(fov, W / H, 0.01, 100);
        new B.Matrix4().set(...m.threeCameraToWorld(R, T)).decompose(cam.position, cam.quaternion, cam.scale);
        cam.updateMatrixWorld(); cam.updateProjectionMatrix();
        const pts = [[0.1, 0.2, 1.0], [0.5, -0.3, 1.4], [-0.4, 0.6, 0.2]];
        const px = pts.map((p) => {{ const v = new cam.position.constructor(...p).project(cam);
                                     return [(v.x + 1) * W / 2, (1 - v.y) * H / 2]; }});
        console.log(JSON.stringify({{ R, T, px, W, H, fov, pts }}));""")
    R, T = np.reshape(res["R"], (3, 3)), np.array(res["T"])
    f = 0.5 * res["H"] / np.tan(np.radians(res["fov"]) / 2)
    pc = np.array(res["pts"]) @ R.T + T
    assert (pc[:, 2] > 0).all()
    uv = f * pc[:, :2] / pc[:, 2:] + [res["W"] / 2, res["H"] / 2]
    np.testing.assert_allclose(res["px"], uv, atol=1e-3)
    np.testing.assert_allclose(res["px"][0], [res["W"] / 2, res["H"] / 2], atol=1e-3)  # the target is centred


@needs_node
@pytest.mark.parametrize("canvas", [(640, 300), (300, 640), (320, 192)], ids=["wider", "narrower", "same"])
def test_rig_camera_image_fits_the_canvas(canvas):
    """A rig camera's pinhole (fx != fy, principal point off centre) drawn in a canvas of another aspect: a world
    point lands where the OpenCV pinhole puts it in the camera's own 160 x 96 image, that image scaled by
    min(W / 160, H / 96) and centred in the canvas (numpy reference). So a wider canvas keeps the vertical fov,
    a narrower one shows the whole horizontal fov."""
    Wc, Hc = canvas
    res = _node(f"""
        const B = await import("{BUNDLE.as_uri()}");
        const m = await import("{(LIB / 'splat_renderer.mjs').as_uri()}");
        const W = {Wc}, H = {Hc}, rig = {{ K: [150, 148, 83, 45], width: 160, height: 96 }};
        const {{ R, T }} = m.lookAt([1.5, -0.7, -2.0], [0.1, 0.2, 1.0]);
        const cam = new B.PerspectiveCamera(50, W / H, 0.01, 100);
        new B.Matrix4().set(...m.threeCameraToWorld(R, T)).decompose(cam.position, cam.quaternion, cam.scale);
        cam.updateMatrixWorld();
        cam.projectionMatrix.set(...m.projectionFromK(m.canvasIntrinsics(rig, W, H), W, H, cam.near, cam.far));
        cam.projectionMatrixInverse.copy(cam.projectionMatrix).invert();
        const pts = [[0.1, 0.2, 1.0], [0.5, -0.3, 1.4], [-0.4, 0.6, 0.2], [0.9, 0.4, 0.8]];
        const px = pts.map((p) => {{ const v = new cam.position.constructor(...p).project(cam);
                                     return [(v.x + 1) * W / 2, (1 - v.y) * H / 2]; }});
        console.log(JSON.stringify({{ R, T, px, pts, K: rig.K }}));""")
    R, T = np.reshape(res["R"], (3, 3)), np.array(res["T"])
    fx, fy, cx, cy = res["K"]
    pc = np.array(res["pts"]) @ R.T + T
    uv = np.stack([fx * pc[:, 0] / pc[:, 2] + cx, fy * pc[:, 1] / pc[:, 2] + cy], 1)  # in the 160 x 96 image
    s = min(Wc / 160, Hc / 96)
    want = s * uv + [(Wc - s * 160) / 2, (Hc - s * 96) / 2]
    np.testing.assert_allclose(res["px"], want, atol=1e-3)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("npm") is None, reason="npm not installed")
def test_rebuild_gives_the_committed_bundle(tmp_path):
    out = subprocess.run(["bash", str(ROOT / "scripts" / "build_web.sh"), str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    if out.returncode and re.search(r"ENOTFOUND|EAI_AGAIN|ETIMEDOUT|ECONNREFUSED|ENETUNREACH", out.stderr):
        pytest.skip("npm registry unreachable")
    assert out.returncode == 0, out.stderr[-3000:]
    for name in ("spark_bundle.mjs", "THIRD_PARTY_LICENSES.txt"):
        assert (tmp_path / name).read_bytes() == (LIB / name).read_bytes(), f"{name}: rerun scripts/build_web.sh"
