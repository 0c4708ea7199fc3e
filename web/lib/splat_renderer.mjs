// Full4D splat renderer: decodes the "F4DP" buffer written by comfyui_full4d/preview.py (docs/preview.md) and
// draws it with Spark (@sparkjsdev/spark on three.js, bundled in ./spark_bundle.mjs by scripts/build_web.sh).
// Loaded lazily by ../full4d_preview.js only when a Full4DSplatPreview node gets data; this module imports the
// bundle (3 MB) only when a SplatRenderer is created, so decodeF4DP also runs in node without a DOM.
// Time: one Spark SplatMesh per frame (built on first use, the rest in the background); scrubbing the time
// slider only switches which mesh is visible.

const BUNDLE_URL = new URL("./spark_bundle.mjs", import.meta.url).href;
let bundle = null;
const loadBundle = () => (bundle ??= import(BUNDLE_URL));

// Sigma = R S S R^T of splat i, stored as xx xy xz yy yz zz (R from the unit quaternion wxyz).
function covariances(S, Q, n) {
  const C = new Float32Array(n * 6);
  for (let i = 0; i < n; i++) {
    let w = Q[4 * i], x = Q[4 * i + 1], y = Q[4 * i + 2], z = Q[4 * i + 3];
    const l = Math.hypot(w, x, y, z) || 1; w /= l; x /= l; y /= l; z /= l;
    const R = [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
      2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
      2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)];
    const M = [0, 1, 2].map((r) => [0, 1, 2].map((c) => R[3 * r + c] * S[3 * i + c]));
    const d = (a, b) => M[a][0] * M[b][0] + M[a][1] * M[b][1] + M[a][2] * M[b][2];
    C.set([d(0, 0), d(0, 1), d(0, 2), d(1, 1), d(1, 2), d(2, 2)], 6 * i);
  }
  return C;
}

// Positions (n*3 f32) and scales (n*3 f32) of a frame, from its quantised planes (docs/preview.md, F4DP v1).
function positions({ pos, lo, hi }) {
  const P = new Float32Array(pos.length / 2);
  for (let i = 0; i < P.length; i++) {
    const k = i % 3;
    P[i] = lo[k] + ((pos[2 * i] | (pos[2 * i + 1] << 8)) / 65535) * (hi[k] - lo[k]);
  }
  return P;
}
const scales = ({ sc, scaleLut }) => Float32Array.from(sc, (v) => scaleLut[v]);

// Returns {n, t, fps, lo, hi, frames}. Frame f keeps views into buf (no copies): pos (n*6 u8, u16 LE positions),
// rgba (n*4 u8), sc (n*3 u8 log-scale codes), Q (n*4 i8 quaternion wxyz x127); P, S (n*3 f32 positions, scales)
// and C (n*6 f32 covariance xx xy xz yy yz zz) are computed on first access. center: the AABB centre; set: the
// decode the frame belongs to.
export function decodeF4DP(buf) {
  const dv = new DataView(buf);
  const magic = String.fromCharCode(dv.getUint8(0), dv.getUint8(1), dv.getUint8(2), dv.getUint8(3));
  if (magic !== "F4DP") throw new Error("not an F4DP buffer");
  const n = dv.getUint32(8, true), t = dv.getUint32(12, true), fps = dv.getFloat32(16, true);
  if (buf.byteLength < 52 + 17 * n * t) throw new Error(`F4DP buffer too short for ${n} splats x ${t} frames`);
  const lo = [0, 1, 2].map((i) => dv.getFloat32(20 + 4 * i, true));
  const hi = [0, 1, 2].map((i) => dv.getFloat32(32 + 4 * i, true));
  const smin = dv.getFloat32(44, true), smax = dv.getFloat32(48, true);
  const center = lo.map((x, i) => 0.5 * (x + hi[i]));
  const scaleLut = Float32Array.from({ length: 256 }, (_, k) => Math.exp(smin + (k / 255) * (smax - smin)));
  const set = {}, frames = [];
  let off = 52;
  const take = (Type, bytes) => { const a = new Type(buf, off, bytes); off += bytes; return a; };
  for (let f = 0; f < t; f++) {
    const frame = { pos: take(Uint8Array, n * 6), rgba: take(Uint8Array, n * 4), sc: take(Uint8Array, n * 3),
      Q: take(Int8Array, n * 4), lo, hi, scaleLut, center, set };
    let P = null, S = null, C = null;
    Object.defineProperties(frame, {
      P: { get: () => (P ??= positions(frame)) },
      S: { get: () => (S ??= scales(frame)) },
      C: { get: () => (C ??= covariances(frame.S, frame.Q, n)) },
    });
    frames.push(frame);
  }
  return { n, t, fps, lo, hi, frames };
}

