"""Regenerate the UI graphs workflows/<title>.json from their API twins workflows/api/<name>_api.json (the title:
TEMPLATES in comfyui_full4d/client/workflow.py; UI files of no API twin are removed).

Starts the real host (from scripts/setup.sh) to read /object_info, so widget order and socket
types are the server's own. Run after changing a node's inputs:  .venv/bin/python scripts/make_workflows.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))

from comfyui_full4d.common.io import write_text
from comfyui_full4d.client.run import free_port, launch_server, stop_server  # noqa: E402
from comfyui_full4d.client.workflow import api_to_ui, ui_stem  # noqa: E402


def object_info() -> dict:
    base = Path(tempfile.mkdtemp(prefix="full4d-wf-"))
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "comfyui-full4d").symlink_to(ROOT, target_is_directory=True)
    port = free_port()
    proc = launch_server(ROOT / ".cache" / "comfyui", base, port, base / "server.log")
    try:
        return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/object_info", timeout=60).read())
    finally:
        stop_server(proc)


def main() -> int:
    info = object_info()
    written = set()
    for api in sorted((ROOT / "workflows" / "api").glob("*_api.json")):
        ui = api_to_ui(json.loads(api.read_text()), info)
        dest = ROOT / "workflows" / f"{ui_stem(api.name[:-len('_api.json')])}.json"
        write_text(dest, json.dumps(ui, indent=1) + "\n")
        written.add(dest)
        print(f"wrote {dest.relative_to(ROOT)}")
    for stale in sorted(set((ROOT / "workflows").glob("*.json")) - written):
        stale.unlink()
        print(f"removed {stale.relative_to(ROOT)} (no API twin)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
