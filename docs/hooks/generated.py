"""MkDocs hooks: pages whose content comes from the code, so they never go stale.

* ``<!-- error-messages -->``: every error message trio_ingest can raise, found
  on the source (``raise SomeError("...")`` and the command's ``fail("...")``),
  grouped by exception type, with where it is raised.
* ``<!-- cli-help -->``: the ``--help`` of every ``trio-ingest`` command.

It also drops the Sphinx roles the docstrings use (``:class:`Graph```), which
Markdown would print as they are: the name stays, as code.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "trio_ingest"


def _template(node: ast.expr) -> str | None:
    """The message of a raise, with ``{...}`` where it is filled in at run time."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        out = []
        for part in node.values:
            if isinstance(part, ast.Constant):
                out.append(str(part.value))
            elif isinstance(part, ast.FormattedValue):
                out.append("{" + ast.unparse(part.value) + "}")
        return "".join(out)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _template(node.left), _template(node.right)
        if left is not None and right is not None:
            return left + right
    return None


def error_messages() -> dict[str, list[tuple[str, str]]]:
    """``{error type: [(message, "module.py:line"), ...]}`` over the package's source."""
    found: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where_file = path.relative_to(ROOT).as_posix()
        for node in ast.walk(tree):
            call = None
            kind = None
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                call = node.exc
                func = call.func
                kind = func.id if isinstance(func, ast.Name) else (
                    func.attr if isinstance(func, ast.Attribute) else None
                )
            elif (
                isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "fail" and "cli" in path.parts
            ):
                call, kind = node, "CliError"
            if call is None or kind is None or not call.args:
                continue
            if not (kind.endswith("Error") or kind.endswith("Exception")):
                continue
            message = _template(call.args[0])
            if message is None or not message.strip():
                continue
            found[kind].append((message, f"{where_file}:{node.lineno}"))
    return found


ABOUT = {
    "ConfigError": "A value given to a constructor, a pipeline file or an option is invalid. "
    "Raised before anything starts; nothing has moved. Fix the named field.",
    "GraphError": "The graph is malformed (a cycle, a node with no input, an output that "
    "goes nowhere, a duplicate name). Raised by `validate()` before anything starts.",
    "SourceError": "A source cannot start or read (a missing file, a rewritten checkpoint, a "
    "refused connection). Nothing past its last commit is lost: fix it and rerun.",
    "SinkError": "A sink cannot write, or a disk or device failed under it. The run stops so "
    "that nothing unwritten is acknowledged; a rerun delivers the rest.",
    "CliError": "The `trio-ingest` command refused its arguments; it exits with status 2 "
    "and prints the message as `error: ...`.",
    "PermanentError": "A non-retryable failure: the event(s) are dead-lettered with it.",
    "TransientError": "A retryable failure: retried under the retry policy.",
    "DeadLetterError": "The dead-letter sink itself failed: the run stops rather than lose "
    "the event.",
    "DeadLetterBudgetError": "Too many events were dead-lettered (the `dead_letter_budget`): "
    "the run stops, since the input or a stage is likely broken.",
    "RetryExhaustedError": "A sink gave up after its retry policy and there is no dead-letter "
    "sink; the last error is its `__cause__`.",
    "NotJsonError": "A payload cannot be encoded as JSON by a sink that writes JSON.",
}


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_errors() -> str:
    found = error_messages()
    order = [k for k in ABOUT if k in found] + sorted(k for k in found if k not in ABOUT)
    out = []
    for kind in order:
        rows = sorted(set(found[kind]))
        out.append(f"### `{kind}`\n")
        if kind in ABOUT:
            out.append(ABOUT[kind] + "\n")
        out.append(f"{len(rows)} message(s); `{{...}}` is filled in with the actual value.\n")
        out.append("| message | raised at |\n| --- | --- |")
        out.extend(f"| `{_escape(m)}` | `{w}` |" for m, w in rows)
        out.append("")
    return "\n".join(out)


def render_cli_help() -> str:
    import click
    from click.testing import CliRunner

    from trio_ingest.cli._app import cli

    out = []
    runner = CliRunner()
    for name in cli.list_commands(click.Context(cli)):
        result = runner.invoke(cli, [name, "--help"], prog_name="trio-ingest",
                               terminal_width=88)
        out.append(f"### `trio-ingest {name}`\n\n```text\n{result.output.rstrip()}\n```\n")
    return "\n".join(out)


def on_page_markdown(markdown: str, page: object, **kwargs: object) -> str:
    if "<!-- error-messages -->" in markdown:
        markdown = markdown.replace("<!-- error-messages -->", render_errors())
    if "<!-- cli-help -->" in markdown:
        markdown = markdown.replace("<!-- cli-help -->", render_cli_help())
    return markdown


_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|data|attr|mod|exc|obj|const):(?=<code)")


def on_page_content(html: str, page: object, **kwargs: object) -> str:
    return _ROLE.sub("", html)
