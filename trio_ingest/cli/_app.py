"""The click group; each command lives in its own module, loaded when invoked."""

from __future__ import annotations

import importlib
from typing import Any

import click

# command name -> "module:attribute"; modules import only when their command runs
COMMANDS: dict[str, str] = {
    "demo": "trio_ingest.cli._demo:demo",
    "run": "trio_ingest.cli._run:run",
    "ingest": "trio_ingest.cli._ingest:ingest",
    "top": "trio_ingest.cli._top:top",
    "worker": "trio_ingest.cli._scale:worker",
    "produce": "trio_ingest.cli._scale:produce",
}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use (fast ``--help`` and startup)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        command: Any = getattr(importlib.import_module(module_name), attribute)
        return command  # type: ignore[no-any-return]


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="trio-ingest")
def cli() -> None:
    """Resilient streaming ingestion on Trio: sources -> stages -> sinks, nothing lost."""
