"""Where ``workflow.api_to_ui`` puts the nodes of a UI graph: one ComfyUI group per pipeline stage, groups wrapped
into rows, and a Note that says which model files the graph needs.

* Stages (``STAGES``): a node's class names its stage (``CLASS_STAGE``); any other node (CreateVideo,
  PreviewImage, Full4DViewGrid, ...) joins the stage of the node its first link comes from.
* Inside a group the nodes, ordered by how far down the stage's own links they are, fill columns top to bottom up
  to a height (a node is never above one it takes an input from); each group is tried at a few heights.
* The groups, in stage order and at the heights that suit, are wrapped into the rows that give the largest Fit
  View zoom on a 16:9 screen (``FIT_SCREEN``), so the graph is no longer one long row whose text the frontend
  hides when zoomed out.

Sizes, measured on the 1.32.9 frontend (``tests/test_browser_layout.py`` checks the result in both node modes):

* classic (LiteGraph canvas): a node is drawn at its saved size grown to ``computeSize()``: 20 px a slot row
  (inputs beside outputs), 24 px a widget, 6 + 8 px padding, 30 more for a multi-line text, and a 30 px title bar
  above ``pos``. The saved height is that, so no empty block is left under the widgets;
* Vue nodes ("Nodes 2.0"): the frontend scales a classic graph's positions, sizes and groups by 1.2 when it
  opens it in Vue mode (``ensureCorrectLayoutScale``); a node is then drawn from its title bar's top at the larger
  of its scaled size and its content (24 px a slot row, 34 a widget, 18 padding, 22 more for a multi-line text,
  a 36 px title bar). In the graph's own units that is as wide as the classic node and ``(content + 36) / 1.2``
  tall from where the classic title bar starts.

The layout keeps room below each node for the taller of the two, plus what a node shows after a run
(``AFTER_RUN``: the fit's status text, image and video previews).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import product

__all__ = ["STAGES", "CLASS_STAGE", "Box", "node_stages", "arrange", "model_note"]

# (key, group title, group colour: the frontend's own group colours)
STAGES = (("source", "1. Source video and depth", "#3f789e"),
          ("rig", "2. Cameras and projection", "#8A8"),
          ("sampling", "3. Multi-view video (diffusion model)", "#a1309b"),
          ("fit", "4. 4D Gaussians: fit, render, save, preview", "#b58b2a"),
          ("score", "5. Scores against the truth, side-by-side video", "#444"))
CLASS_STAGE = {
    **dict.fromkeys(("Full4DSyntheticScene", "Full4DLoadVideo", "LoadVideo", "Full4DLoadMultiView", "Full4DDA3Loader",
                     "Full4DDA3Depth", "Full4DDA3DepthFromCore", "Full4DGeometryFromDA3"), "source"),
    **dict.fromkeys(("Full4DCameraRig", "Full4DProjectToCameras"), "rig"),
    **dict.fromkeys(("UNETLoader", "CLIPLoader", "CLIPTextEncode", "VAELoader", "VAEEncode", "VAEDecode",
                     "Full4DVAEEncodeViews", "Full4DAdapterLoader", "Full4DParallel", "Full4DSampler",
                     "Full4DTrainingFreeSampler", "Full4DEmptyText"), "sampling"),
    **dict.fromkeys(("Full4DFit4DGS", "Full4DFitOptions", "Full4DFMDTeacher", "Full4DInterpolateRig",
                     "Full4DRender4DGS", "Full4DSave4DGS", "Full4DSplatPreview", "Full4DSceneToSplat"), "fit"),
    **dict.fromkeys(("Full4DRenderTruth", "Full4DEvaluate", "Full4DStackVideos"), "score"),
}

# classic node mode
SLOT, WIDGET, MULTILINE, PAD, WIDGETS_PAD, TITLE = 20, 24, 30, 6, 8, 30
# Vue node mode
VUE_SCALE, VUE_SLOT, VUE_WIDGET, VUE_MULTILINE, VUE_PAD, VUE_TITLE = 1.2, 24, 34, 22, 18, 36
# room below a node for what it shows after a run: the fit's status text (up to ~8 lines), image / video previews
# (the frontend grows an image / video output node to 220 px below its widgets when it shows a result)
AFTER_RUN = {"Full4DFit4DGS": 150, "PreviewImage": 240, "SaveImage": 240, "SaveVideo": 240}
COL_GAP = 40  # between a column's widest node and the next column
ROW_GAP = 30  # between a node's kept room and the next node's title bar
GROUP_PAD = 20  # inside a group, around its nodes
GROUP_FONT = 32  # group titles stay drawn when the frontend hides node text (zoomed out): large enough to read
GROUP_TITLE = 45  # the group's title bar (font x 1.4)
GROUP_GAP = 50  # between groups
FIT_SCREEN = (1920, 1000)  # the canvas of a 1920x1080 window; the rows are chosen for its Fit View zoom
SHAPES = 6  # heights each group is tried at


@dataclass
class Box:
    """A node's saved size (``w`` x ``h``, what the UI file stores) and the height kept free for it below ``pos``
    (``keep``: the lower of its classic and its Vue drawing's bottom edge, plus ``AFTER_RUN``)."""

    w: int
    h: int
    keep: int


def node_box(class_type: str, width: int, slots_in: int, slots_out: int, widgets: int, multiline: int,
             vue_widgets: int, min_size: tuple[int, int] | None = None) -> Box:
    """The ``Box`` of a node with ``slots_in`` input sockets (widgets excluded), ``slots_out`` outputs, ``widgets``
    classic widget rows (the seed's control and an upload button count), ``multiline`` of them multi-line texts,
    ``vue_widgets`` widget rows a Vue node shows; ``min_size``: a DOM widget's (preview) own size."""
    rows = max(slots_in, slots_out, 1)
    h = SLOT * rows + PAD + (WIDGET * widgets + WIDGETS_PAD + MULTILINE * multiline if widgets else 0)
    vue = VUE_SLOT * rows + VUE_PAD + VUE_WIDGET * vue_widgets + VUE_MULTILINE * multiline
    w = width
    if min_size is not None:
        w, h = max(w, min_size[0]), max(h, min_size[1])
    keep = max(h + TITLE, math.ceil((vue + VUE_TITLE) / VUE_SCALE)) + AFTER_RUN.get(class_type, 0)
    return Box(w, h, keep)


def node_stages(prompt: dict) -> dict[str, str]:
    """Stage key of every node of an API-format prompt (module doc)."""
    out: dict[str, str] = {}

    def stage(nid: str, seen: tuple = ()) -> str:
        if nid in out:
            return out[nid]
        node = prompt[nid]
        s = CLASS_STAGE.get(node["class_type"])
        if s is None:
            srcs = [str(v[0]) for v in node.get("inputs", {}).values()
                    if isinstance(v, list) and len(v) == 2 and str(v[0]) in prompt and str(v[0]) not in seen]
            s = stage(srcs[0], seen + (nid,)) if srcs else STAGES[0][0]
        out[nid] = s
        return s

    for nid in prompt:
        stage(nid)
    return out


def _order(nids: list[str], prompt: dict) -> list[str]:
    """The stage's nodes by how far down the stage's own links they are (then in prompt order): every node after
    the nodes it takes an input from."""
    inside = set(nids)
    depth: dict[str, int] = {}

    def d(nid: str) -> int:
        if nid not in depth:
            srcs = {str(v[0]) for v in prompt[nid].get("inputs", {}).values()
                    if isinstance(v, list) and len(v) == 2 and str(v[0]) in inside}
            depth[nid] = 1 + max((d(s) for s in srcs), default=-1)
        return depth[nid]

    return sorted(nids, key=lambda n: (d(n), nids.index(n)))


def _columns(order: list[str], boxes: dict[str, Box], tall: int) -> list[list[str]]:
    """``order`` filled into columns top to bottom, a new column where the next node would make one taller than
    ``tall`` (a node is never above a node it takes an input from)."""
    cols: list[list[str]] = [[]]
    for nid in order:
        if cols[-1] and _height(cols[-1] + [nid], boxes) > tall:
            cols.append([])
        cols[-1].append(nid)
    return cols


def _height(col: list[str], boxes: dict[str, Box]) -> int:
    """From the first node's title bar to the last one's kept room."""
    return sum(TITLE + boxes[n].keep + ROW_GAP for n in col) - ROW_GAP


def _width(col: list[str], boxes: dict[str, Box]) -> int:
    return max(boxes[n].w for n in col)


@dataclass
class _Block:
    """A group (or the note) laid out at the origin: its size and its nodes' offsets."""

    key: str
    w: int
    h: int
    offsets: dict[str, tuple[int, int]]


def _block(key: str, cols: list[list[str]], boxes: dict[str, Box]) -> _Block:
    offsets, x = {}, GROUP_PAD
    top = GROUP_TITLE + GROUP_PAD + TITLE  # a node's pos is below its title bar
    for col in cols:
        y = top
        for nid in col:
            offsets[nid] = (x, y)
            y += boxes[nid].keep + ROW_GAP + TITLE
        x += _width(col, boxes) + COL_GAP
    w = x - COL_GAP + GROUP_PAD
    h = GROUP_TITLE + GROUP_PAD + max(_height(c, boxes) for c in cols) + GROUP_PAD
    return _Block(key, w, h, offsets)


def _shapes(key: str, order: list[str], boxes: dict[str, Box]) -> list[_Block]:
    """The stage laid out at a few heights, from its tallest node's to one column."""
    lo, hi = max(_height([n], boxes) for n in order), _height(order, boxes)
    out, seen = [], set()
    for i in range(SHAPES):
        cols = _columns(order, boxes, lo + (hi - lo) * i // (SHAPES - 1))
        if (sig := tuple(map(len, cols))) not in seen:
            seen.add(sig)
            out.append(_block(key, cols, boxes))
    return out


def _zoom(rows: list[list[_Block]]) -> float:
    """Fit View's zoom of the rows on ``FIT_SCREEN``."""
    w = max(sum(b.w for b in r) + GROUP_GAP * (len(r) - 1) for r in rows)
    h = sum(max(b.h for b in r) for r in rows) + GROUP_GAP * (len(rows) - 1)
    return min(FIT_SCREEN[0] / w, FIT_SCREEN[1] / h)


def _rows(choices: list[list[_Block]]) -> list[list[_Block]]:
    """One shape of each block (in order), wrapped into rows, with the largest Fit View zoom on ``FIT_SCREEN``
    (ties: the first found, i.e. fewer row breaks and the shortest shapes)."""
    best, best_zoom = None, 0.0
    for cuts in product((False, True), repeat=len(choices) - 1):
        for blocks in product(*choices):
            rows, row = [], [blocks[0]]
            for cut, b in zip(cuts, blocks[1:]):
                if cut:
                    rows.append(row)
                    row = [b]
                else:
                    row.append(b)
            rows.append(row)
            if (zoom := _zoom(rows)) > best_zoom + 1e-9:
                best, best_zoom = rows, zoom
    return best


def arrange(prompt: dict, boxes: dict[str, Box], note: Box | None = None,
            origin: tuple[int, int] = (60, 60)) -> tuple[dict[str, list[int]], list[dict]]:
    """Positions ``{nid: [x, y]}`` of every node (and of ``"note"`` when ``note`` is given) and the groups
    (``{"title", "bounding": [x, y, w, h], "color", ...}``, the workflow file's format) of an API prompt whose
    nodes have ``boxes``."""
    stages = node_stages(prompt)
    blocks = []
    if note is not None:
        top = GROUP_TITLE + GROUP_PAD + TITLE  # level with the groups' first nodes
        blocks.append(_Block("note", note.w, top + note.keep, {"note": (0, top)}))
    choices = [[b] for b in blocks]
    for key, _, _ in STAGES:
        nids = [n for n in prompt if stages[n] == key]
        if nids:
            choices.append(_shapes(key, _order(nids, prompt), boxes))
    pos, groups = {}, []
    titles = {k: (t, c) for k, t, c in STAGES}
    y = origin[1]
    for row in _rows(choices):
        x = origin[0]
        for b in row:
            for nid, (dx, dy) in b.offsets.items():
                pos[nid] = [x + dx, y + dy]
            if b.key in titles:
                groups.append({"id": len(groups) + 1, "title": titles[b.key][0], "bounding": [x, y, b.w, b.h],
                               "color": titles[b.key][1], "font_size": GROUP_FONT, "flags": {}})
            x += b.w + GROUP_GAP
        y += max(b.h for b in row) + GROUP_GAP
    return pos, groups


# Where the files a loader names go, inside the ComfyUI folder (the host's folder names; the pack's own are
# comfyui_full4d/host/paths.py FULL4D and DEPTH): (class, input) -> (folder, what it is)
MODEL_FOLDERS = {
    ("UNETLoader", "unet_name"): ("models/diffusion_models", "diffusion model"),
    ("VAELoader", "vae_name"): ("models/vae", "VAE"),
    ("CLIPLoader", "clip_name"): ("models/text_encoders", "text encoder"),
    ("Full4DDA3Loader", "model"): ("models/depth_anything_3", "Depth Anything 3: a folder with config.json and "
                                                              "model.safetensors"),
    ("Full4DAdapterLoader", "adapter"): ("models/full4d", "Full-4D adapter"),
}
NONE_ADAPTER = "none (zero-init)"  # comfyui_full4d/host/patch.py NONE_ADAPTER


def model_note(prompt: dict) -> str:
    """The text of a graph's Note: each model file its loaders name and the folder it goes in, and the user's own
    input (video, capture folder)."""
    from ..diffusion.nano import NANO_FILES

    lines, seen, nano = [], set(), False
    for node in prompt.values():
        for (ct, name), (folder, what) in MODEL_FOLDERS.items():
            value = node.get("inputs", {}).get(name)
            if node["class_type"] != ct or not isinstance(value, str) or (ct, value) in seen:
                continue
            seen.add((ct, value))
            if value in NANO_FILES.values():  # embedded in the pack, listed by the loaders already
                nano = True
            elif ct == "Full4DAdapterLoader" and value == NONE_ADAPTER:
                lines.append(f"- {folder}/ (optional): a trained {what}; '{NONE_ADAPTER}' runs without one")
            elif ct == "Full4DDA3Loader":
                lines.append(f"- {folder}/{value}/ ({what})")
            else:
                lines.append(f"- {folder}/{value} ({what})")
    own = []
    for node in prompt.values():
        ins = node.get("inputs", {})
        if node["class_type"] == "Full4DLoadVideo" and isinstance(ins.get("file"), str):
            own.append(f"- input/{ins['file']}: your video (or upload one in the video loader)")
        elif node["class_type"] == "Full4DLoadMultiView" and isinstance(ins.get("folder"), str):
            own.append(f"- input/{ins['folder']}/: your synchronized multi-view capture (docs/cameras.md)")
    if not lines:
        text = ["This graph needs no model files: press Run."]
        if nano:
            text.append("Its model is the nano Full-4D embedded in the pack (comfyui-full4d/models/nano/), "
                        "already in the loaders' lists.")
    else:
        text = ["Model files this graph needs (folders inside your ComfyUI folder):", *lines]
    if own:
        text += ["", "Your own input:", *own]
    return "\n".join(text)
