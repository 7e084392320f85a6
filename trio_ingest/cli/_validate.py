"""``trio-ingest validate pipeline.toml``: every problem of a pipeline file, at once.

Opens nothing (no file, database or connection); imports the functions the
stages name. Exit code 0 when the file is valid, 2 otherwise, with one line
per problem, each with its path (``sink.tabel: unknown option (did you mean
'table'?)``).
"""

from __future__ import annotations

from pathlib import Path

import click

from ._common import EXIT_USAGE, Command
from ._spec import Spec, check

__all__ = ("load_spec", "validate")


def load_spec(path: Path, *, need_source: bool = True) -> Spec:
    """The valid spec at ``path``; otherwise print every problem and exit 2.

    Raises:
        click.exceptions.Exit: The file is invalid (after printing its problems).
    """
    spec, errors = check(path, need_source=need_source)
    if errors or spec is None:
        for error in errors:
            click.echo(f"error: {path}: {error}" if not error.startswith(str(path))
                       else f"error: {error}", err=True)
        raise click.exceptions.Exit(EXIT_USAGE)
    return spec


@click.command(cls=Command)
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def validate(file: Path) -> None:
    """Check the pipeline file FILE without running it (exit 0: valid, 2: not)."""
    spec = load_spec(file)
    click.echo(f"{file}: valid: {spec.source.get('type')} -> "
               f"{' -> '.join(spec.stage_names()) or '(no stages)'} -> {spec.sink['type']}"
               f"{' (dead letters: ' + spec.dead_letter['type'] + ')' if spec.dead_letter else ''}")
