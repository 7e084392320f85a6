"""``trio-ingest run module:factory``: run the pipeline a user's module builds.

The factory is a function (sync or async, no arguments) returning a
``Pipeline`` or ``Graph``. ``module`` is an importable module name
(``mypkg.pipelines:orders``; the current directory is importable) or the
path of a Python file (``jobs/orders.py:build``).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import click

from .._errors import ConfigError
from .._pipeline import Graph
from ._common import (
    EXIT_FAILED,
    Command,
    Output,
    ProgressView,
    RunOutcome,
    fail,
    finish,
    make_output,
    output_options,
    run_command,
    run_graph,
    run_trio,
)
from ._spec import build
from ._validate import load_spec

__all__ = ("load_factory", "run")


def load_factory(target: str) -> Callable[..., Any]:
    """Resolve ``module:factory`` or ``path/to/file.py:factory`` to the factory.

    Raises:
        CliError: The target is malformed, cannot be imported, or names
            something that is not callable.
    """
    module_ref, sep, attribute = target.rpartition(":")
    if not sep or not module_ref or not attribute:
        fail(f"expected MODULE:FACTORY or FILE.py:FACTORY, got {target!r}")
    module = _import(module_ref)
    factory = module
    for part in attribute.split("."):
        try:
            factory = getattr(factory, part)
        except AttributeError:
            fail(f"{module_ref!r} has no attribute {attribute!r}")
    if not callable(factory):
        fail(f"{target!r} is not callable: {factory!r}")
    return factory


def _import(module_ref: str) -> ModuleType:
    is_file = module_ref.endswith(".py") or os.sep in module_ref or "/" in module_ref
    if is_file:
        path = Path(module_ref)
        if not path.is_file():
            fail(f"{module_ref}: no such file")
        name = f"_trio_ingest_user_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            fail(f"{module_ref}: cannot be loaded as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        # the file's own directory is importable, as when running it with python
        sys.path.insert(0, str(path.resolve().parent))
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 -- any import failure is the user's module
            fail(f"importing {module_ref} failed: {type(exc).__name__}: {exc}", EXIT_FAILED)
        return module
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module_ref)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_ref.startswith(exc.name):
            fail(f"no module named {module_ref!r}")
        fail(f"importing {module_ref} failed: {type(exc).__name__}: {exc}", EXIT_FAILED)
    except Exception as exc:  # noqa: BLE001 -- any import failure is the user's module
        fail(f"importing {module_ref} failed: {type(exc).__name__}: {exc}", EXIT_FAILED)


async def _build(factory: Callable[[], Any], target: str) -> Graph:
    try:
        graph = factory()
        if inspect.isawaitable(graph):
            graph = await graph
    except ConfigError as exc:
        fail(f"{target}: {exc}")
    except Exception as exc:  # noqa: BLE001 -- the user's factory failed: one line, exit 1
        fail(f"{target} raised {type(exc).__name__}: {exc}", EXIT_FAILED)
    if not isinstance(graph, Graph):
        fail(f"{target} must return a trio_ingest Pipeline or Graph, not {type(graph).__name__}")
    return graph


@click.command(cls=Command)
@click.argument("target", metavar="PIPELINE.toml|MODULE:FACTORY")
@click.option("--shutdown-timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds a graceful stop may take to drain [default: the pipeline's].")
@output_options
def run(
    target: str,
    shutdown_timeout: float | None,
    quiet: bool,
    as_json: bool,
    log_level: str,
) -> None:
    """Run the pipeline a pipeline file describes, or that MODULE:FACTORY builds.

    PIPELINE.toml is checked first (like `trio-ingest validate`): an invalid
    file fails with every problem and exit code 2 before any data moves.
    FACTORY is a function of no arguments (sync or async) returning a
    trio_ingest Pipeline or Graph. MODULE is a module name (the current
    directory is importable) or a file path ending in .py. SIGINT or SIGTERM
    stops the run gracefully (intake ends, in-flight events drain, offsets
    commit); a second signal forces it. Exit code 0 when the run completed
    or a graceful stop drained everything, 1 when it failed, 128+signal when
    the stop was forced or cut short by the shutdown deadline.
    """
    output = make_output(quiet, as_json, log_level)
    if target.endswith(".toml"):
        _run_file(Path(target), output, shutdown_timeout)
    factory = load_factory(target)
    err = output.stderr()
    built: list[Graph] = []

    async def main() -> RunOutcome:
        graph = await _build(factory, target)
        built.append(graph)
        view = None
        if not output.quiet and err.is_terminal:
            view = ProgressView(err, title=target)
        with output.logging(err):
            return await run_graph(
                graph, shutdown_timeout=shutdown_timeout, view=view, metrics=output.metrics,
                notice=None if output.quiet else (lambda m: err.print(f"[yellow]{m}[/]")),
            )

    outcome = run_trio(main)
    finish(output, outcome, title=f"trio-ingest run {target}", data={"target": target})


def _run_file(path: Path, output: Output, shutdown_timeout: float | None) -> NoReturn:
    spec = load_spec(path)
    try:
        graph = build(spec)
    except ConfigError as exc:
        fail(f"{path}: {exc}")
    except ImportError as exc:
        fail(f"{path}: sink {spec.sink['type']!r} needs an extra that is not installed "
             f"({exc.name or exc}): pip install 'trio-ingest[{spec.sink['type']}]'")
    err = output.stderr()
    view = ProgressView(err, title=path.name) if not output.quiet and err.is_terminal else None
    outcome = run_command(output, graph, view=view, shutdown_timeout=shutdown_timeout)
    source = graph.nodes[next(iter(graph.nodes))].obj
    data: dict[str, Any] = {"target": os.fspath(path), "destination": spec.destination}
    extra: list[tuple[str, str, str]] = []
    checkpoint = getattr(source, "checkpoint", None)
    if checkpoint is not None:
        data["checkpoint"] = os.fspath(checkpoint)
        extra.append(("checkpoint", f"byte {source.committed or 0:,}", os.fspath(checkpoint)))
    finish(output, outcome, title=f"trio-ingest run {path.name}", extra=extra, data=data)
