"""The program the crash harness runs: ``python -m trio_ingest.testing._child MODULE:FACTORY``.

It builds the pipeline the factory returns, runs it on Trio and prints its
report as one JSON line on stdout. The factory is a function (sync or async,
no arguments) returning a ``Pipeline`` or ``Graph``; ``MODULE`` is an
importable module name or the path of a Python file.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import trio

from .._pipeline import Graph

__all__ = ("load_factory", "main")


def load_factory(target: str) -> Callable[[], Any]:
    """Resolve ``module:factory`` or ``path/to/file.py:factory``.

    Raises:
        ValueError: ``target`` is not ``MODULE:FACTORY``.
        ImportError: The module cannot be imported.
        AttributeError: The module has no such factory.
        TypeError: The factory is not callable.
    """
    module_ref, sep, attribute = target.rpartition(":")
    if not sep or not module_ref or not attribute:
        raise ValueError(f"expected MODULE:FACTORY or FILE.py:FACTORY, got {target!r}")
    module = _import(module_ref)
    factory: Any = module
    for part in attribute.split("."):
        factory = getattr(factory, part)
    if not callable(factory):
        raise TypeError(f"{target!r} is not callable: {factory!r}")
    return factory  # type: ignore[no-any-return]


def _import(ref: str) -> ModuleType:
    if ref.endswith(".py"):
        path = Path(ref).resolve()
        spec = importlib.util.spec_from_file_location(f"_crash_target_{path.stem}", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {ref!r}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module
    sys.path.insert(0, "")
    return importlib.import_module(ref)


async def _run(target: str) -> dict[str, Any]:
    built = load_factory(target)()
    if inspect.isawaitable(built):
        built = await built
    if not isinstance(built, Graph):
        raise TypeError(f"{target!r} returned {built!r}, not a Pipeline or Graph")
    report = await built.run()
    return report.summary()


def main(argv: list[str]) -> int:
    """Run the factory named by ``argv[0]``; print its report; exit status 0 when completed."""
    if len(argv) != 1:
        sys.stderr.write("usage: python -m trio_ingest.testing._child MODULE:FACTORY\n")
        return 2
    figures = trio.run(_run, argv[0])
    sys.stdout.write(json.dumps(figures) + "\n")
    return 0 if figures["completed"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
