"""The import rule of trio_ingest/__init__.py, checked on the source: imports flow one way.

values -> contracts and connectors -> graph -> runtime -> builders -> observe / testing -> cli.
Imports inside functions count (a lazy import still ties two parts together); imports
under ``if TYPE_CHECKING:`` do not.
"""

from __future__ import annotations

import ast
from pathlib import Path

import trio_ingest

ROOT = Path(trio_ingest.__file__).parent

#: The layer of each part (a subpackage, or a top-level private module: the values).
LAYERS = {
    "sources": 1,
    "sinks": 1,
    "stages": 1,
    "state": 1,
    "graph": 2,
    "runtime": 3,
    "_pipeline": 4,
    "http": 4,  # ti.http.ingest_app: the source's endpoint in front of a handle
    "observe": 5,
    "testing": 5,
    "cli": 6,
    "__main__": 6,
}


def layer(part: str) -> int:
    return LAYERS.get(part, 0)  # top-level private modules are values


def part_of(module: str) -> str | None:
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else None


def imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {
        id(sub)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for sub in ast.walk(node)
    }
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                full = ".".join(base + ([node.module] if node.module else []))
            else:
                full = node.module or ""
            if full == "trio_ingest":
                found |= {f"trio_ingest.{a.name}" for a in node.names}
            else:
                found.add(full)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m.startswith("trio_ingest.")}


def test_imports_flow_one_way() -> None:
    wrong: list[str] = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        me = part_of(module)
        if me is None:
            continue  # the package's __init__ re-exports the public API
        for target in imports(path, module):
            other = part_of(target)
            if other is not None and other != me and layer(other) > layer(me):
                wrong.append(f"{module} imports {target} ({me} is below {other})")
    assert wrong == []


def test_the_rule_is_stated_where_the_package_begins() -> None:
    doc = trio_ingest.__doc__ or ""
    assert "values -> contracts and connectors -> graph -> runtime" in doc
