"""Workflow JSON: validate API-format prompts against ``/object_info`` and derive UI graphs.

Every example in ``workflows/`` exists twice: the UI graph (``workflows/<name>.json``, what the
template browser and drag-and-drop load) and its API twin (``workflows/api/<name>_api.json``,
what headless runs POST). The UI graph is generated from the API twin by ``api_to_ui`` so the
two can never drift; ``validate_api`` checks a prompt against the node definitions a server
reports, so a renamed input breaks a test instead of a shared workflow.
"""

from __future__ import annotations

from typing import Any

from .layout import Box, arrange, model_note, node_box

__all__ = ["WIDGET_TYPES", "FILE_INPUTS", "TEMPLATES", "ui_stem", "api_stem", "validate_api", "ui_ids", "api_to_ui"]

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
# newer hosts (0.33) declare some combos as dynamic: each option key brings its own nested inputs,
# which a prompt names ``<input>.<nested>``; 0.3.75 has none
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
# Node widths (issue 23). The frontend grows a loaded node to its ``computeSize()``: at least 40 px + its title's
# text width (measured 6.1-6.9 px a character, 14 px font, frontends 1.32.9 / 1.58.1), its slot and widget labels.
# Widths are estimated above that; heights and positions: ``layout``.
CHAR_PX = 7.5
NODE_WIDTH = 340
# nodes whose DOM widget needs more room than their inputs suggest: the preview canvas + its controls; the
# loader's video preview (a 16:9 clip at this width: 425 px drawn on 1.32.9 / 1.58.1, 506 px as a Vue node)
UI_MIN_SIZE = {"Full4DSplatPreview": (440, 560), "Full4DLoadVideo": (NODE_WIDTH, 540)}
# the Note (core "Note": a frontend-only node with one text box) that lists the model files
NOTE_WIDTH, NOTE_LINE, NOTE_PAD, NOTE_ROOM = 560, 20, 40, 60
# The template browser (ComfyUI's frontend 1.32.9, and 1.49.6 alike) knows a pack's workflow only by its file name:
# it is the card's title (one line) and, with "-" and "_" shown as spaces, its description (two lines); the cards come
# in the order the server happens to list the folder, or sorted by that title ("A-Z"). So each UI graph's file is
# named for what it does and the model files it needs, numbered in the order to try them. Its API twin keeps the
# short name: workflows/api/<short>_api.json.
TEMPLATES = {
    "demo_synthetic": "1 Demo - synthetic scene to 4D, no model files needed",
    "demo_training_free": "2 Demo, training-free - the same scene with the nano base alone, no model files needed",
    "rig_iteration": "3 Rig check - video, depth and camera previews, needs Depth Anything 3",
    "full4d_sampler": "4 Multi-view video - needs Wan2.2 TI2V 5B, Wan2.2 VAE, umT5, Depth Anything 3",
    "full_pipeline": "5 Video to 4D - full pipeline, needs Wan2.2 TI2V 5B, Wan2.2 VAE, umT5, Depth Anything 3",
    "training_free_pipeline": "6 Video to 4D, training-free - needs only the public Wan2.2 TI2V 5B, VAE, umT5 "
                              "and Depth Anything 3",
    "fit_multiview": "7 Capture to 4D - a synchronized multi-view capture folder, needs Depth Anything 3",
}


def ui_stem(short: str) -> str:
    """The UI graph's file name (without .json) of the API twin ``workflows/api/<short>_api.json``."""
    if short not in TEMPLATES:
        raise KeyError(f"workflows/api/{short}_api.json has no template title: add one to TEMPLATES in "
                       "comfyui_full4d/client/workflow.py")
    return TEMPLATES[short]


def api_stem(ui: str) -> str:
    """The short name of the API twin of the UI graph ``workflows/<ui>.json``."""
    short = {v: k for k, v in TEMPLATES.items()}.get(ui)
    if short is None:
        raise KeyError(f"workflows/{ui}.json is not a title in TEMPLATES (comfyui_full4d/client/workflow.py)")
    return short


