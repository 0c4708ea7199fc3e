// Full4D Splat Preview widget (always loaded; keep tiny). The WebGL renderer (lib/splat_renderer.mjs)
// is imported lazily the first time a Full4DSplatPreview node receives data. Text goes in via textContent only.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const RENDERER_URL = new URL("./lib/splat_renderer.mjs", import.meta.url).href;
let rendererModule = null;
const loadRenderer = () => (rendererModule ??= import(RENDERER_URL));

function el(tag, props = {}, parent = null) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "text") e.textContent = v; else if (k === "style") e.style.cssText = v; else e[k] = v;
  }
  if (parent) parent.appendChild(e);
  return e;
}

// Controls styled with the frontend's theme variables (all three of 1.32.9, 1.49.6 and 1.58.1 define them; the
// fallbacks are their dark-theme values): 1.58.1's CSS reset leaves a plain <button> washed out.
const CSS = `.full4d-preview{display:flex;flex-direction:column;gap:4px;width:100%;height:100%;min-height:260px}
.full4d-view{position:relative;flex:1;min-height:200px}
.full4d-view canvas{position:absolute;inset:0;width:100%;height:100%;background:#141419;touch-action:none}
.full4d-bar{display:flex;gap:4px;align-items:center;font:12px sans-serif;color:var(--input-text,#ddd)}
.full4d-cams{display:flex;flex-wrap:wrap;gap:3px}
.full4d-preview button{background:var(--comfy-input-bg,#222);color:var(--input-text,#ddd);
border:1px solid var(--border-color,#4e4e4e);border-radius:4px;font:12px sans-serif;padding:2px 8px;margin:0}
.full4d-preview button{cursor:pointer}.full4d-preview button:hover{filter:brightness(1.4)}
.full4d-label,.full4d-info{color:var(--descrip-text,#999)}.full4d-info{font:11px sans-serif;overflow-wrap:break-word}
.full4d-label{flex:0 1 auto;min-width:0;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}`;
el("style", { text: CSS, id: "full4d-preview-css" }, document.head);

// The mouse wheel over a splat view zooms that view, never the graph. Taken in the capture phase at the window,
// before the frontend sees it: its Vue node layer (Comfy.VueNodes.Enabled) forwards wheel events to the graph
// from a capture listener on its transform pane, and from 1.49 skips that for a data-capture-wheel element only
// while it has focus; the classic canvas would zoom too. Canvas -> its widget's zoom handler.
const wheelZoom = new WeakMap();
window.addEventListener("wheel", (e) => {
  const zoom = wheelZoom.get(e.target);
  if (!zoom) return;
  e.preventDefault(); e.stopImmediatePropagation(); zoom(e);
}, { capture: true, passive: false });

// Small 3-vector helpers for the view (world coordinates, OpenCV: y down).
const sub = (a, b) => a.map((v, i) => v - b[i]);
const add = (a, b) => a.map((v, i) => v + b[i]);
const mul = (a, k) => a.map((v) => v * k);
const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
// v rotated by angle (radians) about the unit axis u (Rodrigues)
const rotate = (v, u, angle) => {
  const c = Math.cos(angle), s = Math.sin(angle);
  return add(add(mul(v, c), mul(cross(u, v), s)), mul(u, dot(u, v) * (1 - c)));
};
const rows = (R) => [R.slice(0, 3), R.slice(3, 6), R.slice(6, 9)];
const WORLD_UP = [0, -1, 0];

