#!/usr/bin/env bash
# Build the lazily loaded preview renderer: web-src/ (Spark + three.js, versions pinned in package-lock.json)
# -> web/lib/spark_bundle.mjs (minified ESM) + web/lib/THIRD_PARTY_LICENSES.txt. Only .mjs goes under web/:
# the host's /extensions imports every *.js under web/ on every page. Usage: scripts/build_web.sh [out dir]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$(mkdir -p "${1:-$root/web/lib}" && cd "${1:-$root/web/lib}" && pwd)"
cd "$root/web-src"
npm ci --no-audit --no-fund --loglevel=error
node build.mjs "$out"
ls -l "$out/spark_bundle.mjs" "$out/THIRD_PARTY_LICENSES.txt"
