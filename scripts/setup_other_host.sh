#!/usr/bin/env bash
# A venv for running the suite against another ComfyUI checkout (docs/compatibility.md):
#   bash scripts/setup_other_host.sh /path/to/ComfyUI /path/to/venv
#   FULL4D_TEST_HOST=/path/to/ComfyUI /path/to/venv/bin/python scripts/run_tests.py tests -q
# It installs the test pins of torch + torchvision, that host's own requirements.txt (its frontend
# package included; torch lines dropped), the pack's [test] extras and DA3 (as scripts/setup.sh does).
# Nothing of the host is copied into this repository (ComfyUI is GPL-3.0).
set -euo pipefail
HOST_DIR="$(cd "${1:?usage: setup_other_host.sh HOST_DIR VENV_DIR}" && pwd)"
VENV="${2:?usage: setup_other_host.sh HOST_DIR VENV_DIR}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
[ -f "$HOST_DIR/main.py" ] || { echo "no main.py in $HOST_DIR: not a ComfyUI checkout" >&2; exit 2; }

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
PINS=("torch==2.14.1" "torchvision==0.29.1")

# The host's requirements without torch / torchvision / torchaudio (pinned or absent here) and the
# optional GL packages (only the GLSL nodes need them; they fail to import without, and are logged).
REQ="$(mktemp)"
trap 'rm -f "$REQ"' EXIT
grep -vE '^\s*(#|$)' "$HOST_DIR/requirements.txt" \
  | grep -viE '^(torch|torchvision|torchaudio)([<>=~ ]|$)|^(PyOpenGL|comfy-angle)' > "$REQ"
echo "[setup-host] $HOST_DIR ($(wc -l < "$REQ") requirements) -> $VENV"
"${PIP[@]}" "${PINS[@]}"
"${PIP[@]}" "${PINS[@]}" -r "$REQ" imageio-ffmpeg
# torchaudio: newer hosts import it at start; no release is built for torch 2.14.1, and 2.11.1 without
# its deps imports and resamples beside it (checked with 0.33.0).
if grep -qiE '^torchaudio' "$HOST_DIR/requirements.txt"; then
  "${PIP[@]}" --no-deps "torchaudio==2.11.1"
fi
"${PIP[@]}" "${PINS[@]}" -e "$ROOT[test]"
"${PIP[@]}" --no-deps "depth-anything-3==0.1.1"
"${PIP[@]}" omegaconf addict
echo "[setup-host] ok: FULL4D_TEST_HOST=$HOST_DIR $VENV/bin/python scripts/run_tests.py tests"