function buildWidget(node) {
  const root = el("div", { className: "full4d-preview" });
  root.dataset.captureWheel = "true"; // the Vue node layer's own marker for "this element takes the wheel"
  // "widget-expands": the Vue node layer of 1.32.9 grows a widget row to the node's height only with this class
  // (else the node keeps ~100+ px empty under the controls); the canvas is absolutely placed in a flex cell so
  // that its pixel size never feeds back into the layout
  root.classList.add("widget-expands");
  const viewBox = el("div", { className: "full4d-view" }, root);
  const canvas = el("canvas", { width: 480, height: 320 }, viewBox);
  const bar = el("div", { className: "full4d-bar" }, root);
  const play = el("button", { text: "play", className: "full4d-play" }, bar);
  const slider = el("input", { type: "range", min: 0, max: 0, value: 0, step: 1, className: "full4d-time", style: "flex:1" }, bar);
  // one line whatever it says: a label that wrapped would resize the view (and clear its canvas) on every draw
  const label = el("span", { text: "no data", className: "full4d-label" }, bar);
  const cams = el("div", { className: "full4d-cams" }, root);
  const info = el("div", { className: "full4d-info" }, root);
  // view: the camera as eye (3) + R (row-major world-to-camera, OpenCV) turning about pivot (3); intr: the rig
  // camera's pinhole {K: [fx, fy, cx, cy], width, height} (null: a 50 degree vertical fov); dist, az, el: derived
  const st = { data: null, renderer: null, frame: 0, drawId: 0, timer: null, follow: false, orbitIdx: 0, cams: null,
    view: { eye: [0, 0, 0], R: [1, 0, 0, 0, 1, 0, 0, 0, 1], pivot: [0, 0, 1], intr: null, dist: 1, az: 0, el: 0 } };
  let mod = null;

  const setView = (eye, R, pivot, intr) => {
    const f = R.slice(6, 9), d = Math.hypot(...sub(eye, pivot));
    st.view = { eye, R, pivot, intr, dist: d, az: Math.atan2(-f[0], f[2]), el: Math.asin(Math.max(-1, Math.min(1, f[1]))) };
  };
  const draw = () => {
    if (!st.renderer || !st.data) return;
    const v = st.view, rect = canvas.getBoundingClientRect(), w = Math.round(rect.width), h = Math.round(rect.height);
    if (rect.width > 10 && (canvas.width !== w || canvas.height !== h)) { canvas.width = w; canvas.height = h; }
    const T = rows(v.R).map((r) => -dot(r, v.eye));
    const cam = v.intr ? { R: v.R, T, ...v.intr } : { R: v.R, T, fovY: 50 };
    const f = st.frame, id = ++st.drawId; // the label follows the newest draw once it is on the canvas
    st.renderer.render(st.data.frames[f], cam, st.data.frames, st.background).then(() => {
      if (id === st.drawId) label.textContent = `t ${f + 1}/${st.data.t} · ${st.data.n} splats`;
    }).catch((e) => { console.warn("[full4d] preview:", e); label.textContent = String(e.message ?? e); });
  };
  // A camera of the server's cameras JSON (metric, exactly what Full4DRender4DGS renders from): its pose and
  // pinhole as they are; drag-orbit then turns about the rig's look-at point.
  const setCam = (c) => {
    const pivot = st.cams?.center ?? add(c.eye, c.R.slice(6, 9));
    setView(c.eye, c.R, pivot, { K: c.K, width: c.width, height: c.height });
  };
  // orbit camera i (wrapped); "follow orbit" steps it once per frame while playing, showOrbit(i) jumps there
  const toOrbit = (i) => {
    const n = st.cams?.orbit?.length ?? 0;
    if (!n) return false;
    st.orbitIdx = ((i % n) + n) % n;
    setCam(st.cams.orbit[st.orbitIdx]);
    return true;
  };
  const showOrbit = (i) => { if (toOrbit(i)) draw(); };
  const setFrame = (f) => { st.frame = f; slider.value = String(f); draw(); };
  const tick = () => {
    if (!st.data) return;
    if (st.follow) toOrbit(st.orbitIdx + 1);
    setFrame((st.frame + 1) % st.data.t);
  };
  // one fps control: the node's own fps widget (saved with the workflow), read at every frame so a change applies
  // at once; the buffer's fps (the same value when it was made) if the widget is missing
  const fps = () => Number(node.widgets?.find((w) => w.name === "fps")?.value) || st.data?.fps || 16;
  const stop = () => { clearTimeout(st.timer); st.timer = null; play.textContent = "play"; };
  const run = () => { st.timer = setTimeout(() => { tick(); if (st.timer) run(); }, 1000 / Math.max(0.1, fps())); };
  play.onclick = () => {
    if (st.timer) return stop();
    run(); play.textContent = "pause";
  };
  slider.oninput = () => setFrame(Number(slider.value));

  // Drag: turn the camera about the pivot (yaw about world up, pitch about the camera's right axis, never over
  // the pole); right / shift drag: move eye and pivot in the image plane; wheel: towards / away from the pivot.
  const turn = (dx, dy) => {
    const v = st.view;
    let eye = v.eye, R = rows(v.R);
    const about = (axis, angle) => {
      eye = add(v.pivot, rotate(sub(eye, v.pivot), axis, angle));
      R = R.map((r) => rotate(r, axis, angle));
    };
    about(WORLD_UP, dx * 0.01);
    const keep = [eye, R];
    about(R[0], -dy * 0.01);
    if (Math.abs(R[2][1]) > Math.sin(1.5)) [eye, R] = keep;
    setView(eye, R.flat(), v.pivot, v.intr);
  };
  const pan = (dx, dy) => {
    const v = st.view, [x, y] = rows(v.R), k = v.dist * 0.002;
    const d = add(mul(x, -k * dx), mul(y, -k * dy));
    setView(add(v.eye, d), v.R, add(v.pivot, d), v.intr);
  };
  let drag = null;
  canvas.addEventListener("pointerdown", (e) => { drag = { x: e.clientX, y: e.clientY, pan: e.button !== 0 || e.shiftKey }; canvas.setPointerCapture(e.pointerId); e.stopPropagation(); });
  canvas.addEventListener("pointerup", () => { drag = null; });
  canvas.addEventListener("contextmenu", (e) => e.preventDefault());
  canvas.addEventListener("pointermove", (e) => {
    if (!drag) return;
    const dx = e.clientX - drag.x, dy = e.clientY - drag.y; drag.x = e.clientX; drag.y = e.clientY;
    if (drag.pan) pan(dx, dy); else turn(dx, dy);
    st.follow = false; draw(); e.stopPropagation();
  });
  wheelZoom.set(canvas, (e) => {
    const v = st.view;
    setView(add(v.pivot, mul(sub(v.eye, v.pivot), Math.exp(e.deltaY * 0.001))), v.R, v.pivot, v.intr);
    draw();
  });
  // a node resized (or first laid out after a page load): draw at the new canvas size
  new ResizeObserver(() => draw()).observe(viewBox);

  const showCams = (c) => {
    cams.replaceChildren();
    for (const cam of c.rig ?? []) {
      const b = el("button", { text: String(cam.name), className: "full4d-cam" }, cams);
      b.onclick = () => { st.follow = false; setCam(cam); draw(); };
    }
    if (c.orbit?.length) {
      const b = el("button", { text: "follow orbit", className: "full4d-follow" }, cams);
      b.onclick = () => { st.follow = !st.follow; if (st.follow && !st.timer) play.onclick(); };
    }
  };

  // item: one full4d_preview entry of the node's UI output (also kept in node.properties for a page reload).
  const load = async (item) => {
    label.textContent = "loading…";
    mod = await loadRenderer();
    const get = async (filename) => {
      const q = new URLSearchParams({ filename, subfolder: item.subfolder, type: item.type });
      const r = await api.fetchApi(`/view?${q}`);
      return r.ok ? r : null;
    };
    const [r, rc] = await Promise.all([get(item.filename), item.cameras ? get(item.cameras) : null]);
    if (!r || (item.cameras && !rc)) {
      label.textContent = "no data";
      info.textContent = "The last preview is gone from the server (ComfyUI empties its temp folder when it restarts): "
        + "run the graph again.";
      return;
    }
    st.data = mod.decodeF4DP(await r.arrayBuffer()); st.background = item.background ?? null;
    st.cams = rc ? await rc.json() : null;
    slider.max = String(st.data.t - 1);
    if (!st.renderer) st.renderer = new mod.SplatRenderer(canvas);
    if (st.cams?.rig?.length) setCam(st.cams.rig[0]);
    else {
      const c = st.data.lo.map((x, i) => 0.5 * (x + st.data.hi[i]));
      const eye = sub(c, [0, 0, 1.5 * Math.hypot(...st.data.hi.map((x, i) => x - st.data.lo[i]))]);
      const { R } = mod.lookAt(eye, c);
      setView(eye, R, c, null);
    }
    info.textContent = item.scale_note ? `cameras: ${item.scale_note}` : "";
    showCams(st.cams ?? {}); setFrame(0);
  };
  return { root, load, showOrbit, state: st, onRemoved: () => { stop(); st.renderer?.dispose(); st.renderer = null; } };
}

