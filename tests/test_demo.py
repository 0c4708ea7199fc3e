"""The demo graphs (workflows/api/demo_synthetic_api.json, demo_training_free_api.json) through the real server,
as ``make demo`` queues them, at the nano model's own size with fewer sampling steps and fit iterations (CI time).
Judged by the graphs' own Full4DEvaluate nodes against the ray-cast truth of the held-out demo scene:

* the generated target views beat the projection they were given, on all target pixels and on the pixels the
  projection did not cover (the demo prints +11.3 dB on all pixels at 30 steps; floor 6 dB);
* the 4D fit of the generated views, rendered along the App. B orbit, and the reference fit (the same fit of the
  true views) beat a flat image of the true orbit's mean colour by 1 dB (the demo: 17.6 and 18.4 dB against
  15.3; both fits start from the source's depth alone, so most of the ring is built by densification).

The training-free twin must beat its projection too (its fits run 10 iterations and are not judged). Nothing downstream of the source reads the truth: the graph's
projection, sampler and fits take the scene's source, source_geometry and rig only (checked on the prompt).
"""

from __future__ import annotations

import json

import pytest

from fixtures.demo import DEMO, DEMO_TF, fits, of_class, scene, score, small_demo

pytestmark = [pytest.mark.server, pytest.mark.slow]

SIZE = dict(views=6, frames=9, width=160, height=96, steps=12, iterations=400, orbit=8)
GENERATED_OVER_PROJECTION_DB = 6.0
ORBIT_OVER_FLAT_DB = 1.0
TRUTH_OUTPUTS = (1, 3, 6)  # Full4DSyntheticScene's views, geometry (with every view's depth) and truth
ROWS = {"projection": "projection only", "generated": "generated views", "orbit": "orbit: fit on generated",
        "reference orbit": "orbit: fit on true"}


def _scores(comfy_server, prompt: dict) -> dict[str, dict]:
    """The graph's Full4DEvaluate rows (the JSON each shows), by ``ROWS`` key."""
    ans = comfy_server.post_prompt(prompt)
    assert "prompt_id" in ans, ans
    hist = comfy_server.wait_history(ans["prompt_id"], timeout=1500)
    assert hist["status"]["status_str"] == "success", json.dumps(hist["status"])[:3000]
    return {key: json.loads(hist["outputs"][score(prompt, label)]["text"][0]) for key, label in ROWS.items()}


def _readers_of_truth(prompt: dict) -> list[str]:
    """Nodes that take the scene's true views, full geometry or truth, other than the scoring ones and the
    reference fit."""
    scoring = {"Full4DEvaluate", "Full4DRenderTruth", "Full4DViewGrid", "Full4DStackVideos"}
    src, ref = scene(prompt), fits(prompt)[1]
    return [nid for nid, node in prompt.items() if node["class_type"] not in scoring and nid != ref
            for v in node["inputs"].values() if isinstance(v, list) and v[0] == src and v[1] in TRUTH_OUTPUTS]


def _flat_orbit_psnr(prompt: dict) -> float:
    """PSNR of a flat image of the true orbit's mean colour against that orbit (same cameras and times as the
    graph's Full4DRenderTruth)."""
    from comfyui_full4d.media.metrics import psnr
    from comfyui_full4d.media.synthetic import make_capture, render_truth

    (truth_orbit,) = of_class(prompt, "Full4DRenderTruth")
    s, o = prompt[scene(prompt)]["inputs"], prompt[truth_orbit]["inputs"]
    cap = make_capture(s["num_views"], s["num_frames"], s["height"], s["width"], seed=s["seed"], fov_y_deg=s["fov"],
                       radius=s["radius"], elevation_deg=s["elevation"])
    truth = render_truth(cap.truth, cap.rig, True, o["num_frames"], o["time_start"], o["time_end"])
    return psnr(truth.mean(dim=(0, 1, 2), keepdim=True).expand_as(truth), truth)


@pytest.mark.timeout(2400)
def test_the_demo_generates_views_better_than_the_projection_and_fits_them(comfy_server):
    prompt = small_demo(DEMO, **SIZE)
    assert _readers_of_truth(prompt) == []
    assert prompt[fits(prompt)[0]]["inputs"]["images"][0] != scene(prompt)  # the scored fit fits generated views
    s = _scores(comfy_server, prompt)
    flat = _flat_orbit_psnr(prompt)
    print("demo at test size:", {k: {c: round(v[c], 2) for c in ("psnr", "psnr_uncovered") if c in v}
                                 for k, v in s.items()}, "flat orbit", round(flat, 2))
    for c in ("psnr", "psnr_uncovered"):
        assert s["generated"][c] >= s["projection"][c] + GENERATED_OVER_PROJECTION_DB, (c, s)
    assert s["orbit"]["psnr"] >= flat + ORBIT_OVER_FLAT_DB, (s, flat)
    assert s["reference orbit"]["psnr"] >= flat + ORBIT_OVER_FLAT_DB, (s, flat)


@pytest.mark.timeout(2400)
def test_the_training_free_demo_beats_its_projection(comfy_server):
    prompt = small_demo(DEMO_TF, **{**SIZE, "iterations": 10})
    assert _readers_of_truth(prompt) == []
    s = _scores(comfy_server, prompt)
    print("training-free demo at test size:", {k: round(v["psnr"], 2) for k, v in s.items()})
    for c in ("psnr", "psnr_uncovered"):
        assert s["generated"][c] >= s["projection"][c] + GENERATED_OVER_PROJECTION_DB, (c, s)
