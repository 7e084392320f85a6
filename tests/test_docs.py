"""The documentation site covers the public API, the command and the examples.

``mkdocs build --strict`` (a step of ``.ci/run``) fails on a broken link or
reference; these tests fail on what the build cannot see: a public name with
no reference entry, a command with no guide, an example the docs do not show.
"""

from __future__ import annotations

import importlib
import re
import sys
import types
from pathlib import Path

import pytest

import trio_ingest as ti

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference"

#: Each public module and the reference page that documents its names.
PAGES = {
    "trio_ingest": "index.md",
    "trio_ingest.sources": "sources.md",
    "trio_ingest.sinks": "sinks.md",
    "trio_ingest.stages": "stages.md",
    "trio_ingest.stages.windows": "windows.md",
    "trio_ingest.stages.agg": "agg.md",
    "trio_ingest.state": "state.md",
    "trio_ingest.http": "http.md",
    "trio_ingest.runtime": "runtime.md",
    "trio_ingest.observe": "observe.md",
    "trio_ingest.testing": "testing.md",
    "trio_ingest.graph": "graph.md",
    "trio_ingest.cli": "cli.md",
}


def _resolve(path: str) -> object:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _entries(page: str) -> list[str]:
    return re.findall(r"^::: ([\w.]+)$", (REFERENCE / page).read_text(), re.MULTILINE)


def test_every_public_subpackage_has_a_page() -> None:
    subpackages = {
        getattr(ti, n).__name__ for n in ti.__all__ if isinstance(getattr(ti, n), types.ModuleType)
    }
    subpackages |= {"trio_ingest.graph", "trio_ingest.cli"}
    assert subpackages <= set(PAGES)


@pytest.mark.parametrize("module_name", sorted(PAGES))
def test_every_public_name_has_a_reference_entry(module_name: str) -> None:
    module = importlib.import_module(module_name)
    page = PAGES[module_name]
    text = (REFERENCE / page).read_text()
    documented = {}
    for path in _entries(page):
        documented[path.rpartition(".")[2]] = path
    missing = []
    for name in module.__all__:
        value = getattr(module, name)
        if name in documented:
            # the entry documents this very object, wherever it is defined
            assert _resolve(documented[name]) is value, (name, documented[name])
        elif module_name == "trio_ingest" and f"| `ti.{name}` |" in text:
            continue  # a re-export, linked to the subpackage page that documents it
        else:
            missing.append(name)
    assert missing == [], f"{page} has no entry for {missing}: run docs/hooks/gen_reference.py"


def test_top_level_re_exports_link_to_a_page_that_documents_them() -> None:
    text = (REFERENCE / "index.md").read_text()
    for name, target in re.findall(r"^\| `ti\.(\w+)` \| .*?\]\(([\w.]+\.md)(?:#[\w.]+)?\)", text,
                                   re.MULTILINE):
        value = getattr(ti, name)
        if isinstance(value, types.ModuleType):
            assert PAGES[value.__name__] == target
        else:
            assert any(_resolve(p) is value for p in _entries(target)), (name, target)


def test_every_command_has_a_guide() -> None:
    click = pytest.importorskip("click")
    from trio_ingest.cli._app import cli

    text = (DOCS / "howto" / "cli.md").read_text()
    assert "<!-- cli-help -->" in text
    for name in cli.list_commands(click.Context(cli)):
        assert f"| `trio-ingest {name}` |" in text, name


def test_the_docs_include_every_example() -> None:
    included = set(re.findall(r'--8<-- "examples/([\w.]+)"', (DOCS / "examples.md").read_text()))
    assert included == {p.name for p in (ROOT / "examples").glob("*.py")}


def test_the_troubleshooting_page_lists_the_messages_found_in_the_code() -> None:
    sys.path.insert(0, str(DOCS / "hooks"))
    try:
        import generated
    finally:
        sys.path.remove(str(DOCS / "hooks"))
    messages = generated.error_messages()
    config = {m for m, _where in messages["ConfigError"]}
    assert "'{attribute.name}' must be >= 0: {value}" in config  # the validators' own
    assert "the graph has no source" in {m for m, _where in messages["GraphError"]}
    assert {"ConfigError", "GraphError", "SourceError", "SinkError", "CliError"} <= set(messages)
    rendered = generated.render_errors()
    total = sum(len(set(v)) for v in messages.values())
    assert rendered.count("\n| `") == total
    assert "<!-- error-messages -->" in (DOCS / "troubleshooting.md").read_text()


# -- the README: short, with working links, its set-up and test commands, a running example --


def test_the_readme_states_the_set_up_and_test_commands() -> None:
    text = (ROOT / "README.md").read_text()
    assert "pip install -e '.[cli]' && trio-ingest demo" in text
    assert "pip install -e '.[test]' && python -m pytest" in text  # what .ci/run runs
    assert len(text.splitlines()) < 120


def test_the_readme_links_resolve() -> None:
    text = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(((?!https?:)[^)#]+)\)", text)
    assert links and [link for link in links if not (ROOT / link).exists()] == []


def test_the_readme_example_runs(tmp_path: Path) -> None:
    import subprocess

    text = (ROOT / "README.md").read_text()
    code = re.search(r"## A pipeline in 20 lines\n\n```python\n(.*?)```", text, re.DOTALL)
    assert code is not None
    assert len(code.group(1).splitlines()) <= 20
    done = subprocess.run(
        [sys.executable, "-c", code.group(1)], cwd=tmp_path, capture_output=True, text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "'delivered': 9000" in done.stdout and "'balanced': True" in done.stdout
