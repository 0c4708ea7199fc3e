// Full4D splat renderer (self-written WebGL2): sorted instanced quads with Gaussian falloff.
// Loaded lazily by ../full4d_preview.js only when a Full4DSplatPreview node exists.
// Decodes the "F4DP" buffer written by comfyui_full4d/preview.py (see docs/preview.md).

export function decodeF4DP(buf) {
  const dv = new DataView(buf);
  const magic = String.fromCharCode(dv.getUint8(0), dv.getUint8(1), dv.getUint8(2), dv.getUint8(3));
  if (magic !== "F4DP") throw new Error("not an F4DP buffer");
  const n = dv.getUint32(8, true), t = dv.getUint32(12, true), fps = dv.getFloat32(16, true);
  const lo = [0, 1, 2].map((i) => dv.getFloat32(20 + 4 * i, true));
  const hi = [0, 1, 2].map((i) => dv.getFloat32(32 + 4 * i, true));
  const smin = dv.getFloat32(44, true), smax = dv.getFloat32(48, true);
  const frames = [];
  let off = 52;
  for (let f = 0; f < t; f++) {
    const pos = new Uint16Array(buf.slice(off, off + n * 6)); off += n * 6;
    const rgba = new Uint8Array(buf, off, n * 4); off += n * 4;
    const sc = new Uint8Array(buf, off, n * 3); off += n * 3;
    const q = new Int8Array(buf, off, n * 4); off += n * 4;
    const P = new Float32Array(n * 3), C = new Float32Array(n * 6);
    for (let i = 0; i < n; i++) {
      for (let k = 0; k < 3; k++) P[3 * i + k] = lo[k] + (pos[3 * i + k] / 65535) * (hi[k] - lo[k]);
      const s = [0, 1, 2].map((k) => Math.exp(smin + (sc[3 * i + k] / 255) * (smax - smin)));
      let w = q[4 * i], x = q[4 * i + 1], y = q[4 * i + 2], z = q[4 * i + 3];
      const l = Math.hypot(w, x, y, z) || 1; w /= l; x /= l; y /= l; z /= l;
      const R = [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)];
      // Sigma = R S S R^T, stored as xx xy xz yy yz zz
      const M = [0, 1, 2].map((r) => [0, 1, 2].map((c) => R[3 * r + c] * s[c]));
      const d = (a, b) => M[a][0] * M[b][0] + M[a][1] * M[b][1] + M[a][2] * M[b][2];
      C.set([d(0, 0), d(0, 1), d(0, 2), d(1, 1), d(1, 2), d(2, 2)], 6 * i);
    }
    frames.push({ P, C, rgba: new Uint8Array(rgba) });
  }
  return { n, t, fps, lo, hi, frames };
}

const VS = `#version 300 es
precision highp float;
in vec2 corner; in vec3 pos; in vec3 cA; in vec3 cB; in vec4 rgba;
uniform mat3 R; uniform vec3 T; uniform vec2 focal; uniform vec2 size;
out vec4 vColor; out vec2 vUV;
void main() {
  vec3 pc = R * pos + T;
  if (pc.z < 0.01) { gl_Position = vec4(0.0, 0.0, 2.0, 1.0); return; }
  mat3 S = mat3(cA.x, cA.y, cA.z, cA.y, cB.x, cB.y, cA.z, cB.y, cB.z);
  mat3 J = mat3(focal.x / pc.z, 0.0, 0.0, 0.0, focal.y / pc.z, 0.0,
                -focal.x * pc.x / (pc.z * pc.z), -focal.y * pc.y / (pc.z * pc.z), 0.0);
  mat3 W = J * R;
  mat3 cov = W * S * transpose(W);
  float a = cov[0][0] + 0.3, b = cov[0][1], c = cov[1][1] + 0.3;
  float mid = 0.5 * (a + c), rad = length(vec2(0.5 * (a - c), b));
  float l1 = mid + rad, l2 = max(mid - rad, 0.1);
  vec2 v1 = normalize(abs(b) > 1e-6 ? vec2(b, l1 - a) : (a >= c ? vec2(1.0, 0.0) : vec2(0.0, 1.0)));
  vec2 v2 = vec2(-v1.y, v1.x);
  vec2 px = focal * pc.xy / pc.z + 0.5 * size;
  vec2 off = corner * 3.0 * (v1 * sqrt(l1) + 0.0) * 1.0;
  vec2 p = px + corner.x * 3.0 * sqrt(l1) * v1 + corner.y * 3.0 * sqrt(l2) * v2;
  gl_Position = vec4(2.0 * p.x / size.x - 1.0, 1.0 - 2.0 * p.y / size.y, 0.0, 1.0);
  vColor = rgba; vUV = corner * 3.0;
}`;
const FS = `#version 300 es
precision highp float;
in vec4 vColor; in vec2 vUV; out vec4 o;
void main() {
  float g = exp(-0.5 * dot(vUV, vUV)) * vColor.a;
  if (g < 1.0 / 255.0) discard;
  o = vec4(vColor.rgb * g, g);
}`;