// Spark's packed splat (16 B: RGBA u8, centre float16 x3, log-scales u8 x3, quaternion 24-bit octahedral) of every
// splat of a frame, B = the bundle module. Positions are relative to frame.center: float16 centres keep their
// precision when the mesh is placed at the centre instead of carrying world coordinates.
export function packFrame(B, frame) {
  const { Q, rgba, center } = frame, n = rgba.length / 4, P = positions(frame), S = scales(frame);
  const packed = new Uint32Array(4 * n);
  for (let i = 0; i < n; i++) { // quaternion: Spark normalises the x127 codes itself (xyzw order)
    B.setPackedSplat(packed, i, P[3 * i] - center[0], P[3 * i + 1] - center[1], P[3 * i + 2] - center[2],
      S[3 * i], S[3 * i + 1], S[3 * i + 2], Q[4 * i + 1], Q[4 * i + 2], Q[4 * i + 3], Q[4 * i],
      rgba[4 * i + 3] / 255, rgba[4 * i] / 255, rgba[4 * i + 1] / 255, rgba[4 * i + 2] / 255);
  }
  return packed;
}

// [r, g, b] in [0, 1] -> 0xRRGGBB
const rgbHex = (c) => c.reduce((h, x) => h * 256 + Math.round(255 * Math.min(1, Math.max(0, Number(x) || 0))), 0);

export class SplatRenderer {
  constructor(canvas) {
    this.canvas = canvas;
    this.set = null; // decode whose frames the meshes below belong to
    this.meshes = new Map(); // frame -> SplatMesh
    this.waiters = [];
    this.queued = false;
    this.seq = 0;
    this.ready = loadBundle().then((B) => {
      this.B = B;
      // preserveDrawingBuffer: the browser test reads the canvas back with toDataURL()
      this.gl = new B.WebGLRenderer({ canvas, antialias: false, preserveDrawingBuffer: true });
      this.gl.setPixelRatio(1);
      this.gl.setClearColor(0x14141a, 1);
      this.scene = new B.Scene();
      this.camera = new B.PerspectiveCamera(50, 1, 0.01, 1000);
      // Spark sorts in a worker; when a sort lands it asks for a redraw (onDirty). preBlurAmount 0.3 and z-depth
      // sorting match how the 4DGS fit renders (gsplat "classic", eps2d = 0.3; comfyui_full4d/gaussians/rasterize.py).
      this.spark = new B.SparkRenderer({ renderer: this.gl, onDirty: () => this.schedule(), preBlurAmount: 0.3,
        sortRadial: false });
      this.scene.add(this.spark);
    });
  }

  mesh(frame) {
    if (frame.set !== this.set) this.clear();
    this.set = frame.set;
    let m = this.meshes.get(frame);
    if (!m) {
      const n = frame.rgba.length / 4;
      const packedSplats = new this.B.PackedSplats({ packedArray: packFrame(this.B, frame), numSplats: n });
      m = new this.B.SplatMesh({ packedSplats });
      m.position.set(...frame.center);
      m.visible = false;
      this.scene.add(m);
      this.meshes.set(frame, m);
    }
    return m;
  }

  clear() {
    clearTimeout(this.prebuild);
    for (const m of this.meshes.values()) { this.scene.remove(m); m.packedSplats?.dispose(); m.dispose(); }
    this.meshes.clear();
  }

  // frame: decoded frame; cam: {R: row-major 3x3 world-to-camera (OpenCV), T: [3]} and either the pinhole of the
  // camera's own image {K: [fx, fy, cx, cy], width, height} (shown as canvasIntrinsics fits it) or {fovY} (deg,
  // vertical, for the canvas itself); background: [r, g, b] in [0, 1] where no splat covers a pixel (the scene's
  // own, as its renders), null: the widget's. Resolves once the frame is on the canvas with Spark's sort for
  // this view.
  async render(frame, cam, allFrames = null, background = null) {
    const seq = ++this.seq;
    await this.ready;
    this.gl.setClearColor(background ? rgbHex(background) : 0x14141a, 1);
    const shown = this.mesh(frame);
    await shown.initialized;
    if (seq !== this.seq) return; // a newer render() call draws instead
    for (const m of this.meshes.values()) m.visible = m === shown;
    const { R, T } = cam, W = this.canvas.width, H = this.canvas.height;
    if (W < 1 || H < 1) return; // collapsed node: nothing to draw
    if (!this.size || this.size[0] !== W || this.size[1] !== H) { this.gl.setSize(W, H, false); this.size = [W, H]; }
    new this.B.Matrix4().set(...threeCameraToWorld(R, T))
      .decompose(this.camera.position, this.camera.quaternion, this.camera.scale);
    const k = cam.K ? canvasIntrinsics(cam, W, H) : fovIntrinsics(cam.fovY, W, H);
    const c = this.camera; // the projection is set from K, never from fov / aspect (no updateProjectionMatrix)
    c.fov = (360 / Math.PI) * Math.atan(0.5 * H / k[1]); c.aspect = W / H;
    c.projectionMatrix.set(...projectionFromK(k, W, H, c.near, c.far));
    c.projectionMatrixInverse.copy(c.projectionMatrix).invert();
    if (allFrames) this.prebuildRest(allFrames);
    this.changed = true;
    return new Promise((resolve, reject) => { this.waiters.push({ resolve, reject }); this.schedule(); });
  }

