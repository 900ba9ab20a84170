"""The floor plan the imports obey (README, Layout): dependencies point down, never up or round.

Floors, bottom to top: ``config``/``errors``/``io``/``sampling`` → ``targets`` → ``drafter`` →
``decoding`` → ``load`` → ``data``/``train``/``eval`` → ``viz`` → ``cli`` (and ``app.py``). A module
may import its own floor or any floor below; imports of ``dspark_viz`` modules stand at module top
(so a module's dependencies are visible at its top), and the module graph has no circle.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "dspark_viz"

FLOORS = {
    "dspark_viz": 0, "config": 0, "errors": 0, "io": 0, "sampling": 0, "assets": 0,
    "targets": 1,
    "drafter": 2,
    "decoding": 3,
    "load": 4,
    "data": 5, "train": 5, "eval": 5,
    "viz": 6,
    "cli": 7, "app": 7,
}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _modules() -> dict[str, Path]:
    mods = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    mods["app"] = ROOT / "app.py"
    return mods


def _imports(path: Path, module: str) -> list[tuple[str, bool, int]]:
    """(imported dspark_viz module, at module top?, line) for every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(n) for n in tree.body}
    # imports inside a module-level ``if``/``try`` (e.g. TYPE_CHECKING) also count as top
    for n in tree.body:
        if isinstance(n, (ast.If, ast.Try)):
            top |= {id(m) for m in ast.walk(n)}
    out = []
    pkg_parts = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for n in ast.walk(tree):
        names: list[str] = []
        if isinstance(n, ast.ImportFrom):
            if n.level:
                base = pkg_parts[: len(pkg_parts) - n.level + 1]
                names = [".".join(base + ([n.module] if n.module else []))]
            elif n.module:
                names = [n.module]
            # ``from dspark_viz.viz import figures``: the submodule is the dependency
            names = [f"{names[0]}.{a.name}" if f"{names[0]}.{a.name}" in _ALL else names[0]
                     for a in n.names] if names else []
        elif isinstance(n, ast.Import):
            names = [a.name for a in n.names]
        for name in names:
            if name == "dspark_viz" or name.startswith("dspark_viz."):
                out.append((name, id(n) in top, n.lineno))
    return out


_ALL = set(_modules())


def _graph() -> dict[str, set[str]]:
    g: dict[str, set[str]] = {}
    for mod, path in _modules().items():
        g[mod] = {name for name, _, _ in _imports(path, mod) if name != mod}
    return g


def test_no_upward_import():
    bad = []
    for mod, path in _modules().items():
        for name, _, line in _imports(path, mod):
            a, b = _room(mod), _room(name)
            if FLOORS[b] > FLOORS[a]:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {mod} (floor {FLOORS[a]}) imports "
                           f"{name} (floor {FLOORS[b]})")
    assert not bad, "imports that run up the floors:\n" + "\n".join(bad)


def test_dspark_viz_imports_at_module_top():
    bad = []
    for mod, path in _modules().items():
        for name, at_top, line in _imports(path, mod):
            if not at_top:
                bad.append(f"{path.relative_to(ROOT)}:{line}: imports {name} inside a function")
    assert not bad, "function-local dspark_viz imports hide dependencies:\n" + "\n".join(bad)


def test_no_import_circle():
    g = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(g.get(m, ())):
            if n not in g:
                continue
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)
    # a package's __init__ importing its own submodules is not a circle of dependencies
    cycles = [c for c in cycles if not all(x == c[0] or x.startswith(c[0] + ".") for x in c)]
    assert not cycles, "import circles:\n" + "\n".join(" → ".join(c) for c in cycles)


def test_every_room_has_a_floor():
    missing = sorted({_room(m) for m in _modules()} - set(FLOORS))
    assert not missing, f"modules outside the floor plan: {missing}"
