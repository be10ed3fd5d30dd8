"""The house's one direction of imports (a room imports only rooms strictly below it, by the levels
below): every module of the package is read (nothing is run) and any import circle, or any import of
a room at the same level or above, fails the test. Lazy imports inside functions and TYPE_CHECKING
imports count too."""
from __future__ import annotations

import ast
from pathlib import Path

import spacy_el

#: Rooms, lowest first; a room may import only rooms strictly below it.
LEVEL = {"io": 0, "ids": 0, "models": 0, "data": 0, "evaluate": 1, "abbreviations": 1, "corpora": 2, "kb": 2,
         "sap": 3, "ner": 4, "linker": 4, "build": 5, "annotate": 5, "umls": 5, "cli": 6, "__main__": 7}
ROOT = Path(spacy_el.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        name = ".".join(("spacy_el", *path.relative_to(ROOT).with_suffix("").parts))
        out[name.removesuffix(".__init__")] = path
    return out


def _edges(mods: dict[str, Path]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in mods:
                    target = target.rsplit(".", 1)[0] if "." in target else ""
                if target and target != mod and not mod.startswith(target + "."):
                    edges[mod].add(target)
    return edges


def _room(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_every_room_is_known():
    assert {_room(m) for m in _modules()} - {"spacy_el"} <= set(LEVEL)


def test_no_import_runs_up_or_sideways():
    edges = _edges(_modules())
    bad = sorted(f"{a} -> {b}" for a, targets in edges.items() for b in targets
                 if _room(a) != _room(b) and LEVEL.get(_room(b), 5) >= LEVEL.get(_room(a), 5))
    assert not bad, "imports against the house's direction:\n" + "\n".join(bad)


def test_no_import_circle():
    edges = _edges(_modules())
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    circles: list[list[str]] = []

    def visit(mod: str) -> None:
        state[mod] = 1
        path.append(mod)
        for nxt in sorted(edges[mod]):
            if state.get(nxt) == 1:
                circles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[mod] = 2

    for mod in sorted(edges):
        if mod not in state:
            visit(mod)
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)
