"""No error a client sees carries an absolute server path (issue 31).

``tests/host.py`` records every error text a ``Server`` of this session sent to its client: the /prompt answer of a
rejected prompt, each ``execution_error`` on the websocket and in a failed prompt's history (all but the
traceback, which the host formats itself from its own and the node's source files). This test runs last
(``conftest.py``) and checks all of them: the reliability suite's bad inputs, cancels, load and network runs, and
any server test that ran before. A text may repeat what the client sent (a path it typed comes back in the
message); apart from that, no server folder (the server's base, the ComfyUI host, this repository, the Python
environment, the home and temp folders) and nothing shaped like an absolute path (``/a/b``) may appear in it.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

import pytest

from host import CLIENT_ERRORS, HOST_DIR, ROOT, ClientError

ABSOLUTE = re.compile(r"(?<![\w.~/-])/(?:[\w.@+-]+/)+[\w.@+-]*")  # /a/b..., not a/b, ../a/b or a URL's path


def _server_folders(base: Path) -> set[str]:
    folders = {base, HOST_DIR, ROOT, Path(sys.prefix), Path(sys.base_prefix), Path.home(), Path(tempfile.gettempdir())}
    out = set()
    for f in folders:
        out |= {str(Path(f).absolute()), os.path.realpath(f)}
    return {f for f in out if f not in ("/", "")}


def leaks(err: ClientError) -> list[str]:
    """The server folders and absolute-looking paths in ``err.text`` beyond what the client sent."""
    text = err.text
    for s in sorted((s for s in err.sent if "/" in s and len(s) > 1), key=len, reverse=True):
        text = text.replace(s, "<sent>")
    return sorted({f for f in _server_folders(err.base) if f in text} | set(ABSOLUTE.findall(text)))


def test_leak_detector_on_hand_made_texts(tmp_path):
    """The detector flags a server folder and any absolute path, and passes relative names and what was sent."""
    sent = frozenset({"/etc/hostname", "../../etc/hostname"})
    ok = ["adapter file 'models/full4d/x.safetensors' was made for another model size",
          "file='/etc/hostname': give a path relative to the input folder", "file='../../etc/hostname' leads outside",
          "progress 3/4 at 1/255, see http://127.0.0.1:8188/view?x=1", "scene/export_00001/frame_0000.ply"]
    bad = [f"adapter file '{tmp_path}/models/full4d/x.safetensors' was made for another model size",
           "checkpoint_path '/srv/comfy/temp/full4d_4dgs/ab.safetensors' is not readable",
           f"{ROOT}/comfyui_full4d/gaussians/fit.py failed"]
    assert [leaks(ClientError("t", t, sent, tmp_path)) for t in ok] == [[]] * len(ok)
    assert all(leaks(ClientError("t", t, sent, tmp_path)) for t in bad)


def test_no_server_paths_in_client_errors():
    if not CLIENT_ERRORS:
        pytest.skip("no server sent an error to its client in this session: run it with the reliability suite "
                    "(tests/reliability), whose errors it checks")
    bad = [(e.where, found, e.text[:400]) for e in CLIENT_ERRORS for found in [leaks(e)] if found]
    print(f"{len(CLIENT_ERRORS)} client-visible error texts checked")
    assert not bad, "\n".join(map(str, bad))
