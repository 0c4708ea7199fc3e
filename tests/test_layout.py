"""The engine's layout rules (docs/architecture.md): one folder per pipeline stage, imports that run down
the stages only, no import circle, ComfyUI imported only in ``host/``, no module over 450 lines.

Every ``import`` statement that runs counts, the ones inside functions too: a lazy import that closes a circle
is still a circle (it only moves the failure to run time). Imports under ``if TYPE_CHECKING:`` never run and
are left out."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "comfyui_full4d"

# Lower rank = lower stage. A package may import its own modules and packages of a strictly lower rank.
RANK = {"common": 0, "geometry": 1, "diffusion": 1, "media": 2, "gaussians": 3, "host": 4, "training": 5,
        "client": 5}
HOST_ONLY = ("comfy", "comfy_api", "comfy_extras", "comfy_execution", "folder_paths", "server", "execution",
             "nodes", "latent_preview", "node_helpers")
MAX_LINES = 450


def _modules() -> dict[str, Path]:
    out = {}
    for f in PKG.rglob("*.py"):
        parts = list(f.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


MODULES = _modules()


def _runtime_nodes(tree: ast.AST):
    """``ast.walk`` without the bodies of ``if TYPE_CHECKING:`` blocks."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and getattr(child.test, "id", getattr(child.test, "attr", None)) == "TYPE_CHECKING":
                todo.extend(child.orelse)
            else:
                todo.append(child)


def _imports(name: str, path: Path) -> list[tuple[str, int]]:
    """(absolute imported module, line) for every import in the file; ``from p import x`` names the
    submodule ``p.x`` when that is a module of the package, else ``p``."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rsplit(".", 1)[0]
    out = []
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in MODULES]
            out += [(s, node.lineno) for s in subs] or [(mod, node.lineno)]
    return out


def _stage(mod: str) -> str | None:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "comfyui_full4d" else None


def _graph() -> dict[str, set[str]]:
    return {m: {i for i, _ in _imports(m, p) if i in MODULES and i != m} for m, p in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (module -> imported modules) as a list of modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (c := visit(n)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_find_cycle_sees_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circle():
    cycle = find_cycle(_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_every_stage_is_a_documented_package():
    stages = {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert stages == set(RANK), f"stage packages {sorted(stages)} != RANK {sorted(RANK)}"
    loose = sorted(p.name for p in PKG.glob("*.py") if p.name != "__init__.py")
    assert not loose, f"modules outside a stage folder: {loose}"
    for s in stages:
        doc = ast.get_docstring(ast.parse((PKG / s / "__init__.py").read_text()))
        assert doc and len(doc) > 80, f"comfyui_full4d/{s}/__init__.py needs a paragraph saying what it owns"


def test_imports_run_down_the_stages():
    bad = []
    for m, p in MODULES.items():
        src = _stage(m)
        for i, line in _imports(m, p):
            dst = _stage(i)
            if src is None or dst is None or src == dst:
                continue
            if dst not in RANK or RANK[dst] >= RANK[src]:
                bad.append(f"{p.relative_to(ROOT)}:{line} ({src}) imports {i} ({dst})")
    assert not bad, "imports against the stage order:\n" + "\n".join(bad)


def test_comfyui_imported_only_in_host():
    bad = []
    for m, p in MODULES.items():
        if _stage(m) == "host":
            continue
        for i, line in _imports(m, p):
            if i.split(".")[0] in HOST_ONLY:
                bad.append(f"{p.relative_to(ROOT)}:{line} imports {i}")
    assert not bad, "ComfyUI imported outside comfyui_full4d/host/:\n" + "\n".join(bad)


@pytest.mark.parametrize("folder", ["comfyui_full4d", "nodes"])
def test_no_module_over_the_line_limit(folder):
    long = {str(f.relative_to(ROOT)): n for f in (ROOT / folder).rglob("*.py")
            if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
