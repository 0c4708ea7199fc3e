"""Static and runtime security checks across the pack (issue: reliability and security)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from host import ROOT

PY_DIRS = [ROOT / "comfyui_full4d", ROOT / "nodes", ROOT / "scripts", ROOT / "__init__.py"]


def _py_files():
    for d in PY_DIRS:
        yield from ([d] if d.is_file() else sorted(d.rglob("*.py")))


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else (f.attr if isinstance(f, ast.Attribute) else "")
            mod = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            yield node, mod, name


def test_no_eval_exec_pickle_or_unsafe_torch_load():
    problems = []
    for path in _py_files():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                if any(n and n.split(".")[0] in ("pickle", "dill", "cloudpickle", "marshal", "shelve") for n in names):
                    problems.append(f"{path}:{node.lineno} imports a pickle-like module")
        for node, mod, name in _calls(tree):
            if isinstance(node.func, ast.Name) and name in ("eval", "exec"):  # the builtins, not Module.eval()
                problems.append(f"{path}:{node.lineno} calls {name}()")
            if mod == "torch" and name == "load":
                kw = {k.arg: k.value for k in node.keywords}
                if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                    problems.append(f"{path}:{node.lineno} torch.load without weights_only=True")
            if mod in ("np", "numpy") and name == "load":
                kw = {k.arg: k.value for k in node.keywords}
                if isinstance(kw.get("allow_pickle"), ast.Constant) and kw["allow_pickle"].value is True:
                    problems.append(f"{path}:{node.lineno} numpy.load(allow_pickle=True)")
            if mod == "subprocess" or (mod == "os" and name in ("system", "popen")):
                if path.parent.name != "scripts" and path.name != "run.py":
                    problems.append(f"{path}:{node.lineno} runs a subprocess at run time")
    assert problems == [], "\n".join(problems)


def test_no_runtime_pip_or_downloads_in_the_pack():
    # invocations, not messages telling the user what to install
    pattern = re.compile(r"pip\.main|['\"]-m['\"],\s*['\"]pip['\"]|pip\._internal|urlretrieve|hf_hub_download|"
                         r"snapshot_download|from_pretrained\(|torch\.hub\.")
    hits = [f"{p}:{i + 1}" for p in _py_files() if p.parent.name != "scripts" and p.name != "run.py"
            for i, line in enumerate(p.read_text().splitlines()) if pattern.search(line)]
    assert hits == []


def test_web_widget_never_uses_html_sinks():
    sinks = re.compile(r"\.innerHTML\s*=|\.outerHTML\s*=|insertAdjacentHTML|document\.write\(|\beval\(|new Function\(")
    files = [p for p in (ROOT / "web").rglob("*.js") if "vendor" not in p.parts]
    hits = [f"{p}:{i + 1}" for p in files for i, line in enumerate(p.read_text().splitlines()) if sinks.search(line)]
    assert hits == [], hits


def test_netguard_blocks_outbound_but_not_loopback(tmp_path):
    import os
    import subprocess
    import sys

    log = tmp_path / "net.log"
    code = ("import socket\n"
            "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)\n"
            "c = socket.create_connection(s.getsockname(), timeout=2); c.close()\n"
            "try:\n    socket.create_connection(('192.0.2.1', 80), timeout=2)\nexcept PermissionError:\n    print('blocked')\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent / "netguard"), "FULL4D_NETGUARD_LOG": str(log)}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "blocked", r.stderr
    assert "192.0.2.1" in log.read_text()