# Combos that name a user's file (weights, videos): a shared workflow may name files the
# validating server does not have.
FILE_INPUTS = {("UNETLoader", "unet_name"), ("VAELoader", "vae_name"), ("CLIPLoader", "clip_name"),
               ("Full4DDA3Loader", "model"), ("Full4DLoadVideo", "file"), ("LoadVideo", "file"),
               ("Full4DAdapterLoader", "adapter")}


def _inputs(info: dict) -> list[tuple[str, str, dict]]:
    """(name, type, options) of a node's required then optional inputs, in the server's order.

    A dynamic combo reads as a COMBO of its option keys; its options stay under ``"dynamic"``."""
    spec = info["input"]
    order = info.get("input_order") or {g: list(spec.get(g, {})) for g in ("required", "optional")}
    out = []
    for group in ("required", "optional"):
        for name in order.get(group, []):
            s = spec[group][name]
            typ, opts = s[0], (s[1] if len(s) > 1 and isinstance(s[1], dict) else {})
            if isinstance(typ, list):  # V1 combo: the options list is the type
                typ, opts = "COMBO", {**opts, "options": typ}
            elif typ == DYNAMIC_COMBO:
                dyn = opts.get("options") or []
                typ, opts = "COMBO", {**opts, "options": [o["key"] for o in dyn], "dynamic": dyn}
            out.append((name, typ, opts))
    return out


def _known_inputs(info: dict, given: dict) -> dict[str, tuple[str, dict]]:
    """Every input name a prompt may give the node: its own, plus ``<combo>.<nested>`` for the
    nested inputs of the option each given dynamic combo selects (recursively)."""
    known: dict[str, tuple[str, dict]] = {}

    def add(prefix: str, entries: list[tuple[str, str, dict]]) -> None:
        for name, typ, opts in entries:
            full = prefix + name
            known[full] = (typ, opts)
            chosen = next((o for o in opts.get("dynamic", []) if o["key"] == given.get(full)), None)
            if chosen is not None:
                add(full + ".", _inputs({"input": chosen.get("inputs") or {}}))

    add("", _inputs(info))
    return known


def _types_match(out_type: str, in_type: str) -> bool:
    if "*" in (out_type, in_type):
        return True
    return bool(set(out_type.split(",")) & set(in_type.split(",")))


def validate_api(prompt: dict, object_info: dict, files_may_be_missing: bool = False) -> list[str]:
    """Problems of an API-format prompt against ``object_info`` (empty list: valid).

    Checks node types exist, inputs exist, required inputs are present, links point at an
    existing node output of a matching type, combo values are among the options and numbers
    lie within min/max. With ``files_may_be_missing`` the file combos of FILE_INPUTS may name
    files the server does not list.
    """
    errors = []
    for nid, node in prompt.items():
        ct = node.get("class_type")
        if ct not in object_info:
            errors.append(f"node {nid}: unknown class_type {ct!r}")
            continue
        info = object_info[ct]
        given = node.get("inputs", {})
        known = _known_inputs(info, given)
        required = set(info["input"].get("required", {}))
        for name in required - set(given):
            errors.append(f"node {nid} ({ct}): required input {name!r} missing")
        for name, value in given.items():
            if name not in known:
                errors.append(f"node {nid} ({ct}): no input named {name!r} (has {sorted(known)})")
                continue
            typ, opts = known[name]
            if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
                src = prompt.get(str(value[0]))
                if src is None or src.get("class_type") not in object_info:
                    errors.append(f"node {nid} ({ct}).{name}: links to missing node {value[0]}")
                    continue
                outs = object_info[src["class_type"]]["output"]
                if value[1] >= len(outs):
                    errors.append(f"node {nid} ({ct}).{name}: node {value[0]} has no output {value[1]}")
                elif not _types_match(outs[value[1]], typ):
                    errors.append(f"node {nid} ({ct}).{name}: expects {typ}, linked to {outs[value[1]]}")
                continue
            if typ not in WIDGET_TYPES:
                errors.append(f"node {nid} ({ct}).{name}: socket of type {typ} given a literal {value!r}")
            elif typ == "COMBO" and value not in (opts.get("options") or []) \
                    and not (files_may_be_missing and (ct, name) in FILE_INPUTS):
                errors.append(f"node {nid} ({ct}).{name}: {value!r} not in {opts['options'][:10]}")
            elif typ in ("INT", "FLOAT"):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or (typ == "INT" and not isinstance(value, int)):
                    errors.append(f"node {nid} ({ct}).{name}: expects {typ}, got {value!r}")
                elif ("min" in opts and value < opts["min"]) or ("max" in opts and value > opts["max"]):
                    errors.append(f"node {nid} ({ct}).{name}: {value} outside [{opts.get('min')}, {opts.get('max')}]")
            elif typ == "BOOLEAN" and not isinstance(value, bool):
                errors.append(f"node {nid} ({ct}).{name}: expects BOOLEAN, got {value!r}")
            elif typ == "STRING" and not isinstance(value, str):
                errors.append(f"node {nid} ({ct}).{name}: expects STRING, got {value!r}")
    return errors


