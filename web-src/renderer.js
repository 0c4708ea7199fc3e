// Entry of web/lib/spark_bundle.mjs (built by scripts/build_web.sh): what web/lib/splat_renderer.mjs uses, plus
// unpackSplat for tests/test_web_bundle.py (reads back what Spark will draw).
// Spark is a single pre-built file (its sort worker and WASM inlined), so most of it stays; esbuild drops the
// parts of three.js that nothing reaches (loaders, other renderers, addons).
export { PackedSplats, SparkRenderer, SplatMesh, setPackedSplat, unpackSplat } from "@sparkjsdev/spark";
export { Matrix4, PerspectiveCamera, Scene, WebGLRenderer } from "three";
