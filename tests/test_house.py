"""The house rules of src/pointwise: layers import downward only, no import circles, small files.

Each top-level module or package of ``pointwise`` belongs to one layer (:data:`LAYERS`, the
README's "Layout of the project"); a module may import from its own layer or a lower one.
Every import counts, including those inside functions and under ``TYPE_CHECKING``: a lazy
import is still a dependency. A new top-level module must be given a layer here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "src" / "pointwise"

#: layer of each top-level module or package, lowest first
LAYERS: dict[str, int] = {
    # conventions, checks and counts: numpy at most
    "_version": 0, "_moved": 0, "files": 0, "limits": 0, "problem": 0, "layout": 0,
    "activations": 0,
    "cost": 0, "layout2d": 0,
    # how it is fast, and which library computes an array
    "kernels": 1, "backends": 1,
    # the operators
    "conv": 2, "moments": 2, "reduction": 2, "conv2d": 2, "blocks": 2,
    # the explainer
    "explain": 3,
    # torch integration, then the model zoo
    "nn": 4, "models": 5,
    # the analyzer, then the tools
    "analysis": 6, "training": 7, "bench": 7,
    # the command line and the public API
    "cli": 8, "__main__": 8, "": 8,
}
MAX_PY_LINES = 400
MAX_C_LINES = 500


def _modules() -> dict[str, Path]:
    """Dotted name -> file, for every Python module under src/pointwise."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = ("pointwise", *path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The module ``name`` lies in: itself, or its longest prefix that is a module."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> set[str]:
    """Every pointwise module that ``module`` imports, anywhere in its file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            names = [base, *(f"{base}.{a.name}" for a in node.names)]
        for name in names:
            target = _resolve(name) if name.startswith("pointwise") else None
            if target and target != module:
                targets.add(target)
    return targets


def _edges() -> dict[str, set[str]]:
    """Imports between modules, leaving out a package's own parents and children: a package
    importing its parts, and a part importing its package, is how packages are built."""
    edges = {}
    for module, path in MODULES.items():
        edges[module] = {t for t in _imports(module, path)
                         if not (t.startswith(module + ".") or module.startswith(t + "."))}
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    if top not in LAYERS:
        raise AssertionError(f"expected every top-level module of pointwise in LAYERS, but "
                             f"{top!r} ({module}) has no layer; add it to tests/test_house.py")
    return LAYERS[top]


def test_no_import_circles():
    cycles = _cycles(_edges())
    assert not cycles, "import circles (move the shared piece a layer down): " + "; ".join(
        " <-> ".join(c) for c in cycles)


def test_imports_point_down_the_layers():
    upward = [f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
              for m, targets in sorted(_edges().items()) for t in sorted(targets)
              if _layer(t) > _layer(m)]
    assert not upward, "imports that point up a layer:\n" + "\n".join(upward)


@pytest.mark.parametrize("pattern, limit", [("*.py", MAX_PY_LINES), ("*.c", MAX_C_LINES),
                                            ("*.h", MAX_C_LINES)])
def test_files_stay_small(pattern, limit):
    big = {str(p.relative_to(ROOT)): n for p in sorted(ROOT.rglob(pattern))
           if (n := len(p.read_text(encoding="utf-8").splitlines())) > limit}
    assert not big, f"files over {limit} lines (split them by concept): {big}"


def test_every_c_source_is_built():
    import tomllib

    project = tomllib.loads((ROOT.parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    (ext,) = project["tool"]["setuptools"]["ext-modules"]
    listed = set(ext["sources"])
    present = {str(p.relative_to(ROOT.parents[1])) for p in ROOT.rglob("*.c")}
    assert listed == present, f"C sources not in pyproject: {present - listed}; listed but " \
                              f"missing: {listed - present}"


# --------------------------------------------------------- the checks themselves can fail
def test_the_circle_check_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_reader_sees_lazy_and_relative_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from pointwise.kernels import native\n"
                   "from . import layout\nimport pointwise.cost\n", encoding="utf-8")
    assert _imports("pointwise.explain.m", src) >= {"pointwise.kernels.native",
                                                   "pointwise.cost"}
    assert "pointwise.explain" in _imports("pointwise.explain.m", src)  # `from . import`


def test_every_module_has_a_layer():
    for module in MODULES:
        _layer(module)  # raises, naming the module, when its top level has no layer


def test_old_import_paths_warn_and_still_work():
    import importlib
    import sys

    from pointwise import _moved

    for old, new in _moved.MOVED.items():
        sys.modules.pop(old, None)
        with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
            module = importlib.import_module(old)
        target = importlib.import_module(new)
        for name in getattr(target, "__all__", ())[:3]:
            assert getattr(module, name) is getattr(target, name)
        sys.modules.pop(old, None)
