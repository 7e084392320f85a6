"""Write the API reference pages (``docs/reference/*.md``) from the packages' ``__all__``.

Run ``python docs/hooks/gen_reference.py`` after adding a public name or a subpackage
(add the subpackage to ``PAGES`` first); ``tests/test_docs.py`` fails until every public
name has its entry. Each name becomes a ``::: path`` block that mkdocstrings renders from
the docstring; names the top level re-exports from a subpackage link to that page.
"""

import importlib
import types
from pathlib import Path

REFERENCE = Path(__file__).resolve().parents[1] / "reference"

#: (module, page, title, introduction)
PAGES = [
    ("trio_ingest", "index", "The top-level package",
     "Everything a pipeline needs, as `import trio_ingest as ti`. "
     "Subpackages have their own pages."),
    ("trio_ingest.sources", "sources", "Sources",
     "Where events enter a pipeline. Connectors with an optional dependency load on first use."),
    ("trio_ingest.sinks", "sinks", "Sinks",
     "Where events leave a pipeline. Every built-in database sink is idempotent on the event id."),
    ("trio_ingest.stages", "stages", "Stages",
     "Per-event operators, routing, keyed state and the custom-stage protocol."),
    ("trio_ingest.stages.windows", "windows", "Windows", "Event-time windows (`ti.windows`)."),
    ("trio_ingest.stages.agg", "agg", "Aggregations",
     "Ready aggregations for windows (`ti.agg`)."),
    ("trio_ingest.state", "state", "State stores",
     "Where stateful stages keep their state and the source offsets it reflects, "
     "written together at each checkpoint. See the [state guide](../guide/state.md)."),
    ("trio_ingest.http", "http", "HTTP",
     "The HTTP ingest endpoint as an ASGI app to mount beside a serving pipeline. "
     "See the [HTTP guide](../guide/http.md)."),
    ("trio_ingest.runtime", "runtime", "Runtime",
     "What a running pipeline hands back: the handle and the report."),
    ("trio_ingest.observe", "observe", "Observe", "Metrics, logging, tracing and snapshots."),
    ("trio_ingest.testing", "testing", "Testing kit",
     "Test your own pipelines: virtual time, faults, the oracle, crashes. "
     "See the [testing guide](../testing.md)."),
    ("trio_ingest.graph", "graph", "Graph model",
     "The model, validation and the plan (pure: nothing runs)."),
    ("trio_ingest.cli", "cli", "Command line",
     "The `trio-ingest` command's entry point. "
     "Its commands are described in the [how-tos](../howto/cli.md)."),
]
SUBPAGE = {module: page for module, page, _title, _intro in PAGES}


def lazy(module: types.ModuleType) -> dict[str, str]:
    return getattr(module, "_LAZY", {})  # names a subpackage loads on first use


def owners() -> dict[int, tuple[str, str, str]]:
    """``id(object) -> (module, page, name)`` of what the subpackages export."""
    found: dict[int, tuple[str, str, str]] = {}
    for module_name, page, _title, _intro in PAGES[1:]:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            value = getattr(module, name)
            if not isinstance(value, int | float | str | bytes):
                found.setdefault(id(value), (module_name, page, name))
    return found


def page_text(module_name: str, title: str, intro: str, owned: dict) -> str:
    module = importlib.import_module(module_name)
    out = [f"# {title}: `{module_name}`", "", intro, ""]
    top = module_name == "trio_ingest"
    if top:
        rows = []
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, types.ModuleType):
                page = SUBPAGE[value.__name__]
                rows.append(f"| `ti.{name}` | the [`{value.__name__}`]({page}.md) module |")
            elif id(value) in owned:
                om, op, on = owned[id(value)]
                rows.append(f"| `ti.{name}` | [`{om}.{on}`]({op}.md#{om}.{on}) |")
        out += ["Re-exported from the subpackages (documented on their pages):", "",
                "| name | is |", "| --- | --- |", *rows, "", "Defined here:", ""]
    for name in module.__all__:
        value = getattr(module, name)
        if top and (isinstance(value, types.ModuleType) or id(value) in owned):
            continue
        if isinstance(value, types.ModuleType):
            page = SUBPAGE[value.__name__]
            link = f"The `{value.__name__}` module: see [its page]({page}.md)."
            out += [f"## `{name}`", "", link, ""]
            continue
        if name in lazy(module):
            path = f"{module_name}{lazy(module)[name]}.{name}"
        else:
            path = f"{module_name}.{name}"
        out += [f"::: {path}", ""]
    return "\n".join(out).rstrip() + "\n"


def main() -> None:
    owned = owners()
    for module_name, page, title, intro in PAGES:
        (REFERENCE / f"{page}.md").write_text(page_text(module_name, title, intro, owned))


if __name__ == "__main__":
    main()
