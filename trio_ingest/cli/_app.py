"""The click group; each command lives in its own module, loaded when invoked."""

from __future__ import annotations

import difflib
import importlib
from typing import Any

import click

from ._common import CliError

# command name -> "module:attribute"; modules import only when their command runs
COMMANDS: dict[str, str] = {
    "demo": "trio_ingest.cli._demo:demo",
    "run": "trio_ingest.cli._run:run",
    "ingest": "trio_ingest.cli._ingest:ingest",
    "top": "trio_ingest.cli._top:top",
    "worker": "trio_ingest.cli._scale:worker",
    "produce": "trio_ingest.cli._scale:produce",
    "validate": "trio_ingest.cli._validate:validate",
    "checkpoint": "trio_ingest.cli._checkpoint:checkpoint",
    "redrive": "trio_ingest.cli._redrive:redrive",
}
# what ``trio-ingest --help`` lists, without importing any command (the ``worker`` and
# ``produce`` modules import the Redis client: 0.3 s); each is the first sentence of its
# command's help, which tests/test_cli.py checks
SUMMARIES: dict[str, str] = {
    "checkpoint": "Show or reset the checkpoints of an input file (one per destination).",
    "demo": "Watch a resilient ingestion: a flaky, slow SQLite sink, retries and dead letters.",
    "ingest": "Load FILE (JSON Lines or CSV, plain, gzip or zstd; '-' for stdin) into a store.",
    "produce": "Append the records of FILE (JSON Lines) to a Redis stream, with progress.",
    "redrive": "Replay the events of DEAD_LETTERS.jsonl through the pipeline TARGET builds.",
    "run": "Run the pipeline a pipeline file describes, or that MODULE:FACTORY builds.",
    "top": "Watch a running pipeline: node rates, errors, latency, edge depth and backpressure.",
    "validate": "Check the pipeline file FILE without running it (exit 0: valid, 2: not).",
    "worker": "Run one worker of a consumer group: FACTORY (module:function) builds its "
    "pipeline.",
}
# the extra each command's imports need, for a one-line hint when it is missing
EXTRAS: dict[str, tuple[str, str]] = {"worker": ("redis", "coredis"),
                                      "produce": ("redis", "coredis")}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use (fast ``--help`` and startup)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, SUMMARIES[name]) for name in sorted(COMMANDS)])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        try:
            if cmd_name in EXTRAS:
                importlib.import_module(EXTRAS[cmd_name][1])  # what its run will need
            module = importlib.import_module(module_name)
        except ImportError as exc:
            extra = EXTRAS.get(cmd_name, ("cli", ""))[0]
            raise CliError(f"'{cmd_name}' needs the '{extra}' extra: pip install "
                           f"'trio-ingest[{extra}]' ({exc.name or exc} is missing)") from None
        command: Any = getattr(module, attribute)
        return command  # type: ignore[no-any-return]

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            message = exc.format_message()
            raise CliError(message[:1].lower() + message[1:]) from None

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            close = difflib.get_close_matches(name, list(COMMANDS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise CliError(f"no such command {name!r}{hint}; commands: "
                           f"{', '.join(sorted(COMMANDS))}")
        return super().resolve_command(ctx, args)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="trio-ingest")
def cli() -> None:
    """Resilient streaming ingestion on Trio: sources -> stages -> sinks, nothing lost."""