app.registerExtension({
  name: "comfyui-full4d.splat-preview",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== "Full4DSplatPreview") return;
    const onCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onCreated?.apply(this, arguments);
      this.full4d = buildWidget(this);
      this.addDOMWidget("full4d_preview", "full4d_preview", this.full4d.root, { serialize: false, hideOnZoom: false });
      this.setSize?.([Math.max(this.size?.[0] ?? 0, 420), Math.max(this.size?.[1] ?? 0, 420)]);
      return r;
    };
    const show = (node, item) => node.full4d?.load(item).catch((e) => {
      console.warn("[full4d] preview:", e); node.full4d.root.querySelector(".full4d-label").textContent = String(e.message ?? e);
    });
    // The last result is kept in the node's properties, which the workflow (and the frontend's copy of it that
    // survives a page reload) saves; the frontend 1.32.9 keeps node outputs only in memory.
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const item = message?.full4d_preview?.[0];
      if (!item) return;
      this.properties = { ...(this.properties ?? {}), full4d_preview: item };
      // The frontend saves the workflow (what a reload restores) when its change tracker sees a change, which it
      // checks on the user's next click or key, not on "executed": mark one, as the frontend's own edits do, so a
      // reload right after a run still finds the preview.
      app.canvas?.emitBeforeChange?.();
      app.canvas?.emitAfterChange?.();
      show(this, item);
    };
    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function () {
      const r = onConfigure?.apply(this, arguments);
      const item = this.properties?.full4d_preview;
      if (item?.filename) show(this, item);
      return r;
    };
    const onRemoved = nodeType.prototype.onRemoved;
    nodeType.prototype.onRemoved = function () { this.full4d?.onRemoved(); return onRemoved?.apply(this, arguments); };
  },
});