  // Build the other frames' meshes one per task, so later scrubbing only switches visibility.
  prebuildRest(frames) {
    clearTimeout(this.prebuild);
    const todo = frames.filter((f) => !this.meshes.has(f));
    const step = () => {
      const f = todo.shift();
      if (!f || f.set !== this.set) return;
      this.mesh(f);
      this.prebuild = setTimeout(step, 0);
    };
    this.prebuild = setTimeout(step, 0);
  }

  // One paint per animation frame at most. After a change (frame or view) Spark first regenerates and sorts the
  // visible splats (update: no drawing), so the paint shows the new state instead of the old sort order.
  schedule() {
    if (this.queued) return;
    this.queued = true;
    requestAnimationFrame(async () => {
      try {
        if (this.disposed) return;
        if (this.changed) { this.changed = false; await this.spark.update({ scene: this.scene, camera: this.camera }); }
        this.queued = false;
        this.gl.render(this.scene, this.camera);
        const s = this.spark; // settled: no sort running or pending, and the sorted splats are the displayed ones
        if (this.changed) this.schedule(); // changed again while sorting
        else if (!s.sorting && !s.sortDirty && s.display === s.current) {
          this.waiters.splice(0).forEach((w) => w.resolve());
        }
      } catch (e) {
        this.queued = false;
        this.waiters.splice(0).forEach((w) => w.reject(e));
      }
    });
  }

  // Frees the GPU memory (node removed); the renderer is unusable afterwards.
  dispose() {
    this.disposed = true;
    this.ready.then(() => { this.clear(); this.spark.dispose(); this.gl.dispose(); }).catch(() => {});
  }
}

// OpenCV world-to-camera (R row-major 3x3, T) -> three.js camera-to-world, row-major 4x4 (Matrix4.set order).
// OpenCV cameras look along +z with y down, three.js cameras along -z with y up:
// camera-to-world = [R^T diag(1, -1, -1) | -R^T T].
export function threeCameraToWorld(R, T) {
  const c = [0, 1, 2].map((k) => -(R[k] * T[0] + R[3 + k] * T[1] + R[6 + k] * T[2]));
  return [R[0], -R[3], -R[6], c[0], R[1], -R[4], -R[7], c[1], R[2], -R[5], -R[8], c[2], 0, 0, 0, 1];
}

// The camera's image ({K: [fx, fy, cx, cy] in pixels of its width x height image}) in a W x H canvas of another
// aspect: scaled by s = min(W / width, H / height) and centred ("contain"). A wider canvas keeps the vertical fov
// and shows more of the scene left and right; a narrower one widens the vertical fov so that the whole horizontal
// fov fits and shows more above and below. Either way the centred width*s x height*s rectangle of the canvas is
// exactly the camera's image. Returns [fx, fy, cx, cy] in canvas pixels.
export function canvasIntrinsics({ K, width, height }, W, H) {
  const s = Math.min(W / width, H / height);
  return [s * K[0], s * K[1], s * K[2] + 0.5 * (W - s * width), s * K[3] + 0.5 * (H - s * height)];
}

// [fx, fy, cx, cy] of a W x H canvas with vertical fov fovY (deg) and the principal point in its middle.
export function fovIntrinsics(fovY, W, H) {
  const f = 0.5 * H / Math.tan((Math.PI / 360) * fovY);
  return [f, f, 0.5 * W, 0.5 * H];
}

// three.js projection (row-major 4x4, Matrix4.set order) of the OpenCV pinhole [fx, fy, cx, cy] of a W x H canvas
// (pixel (u, v) covers [u, u+1] x [v, v+1], v down): NDC x = 2u/W - 1, NDC y = 1 - 2v/H, OpenGL depth in [near, far].
export function projectionFromK([fx, fy, cx, cy], W, H, near, far) {
  return [2 * fx / W, 0, 1 - 2 * cx / W, 0,
    0, 2 * fy / H, 2 * cy / H - 1, 0,
    0, 0, -(far + near) / (far - near), -2 * far * near / (far - near),
    0, 0, -1, 0];
}

// OpenCV look-at with world up = -y: returns {R (row-major world-to-camera), T}.
export function lookAt(eye, target, up = [0, -1, 0]) {
  const sub = (a, b) => a.map((v, i) => v - b[i]);
  const norm = (a) => { const l = Math.hypot(...a) || 1; return a.map((v) => v / l); };
  const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
  const z = norm(sub(target, eye));
  const down = up.map((v) => -v);
  let x = cross(down, z); if (Math.hypot(...x) < 1e-9) x = [1, 0, 0]; x = norm(x);
  const y = cross(z, x);
  const R = [...x, ...y, ...z];
  const T = [0, 1, 2].map((r) => -(R[3 * r] * eye[0] + R[3 * r + 1] * eye[1] + R[3 * r + 2] * eye[2]));
  return { R, T };
}
