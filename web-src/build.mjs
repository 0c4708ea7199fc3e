// Bundle renderer.js (Spark + the parts of three.js it uses) into <out>/spark_bundle.mjs, minified ESM, and write
// <out>/THIRD_PARTY_LICENSES.txt. Run through scripts/build_web.sh (npm ci first). Usage: node build.mjs <out dir>
import { build } from "esbuild";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] ?? join(here, "..", "web", "lib"));
const BUNDLED = ["@sparkjsdev/spark", "three", "fflate"]; // fflate: inlined in Spark's dist (its sort/decode worker)
const pkg = (name) => JSON.parse(readFileSync(join(here, "node_modules", name, "package.json"), "utf8"));

// Spark's WebXR button (SparkXr, never constructed by the preview) assigns caller-supplied HTML with innerHTML.
// esbuild keeps that class (static fields are assigned at module level), so rewrite the two assignments to
// textContent: the shipped bundle then has no HTML sink (tests/test_preview.py greps web/ for one).
const noHtmlSink = {
  name: "no-html-sink",
  setup(b) {
    b.onLoad({ filter: /spark\.module\.js$/ }, (args) => {
      const src = readFileSync(args.path, "utf8");
      const n = src.split(".innerHTML = ").length - 1;
      if (n !== 2) throw new Error(`expected 2 innerHTML assignments in ${args.path}, found ${n}: recheck the patch`);
      return { contents: src.replaceAll(".innerHTML = ", ".textContent = "), loader: "js" };
    });
  },
};

const versions = BUNDLED.map((n) => `${n} ${pkg(n).version}`).join(", ");
mkdirSync(out, { recursive: true });
await build({
  entryPoints: [join(here, "renderer.js")],
  outfile: join(out, "spark_bundle.mjs"),
  bundle: true, minify: true, format: "esm", target: "es2022", platform: "browser",
  legalComments: "none", logLevel: "warning", plugins: [noHtmlSink],
  banner: { js: `/*! Full4D preview renderer: ${versions} (all MIT). Licence texts: THIRD_PARTY_LICENSES.txt */` },
});
const notices = BUNDLED.map((n) => {
  const p = pkg(n);
  const text = readFileSync(join(here, "node_modules", n, "LICENSE"), "utf8").trim();
  return `${"=".repeat(78)}\n${n} ${p.version} (${p.license}) ${p.homepage ?? ""}\n${"=".repeat(78)}\n${text}\n`;
});
const head = "Third-party code bundled in spark_bundle.mjs (built by scripts/build_web.sh from web-src/).";
writeFileSync(join(out, "THIRD_PARTY_LICENSES.txt"), `${head}\n\n${notices.join("\n")}`);