function sh(gl, type, src) {
  const s = gl.createShader(type); gl.shaderSource(s, src); gl.compileShader(s);
  if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s));
  return s;
}

export class SplatRenderer {
  constructor(canvas) {
    this.canvas = canvas;
    const gl = canvas.getContext("webgl2", { preserveDrawingBuffer: true, premultipliedAlpha: true });
    if (!gl) throw new Error("WebGL2 unavailable");
    this.gl = gl;
    const p = gl.createProgram();
    gl.attachShader(p, sh(gl, gl.VERTEX_SHADER, VS)); gl.attachShader(p, sh(gl, gl.FRAGMENT_SHADER, FS));
    gl.linkProgram(p);
    if (!gl.getProgramParameter(p, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(p));
    this.p = p; gl.useProgram(p);
    this.vao = gl.createVertexArray(); gl.bindVertexArray(this.vao);
    const quad = gl.createBuffer(); gl.bindBuffer(gl.ARRAY_BUFFER, quad);
    gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([-1, -1, 1, -1, -1, 1, 1, 1]), gl.STATIC_DRAW);
    const loc = (n) => gl.getAttribLocation(p, n);
    gl.enableVertexAttribArray(loc("corner")); gl.vertexAttribPointer(loc("corner"), 2, gl.FLOAT, false, 0, 0);
    this.buf = {};
    for (const [name, k, type, norm] of [["pos", 3, gl.FLOAT, false], ["cA", 3, gl.FLOAT, false],
      ["cB", 3, gl.FLOAT, false], ["rgba", 4, gl.UNSIGNED_BYTE, true]]) {
      const b = gl.createBuffer(); gl.bindBuffer(gl.ARRAY_BUFFER, b);
      const l = loc(name); gl.enableVertexAttribArray(l); gl.vertexAttribPointer(l, k, type, norm, 0, 0);
      gl.vertexAttribDivisor(l, 1); this.buf[name] = b;
    }
    this.u = Object.fromEntries(["R", "T", "focal", "size"].map((n) => [n, gl.getUniformLocation(p, n)]));
  }

  // frame: decoded frame; cam: {R: row-major 3x3 world-to-camera (OpenCV), T: [3], fovY (deg)}
  render(frame, cam) {
    const gl = this.gl, W = this.canvas.width, H = this.canvas.height;
    const n = frame.rgba.length / 4, P = frame.P, C = frame.C, R = cam.R, T = cam.T;
    const depth = new Float32Array(n);
    for (let i = 0; i < n; i++) depth[i] = R[6] * P[3 * i] + R[7] * P[3 * i + 1] + R[8] * P[3 * i + 2] + T[2];
    const idx = new Uint32Array(n); for (let i = 0; i < n; i++) idx[i] = i;
    idx.sort((a, b) => depth[b] - depth[a]); // back to front
    const pos = new Float32Array(3 * n), cA = new Float32Array(3 * n), cB = new Float32Array(3 * n);
    const col = new Uint8Array(4 * n);
    for (let j = 0; j < n; j++) {
      const i = idx[j];
      pos[3 * j] = P[3 * i]; pos[3 * j + 1] = P[3 * i + 1]; pos[3 * j + 2] = P[3 * i + 2];
      cA[3 * j] = C[6 * i]; cA[3 * j + 1] = C[6 * i + 1]; cA[3 * j + 2] = C[6 * i + 2];
      cB[3 * j] = C[6 * i + 3]; cB[3 * j + 1] = C[6 * i + 4]; cB[3 * j + 2] = C[6 * i + 5];
      for (let k = 0; k < 4; k++) col[4 * j + k] = frame.rgba[4 * i + k];
    }
    for (const [name, data] of [["pos", pos], ["cA", cA], ["cB", cB], ["rgba", col]]) {
      gl.bindBuffer(gl.ARRAY_BUFFER, this.buf[name]); gl.bufferData(gl.ARRAY_BUFFER, data, gl.DYNAMIC_DRAW);
    }
    const f = 0.5 * H / Math.tan((cam.fovY * Math.PI) / 360);
    gl.viewport(0, 0, W, H); gl.clearColor(0.08, 0.08, 0.1, 1); gl.clear(gl.COLOR_BUFFER_BIT);
    gl.enable(gl.BLEND); gl.blendFunc(gl.ONE, gl.ONE_MINUS_SRC_ALPHA);
    gl.useProgram(this.p); gl.bindVertexArray(this.vao);
    // GLSL mat3 is column-major: pass R transposed flag false with column-major data
    gl.uniformMatrix3fv(this.u.R, false, [R[0], R[3], R[6], R[1], R[4], R[7], R[2], R[5], R[8]]);
    gl.uniform3fv(this.u.T, T); gl.uniform2f(this.u.focal, f, f); gl.uniform2f(this.u.size, W, H);
    gl.drawArraysInstanced(gl.TRIANGLE_STRIP, 0, 4, n);
  }
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
