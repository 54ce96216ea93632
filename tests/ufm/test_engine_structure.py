"""Structure of the solver engine (issue 21): arrows only point into ``ufm.engine``.

No module of ``ufm.engine`` imports (at any level, function-level imports included) a ``ufm``
module outside the engine that itself imports the engine: the engine is a floor below
``ufm.objective``, ``ufm.solve``, ``ufm.certify`` and ``ufm.layernorm``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _name(p: Path) -> str:
    parts = list(p.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in (ROOT / "ufm").rglob("*.py")}


def _imports(name: str) -> set[str]:
    """The ``ufm`` modules that module ``name`` imports anywhere in its text."""
    p = MODULES[name]
    pkg = name if p.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    for n in ast.walk(ast.parse(p.read_text())):
        if isinstance(n, ast.ImportFrom):
            if n.level:
                base = pkg.split(".")[: len(pkg.split(".")) - (n.level - 1)]
                target = ".".join(base + ([n.module] if n.module else []))
            else:
                target = n.module or ""
            cands = [target] + [f"{target}.{a.name}" for a in n.names]
        elif isinstance(n, ast.Import):
            cands = [a.name for a in n.names]
        else:
            continue
        out.update(c for c in cands if c in MODULES and c != name)
    return out


def test_no_arrow_back_up_into_the_engine():
    engine = {m for m in MODULES if m == "ufm.engine" or m.startswith("ufm.engine.")}
    bad = []
    for m in sorted(engine):
        for dep in sorted(_imports(m) - engine - {"ufm"}):
            back = sorted(d for d in _imports(dep) if d in engine)
            if back:
                bad.append(f"{m} imports {dep}, which imports {back}")
    assert not bad, bad


def test_no_import_cycle_between_ufm_modules():
    graph = {m: _imports(m) - {"ufm"} for m in MODULES}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(u: str, path: list[str]) -> None:
        state[u] = 1
        path.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                cycles.append(path[path.index(v) :] + [v])
            elif not state.get(v):
                visit(v, path)
        path.pop()
        state[u] = 2

    for m in sorted(graph):
        if not state.get(m):
            visit(m, [])
    assert not cycles, cycles