def _depths(prompt: dict) -> dict[str, int]:
    """Column of each node: 1 + the deepest node it links from."""
    memo: dict[str, int] = {}

    def depth(nid: str, seen=()) -> int:
        if nid in memo:
            return memo[nid]
        if nid in seen:
            raise ValueError(f"workflow has a cycle through node {nid}")
        srcs = [str(v[0]) for v in prompt[nid].get("inputs", {}).values()
                if isinstance(v, list) and len(v) == 2 and str(v[0]) in prompt]
        memo[nid] = 1 + max((depth(s, seen + (nid,)) for s in srcs), default=-1)
        return memo[nid]

    for nid in prompt:
        depth(nid)
    return memo


def _text_px(text: str, pad: float) -> int:
    """Width the frontend needs for ``text`` plus ``pad`` px, rounded up to 10 px."""
    return int(-(-(CHAR_PX * len(text) + pad) // 10) * 10)


def _node_width(title: str, inputs: list[dict], widgets: list[tuple[str, Any, dict]], outputs: list[dict]) -> int:
    """Width of a node that shows its whole title, an input and an output label side by side, and each
    widget's label with its value (combos and one-line strings; multi-line text wraps)."""
    need = [NODE_WIDTH, _text_px(title, 50)]
    slots = [i["name"] for i in inputs if "widget" not in i]
    if slots or outputs:
        need.append(_text_px(max(slots, key=len, default="") + max((o["name"] for o in outputs), key=len,
                                                                   default=""), 60))
    for name, value, opts in widgets:
        shown = "" if opts.get("multiline") or not isinstance(value, (str, int, float)) else str(value)
        need.append(_text_px(name + shown, 90))
    return max(need)


def ui_ids(prompt: dict) -> dict[str, int]:
    """The UI graph's node id of each API prompt node id (numbered 1, 2, ... in id order)."""
    return {nid: i + 1 for i, nid in enumerate(sorted(prompt, key=lambda k: (len(k), k)))}


def api_to_ui(prompt: dict, object_info: dict) -> dict[str, Any]:
    """LiteGraph UI workflow (version 0.4) for an API-format prompt: nodes in one group per pipeline stage, the
    groups wrapped into rows, and a Note first that lists the model files (``layout``)."""
    errs = validate_api(prompt, object_info, files_may_be_missing=True)
    if errs:
        raise ValueError("workflow does not match the node definitions:\n" + "\n".join(errs))
    ids = ui_ids(prompt)
    cols = _depths(prompt)
    links, nodes, boxes = [], {}, {}
    out_links: dict[tuple[str, int], list[int]] = {}
    for nid in prompt:  # links first, so outputs can list them
        for name, value in prompt[nid].get("inputs", {}).items():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
                lid = len(links) + 1
                src = str(value[0])
                typ = object_info[prompt[src]["class_type"]]["output"][value[1]]
                links.append([lid, ids[src], value[1], ids[nid], name, typ])
                out_links.setdefault((src, value[1]), []).append(lid)
    for order, nid in enumerate(sorted(prompt, key=lambda k: (cols[k], ids[k]))):
        node, info = prompt[nid], object_info[prompt[nid]["class_type"]]
        inputs, widgets, upload, shown = [], [], [], []
        extra_rows = 0  # widgets without a row in a Vue node: a seed's control, an upload button
        for name, typ, opts in _inputs(info):
            value = node.get("inputs", {}).get(name, opts.get("default"))
            linked = isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)
            if typ in WIDGET_TYPES and not linked:
                widgets.append(value if value is not None else (opts.get("options") or [""])[0])
                shown.append((name, widgets[-1], opts))
                # the frontend adds a "control after generate" widget to every INT named seed / noise_seed
                if opts.get("control_after_generate", typ == "INT" and name in ("seed", "noise_seed")):
                    widgets.append("fixed")
                    extra_rows += 1
                if opts.get("video_upload") or opts.get("image_upload"):
                    upload.append("image")  # the upload button comes after all other widgets
            elif typ in WIDGET_TYPES:
                inputs.append({"name": name, "type": typ, "widget": {"name": name}, "link": None})
            else:
                inputs.append({"name": name, "type": typ, "link": None})
        widgets += upload
        for li in links:
            if li[3] == ids[nid]:
                slot = next(i for i, x in enumerate(inputs) if x["name"] == li[4])
                inputs[slot]["link"] = li[0]
                li[4] = slot
        outputs = [{"name": n, "type": t, "links": out_links.get((nid, i), []), "slot_index": i}
                   for i, (n, t) in enumerate(zip(info.get("output_name", info["output"]), info["output"]))]
        title = node.get("_meta", {}).get("title", info.get("display_name") or node["class_type"])
        rows = len(widgets) + sum("widget" in i for i in inputs)  # a linked widget keeps its row
        boxes[nid] = node_box(node["class_type"], _node_width(title, inputs, shown, outputs),
                              sum("widget" not in i for i in inputs), len(outputs), rows,
                              sum(bool(o.get("multiline")) for _, _, o in shown), rows - extra_rows - len(upload),
                              UI_MIN_SIZE.get(node["class_type"]))
        nodes[nid] = {"id": ids[nid], "type": node["class_type"], "pos": [0, 0],
                      "size": [boxes[nid].w, boxes[nid].h], "flags": {}, "order": order, "mode": 0,
                      "inputs": inputs, "outputs": outputs, "title": title,
                      "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": widgets}
    text = model_note(prompt)
    note_h = NOTE_LINE * (text.count("\n") + 1) + NOTE_PAD
    pos, groups = arrange(prompt, boxes, Box(NOTE_WIDTH, note_h, note_h + NOTE_ROOM))
    for nid, n in nodes.items():
        n["pos"] = pos[nid]
    note = {"id": len(ids) + 1, "type": "Note", "pos": pos["note"], "size": [NOTE_WIDTH, note_h], "flags": {},
            "order": len(ids), "mode": 0, "inputs": [], "outputs": [], "title": "Read me: model files",
            "properties": {"text": ""}, "widgets_values": [text], "color": "#432", "bgcolor": "#653"}
    return {"last_node_id": len(ids) + 1, "last_link_id": len(links), "nodes": [*nodes.values(), note],
            "links": links, "groups": groups, "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}},
            "version": 0.4}
