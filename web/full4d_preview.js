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
.full4d-label{color:var(--descrip-text,#999)}`;
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

function buildWidget(node) {
  const root = el("div", { className: "full4d-preview" });
  root.dataset.captureWheel = "true"; // the Vue node layer's own marker for "this element takes the wheel"
  // "widget-expands": the Vue node layer of 1.32.9 grows a widget row to the node's height only with this class
  // (else the node keeps ~100+ px empty under the controls); the canvas is absolutely placed in a flex cell so
  // that its pixel size never feeds back into the layout
  root.classList.add("widget-expands");
  const canvas = el("canvas", { width: 480, height: 320 }, el("div", { className: "full4d-view" }, root));
  const bar = el("div", { className: "full4d-bar" }, root);
  const play = el("button", { text: "play", className: "full4d-play" }, bar);
  const slider = el("input", { type: "range", min: 0, max: 0, value: 0, step: 1, className: "full4d-time", style: "flex:1" }, bar);
  const label = el("span", { text: "no data", className: "full4d-label" }, bar);
  const cams = el("div", { className: "full4d-cams" }, root);
  const st = { data: null, renderer: null, frame: 0, drawId: 0, timer: null, follow: false, orbitIdx: 0, cams: null,
    view: { target: [0, 0, 1], az: 0, el: 0, dist: 1.0, fov: 50 } };

  const draw = () => {
    if (!st.renderer || !st.data) return;
    const v = st.view, ce = Math.cos(v.el);
    const eye = [v.target[0] + v.dist * Math.sin(v.az) * ce, v.target[1] - v.dist * Math.sin(v.el),
      v.target[2] - v.dist * Math.cos(v.az) * ce];
    const { R, T } = rendererModule_.lookAt(eye, v.target);
    const rect = canvas.getBoundingClientRect(), w = Math.round(rect.width), h = Math.round(rect.height);
    if (rect.width > 10 && (canvas.width !== w || canvas.height !== h)) { canvas.width = w; canvas.height = h; }
    const f = st.frame, id = ++st.drawId; // the label follows the newest draw once it is on the canvas
    st.renderer.render(st.data.frames[f], { R, T, fovY: v.fov }, st.data.frames, st.background).then(() => {
      if (id === st.drawId) label.textContent = `t ${f + 1}/${st.data.t} · ${st.data.n} splats`;
    }).catch((e) => { console.warn("[full4d] preview:", e); label.textContent = String(e.message ?? e); });
  };
  let rendererModule_ = null;
  const setCam = (c) => {
    const d = Math.hypot(...(st.cams?.center ?? [0, 0, 1]).map((x, i) => x - c.eye[i])) || 1;
    st.view.target = c.eye.map((x, i) => x + c.forward[i] * d);
    st.view.dist = d; st.view.el = Math.asin(Math.max(-1, Math.min(1, c.forward[1])));
    st.view.az = Math.atan2(-c.forward[0], c.forward[2]); st.view.fov = c.fov_y_deg;
  };
  const setFrame = (f) => { st.frame = f; slider.value = String(f); draw(); };
  const tick = () => {
    if (!st.data) return;
    if (st.follow && st.cams?.orbit?.length) { st.orbitIdx = (st.orbitIdx + 1) % st.cams.orbit.length; setCam(st.cams.orbit[st.orbitIdx]); }
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

  let drag = null;
  canvas.addEventListener("pointerdown", (e) => { drag = { x: e.clientX, y: e.clientY, pan: e.button !== 0 || e.shiftKey }; canvas.setPointerCapture(e.pointerId); e.stopPropagation(); });
  canvas.addEventListener("pointerup", () => { drag = null; });
  canvas.addEventListener("contextmenu", (e) => e.preventDefault());
  canvas.addEventListener("pointermove", (e) => {
    if (!drag) return;
    const dx = e.clientX - drag.x, dy = e.clientY - drag.y; drag.x = e.clientX; drag.y = e.clientY;
    const v = st.view;
    if (drag.pan) {
      const k = v.dist * 0.002, ca = Math.cos(v.az), sa = Math.sin(v.az);
      v.target = [v.target[0] - k * dx * ca, v.target[1] - k * dy, v.target[2] - k * dx * sa];
    } else { v.az += dx * 0.01; v.el = Math.max(-1.5, Math.min(1.5, v.el + dy * 0.01)); }
    st.follow = false; draw(); e.stopPropagation();
  });
  wheelZoom.set(canvas, (e) => { st.view.dist *= Math.exp(e.deltaY * 0.001); draw(); });

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

  const load = async (item, camsJson) => {
    label.textContent = "loading…";
    const mod = await loadRenderer(); rendererModule_ = mod;
    const q = new URLSearchParams({ filename: item.filename, subfolder: item.subfolder, type: item.type });
    const r = await api.fetchApi(`/view?${q}`);
    if (!r.ok) throw new Error(`preview fetch failed: ${r.status}`);
    st.data = mod.decodeF4DP(await r.arrayBuffer()); st.background = item.background ?? null;
    st.cams = camsJson ? JSON.parse(camsJson) : null;
    slider.max = String(st.data.t - 1);
    if (!st.renderer) st.renderer = new mod.SplatRenderer(canvas);
    if (st.cams?.rig?.length) setCam(st.cams.rig[0]);
    else {
      const c = st.data.lo.map((x, i) => 0.5 * (x + st.data.hi[i]));
      st.view.target = c; st.view.dist = 1.5 * Math.hypot(...st.data.hi.map((x, i) => x - st.data.lo[i]));
    }
    showCams(st.cams ?? {}); setFrame(0);
  };
  return { root, load, state: st, onRemoved: () => { stop(); st.renderer?.dispose(); st.renderer = null; } };
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
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const item = message?.full4d_preview?.[0];
      if (item && this.full4d) this.full4d.load(item, message?.full4d_cameras?.[0]).catch((e) => {
        console.warn("[full4d] preview:", e); this.full4d.root.querySelector(".full4d-label").textContent = String(e.message ?? e);
      });
    };
    const onRemoved = nodeType.prototype.onRemoved;
    nodeType.prototype.onRemoved = function () { this.full4d?.onRemoved(); return onRemoved?.apply(this, arguments); };
  },
});
