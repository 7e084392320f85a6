"""``trio-ingest redrive DEAD_LETTERS.jsonl TARGET``: replay dead letters once the bug is fixed.

Reads the dead-letter records (a snapshot: what the file holds when the
command starts), keeps those whose reason matches ``--reason``, removes
duplicates (after a crash a dead-letter file may hold a record twice:
delivery is at-least-once), and sends each record's event, with its id, key,
event time, headers and payload as they were when it failed, through the
pipeline that TARGET builds:

- a pipeline file: its stages from the one that failed on (the record's
  ``node``) onwards, then its sink (a record of a sink failure goes straight
  to the sink); its ``[source]`` is not read;
- ``module:factory``: ``factory(source, **options)`` as for ``worker``.

Ids are kept, so an idempotent sink absorbs events that had landed. Every
replay adds one to the event's ``trio_ingest_redrives`` header; a record
already replayed ``--max-redrives`` times is set aside in the quarantine file
instead of looping. Records a source rejected (``MalformedLine``: the input
itself was bad) are not replayed: fix the input and load it again with
``--reset``. Running redrive again on the same file stores nothing twice.
"""

from __future__ import annotations

import inspect
import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import click

from .._budget import reason_of
from .._errors import ConfigError
from .._event import Event
from .._pipeline import Graph
from ..sources._files import MALFORMED
from ..sources._memory import from_iterable
from ._common import (
    EXIT_FAILED,
    Command,
    Output,
    RunOutcome,
    fail,
    finish,
    make_output,
    output_options,
    parse_options,
    run_command,
)
from ._run import load_factory
from ._spec import build
from ._validate import load_spec

__all__ = ("REDRIVES_HEADER", "redrive")

#: The header counting how often an event was redriven.
REDRIVES_HEADER = "trio_ingest_redrives"


def _records(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The dead-letter records of ``path`` and how many lines were not records."""
    records: list[dict[str, Any]] = []
    unreadable = 0
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        fail(f"{os.fspath(path)}: no such file")
    except OSError as exc:
        fail(f"{os.fspath(path)}: cannot read: {exc.strerror}")
    with handle:
        for raw in handle:
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except ValueError:
                unreadable += 1
                continue
            event = record.get("event") if isinstance(record, dict) else None
            if not isinstance(event, dict) or not isinstance(event.get("id"), str):
                unreadable += 1
                continue
            records.append(record)
    return records, unreadable


def _redrives(record: dict[str, Any]) -> int:
    headers = record["event"].get("headers") or {}
    try:
        return int(headers.get(REDRIVES_HEADER, 0))
    except (TypeError, ValueError):
        return 0


def _event(record: dict[str, Any]) -> Event:
    data = record["event"]
    headers = {str(k): str(v) for k, v in (data.get("headers") or {}).items()}
    headers[REDRIVES_HEADER] = str(_redrives(record) + 1)
    time = data.get("event_time")
    options: dict[str, Any] = {}
    if isinstance(time, int | float) and not isinstance(time, bool):
        options["event_time"] = float(time)
    return Event(id=data["id"], payload=data.get("payload"), key=data.get("key"),
                 headers=headers, **options)


@click.command(cls=Command)
@click.argument("dead_letters", metavar="DEAD_LETTERS.jsonl",
                type=click.Path(dir_okay=False, path_type=Path))
@click.argument("target", metavar="PIPELINE.toml|MODULE:FACTORY")
@click.option("-o", "--option", "factory_options", multiple=True, metavar="KEY=VALUE",
              help="Passed to the factory as factory(source, KEY=VALUE, ...).")
@click.option("--reason", default=None, metavar="REGEX",
              help="Only records whose 'error_type: error' matches REGEX.")
@click.option("--dry-run", is_flag=True, help="Count the records by reason; replay nothing.")
@click.option("--max-redrives", type=click.IntRange(min=1), default=3, show_default=True,
              help="Records replayed this often already go to the quarantine file instead.")
@click.option("--quarantine", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where such records go [default: DEAD_LETTERS.quarantine.jsonl].")
@output_options
def redrive(
    dead_letters: Path,
    target: str,
    factory_options: tuple[str, ...],
    reason: str | None,
    dry_run: bool,
    max_redrives: int,
    quarantine: Path | None,
    quiet: bool,
    as_json: bool,
    log_level: str,
) -> None:
    """Replay the events of DEAD_LETTERS.jsonl through the pipeline TARGET builds.

    Exit code 0 when every selected record was replayed (delivered, or
    dead-lettered again with its new reason) or set aside, 1 when the run
    failed, 2 for bad usage.
    """
    output = make_output(quiet, as_json, log_level)
    options = parse_options(factory_options)
    try:
        pattern = re.compile(reason) if reason is not None else None
    except re.error as exc:
        fail(f"--reason is not a regular expression: {exc}")
    spec = None
    if target.endswith(".toml"):
        if options:
            fail("-o/--option applies to MODULE:FACTORY targets only")
        spec = load_spec(Path(target), need_source=False)
    factory = None if spec is not None else load_factory(target)
    quarantine = quarantine or dead_letters.with_name(dead_letters.name + ".quarantine.jsonl")

    records, unreadable = _records(dead_letters)
    by_reason: Counter[str] = Counter()
    seen_pairs: set[tuple[str, str, int]] = set()
    chosen: dict[str, dict[str, Any]] = {}  # event id -> the record to replay
    duplicates = malformed = 0
    for record in records:
        why = reason_of(str(record.get("error_type", "")), str(record.get("error", "")))
        text = f"{record.get('error_type', '')}: {record.get('error', '')}"
        if pattern is not None and not pattern.search(text):
            continue
        # the same event failing again after a redrive is a new record, not a duplicate
        pair = (record["event"]["id"], why, _redrives(record))
        if pair in seen_pairs:
            duplicates += 1
            continue
        seen_pairs.add(pair)
        if record.get("error_type") != MALFORMED and pair[0] in chosen:
            if _redrives(record) > _redrives(chosen[pair[0]]):
                chosen[pair[0]] = record  # replayed already: its latest failure counts
            continue
        by_reason[why] += 1
        if record.get("error_type") == MALFORMED:
            malformed += 1
            continue
        known = chosen.get(pair[0])
        if known is None or _redrives(record) >= _redrives(known):
            chosen[pair[0]] = record  # the latest failure of an event says where it failed
    to_quarantine = [r for r in chosen.values() if _redrives(r) >= max_redrives]
    to_replay = [r for r in chosen.values() if _redrives(r) < max_redrives]
    counts = {
        "records": len(records),
        "selected": sum(by_reason.values()),
        "duplicates": duplicates,
        "unreadable": unreadable,
        "source_rejects": malformed,
        "to_replay": len(to_replay),
        "to_quarantine": len(to_quarantine),
        "by_reason": dict(by_reason.most_common()),
    }
    if dry_run:
        _print_dry_run(output, counts)
        raise click.exceptions.Exit(0)
    quarantined = _quarantine(quarantine, to_quarantine)
    outcomes = [_replay(output, spec, factory, target, options, group)
                for group in _groups(spec, to_replay)]
    if not outcomes:
        _print_dry_run(output, {**counts, "to_replay": 0})
        raise click.exceptions.Exit(0)
    outcome = _combine(outcomes)
    counts["quarantined_new"] = quarantined
    extra = [
        ("selected", f"{counts['selected']:,}", f"of {len(records):,} records"),
        ("duplicates", f"{duplicates:,}", "same event and reason (at-least-once)"),
        ("source rejects", f"{malformed:,}", "not replayed: fix the input, ingest --reset"),
        ("replayed", f"{len(to_replay):,}", "ids kept: idempotent sinks store them once"),
        ("quarantined", f"{len(to_quarantine):,}", os.fspath(quarantine)),
    ]
    finish(output, outcome, title=f"trio-ingest redrive {dead_letters.name}", extra=extra,
           data={"dead_letters": os.fspath(dead_letters), "target": target,
                 "quarantine": os.fspath(quarantine), **counts})


def _print_dry_run(output: Output, counts: dict[str, Any]) -> None:
    if output.json:
        click.echo(json.dumps({"exit_code": 0, "dry_run": True, **counts}, indent=2))
        return
    if output.quiet:
        return
    click.echo(f"{counts['selected']:,} of {counts['records']:,} dead-letter records selected "
               f"({counts['duplicates']:,} duplicates, {counts['unreadable']:,} unreadable); "
               f"would replay {counts['to_replay']:,}, quarantine {counts['to_quarantine']:,}, "
               f"skip {counts['source_rejects']:,} source rejects")
    for why, n in counts["by_reason"].items():
        click.echo(f"{n:>10,}  {why}")


def _quarantine(path: Path, records: list[dict[str, Any]]) -> int:
    """Append the records not in ``path`` yet; return how many were new."""
    if not records:
        return 0
    present: set[tuple[str, int]] = set()
    if path.exists():
        existing, _ = _records(path)
        present = {(r["event"]["id"], _redrives(r)) for r in existing}
    fresh = [r for r in records if (r["event"]["id"], _redrives(r)) not in present]
    if fresh:
        with path.open("a", encoding="utf-8") as f:
            f.write("".join(json.dumps(r) + "\n" for r in fresh))
            f.flush()
            os.fsync(f.fileno())
    return len(fresh)


def _groups(spec: Any, records: list[dict[str, Any]]) -> list[tuple[str | None, list[Event]]]:
    """Events grouped by where to start: the stage that failed (pipeline files), or all."""
    if not records:
        return []
    if spec is None:
        return [(None, [_event(r) for r in records])]
    names = spec.stage_names()
    groups: dict[str | None, list[Event]] = {}
    for record in records:
        node = record.get("node")
        start = node if node in names else "<sink>"
        groups.setdefault(start, []).append(_event(record))
    return list(groups.items())


def _replay(output: Output, spec: Any, factory: Any, target: str, options: dict[str, str],
            group: tuple[str | None, list[Event]]) -> RunOutcome:
    start, events = group
    source = from_iterable(events, name="redrive")
    try:
        if spec is not None:
            # "<sink>" names no stage: the events go straight to the sink
            graph = build(spec, source=source, start_at=start)
        else:
            graph = factory(source, **options)
            if inspect.isawaitable(graph):
                fail(f"{target} must be a sync factory for redrive")
    except ConfigError as exc:
        fail(f"{target}: {exc}")
    except Exception as exc:  # noqa: BLE001 -- the user's factory failed: one line, exit 1
        fail(f"{target} raised {type(exc).__name__}: {exc}", EXIT_FAILED)
    if not isinstance(graph, Graph):
        fail(f"{target} must return a trio_ingest Pipeline or Graph, not {type(graph).__name__}")
    if graph.dead_letter is None:
        fail(f"{target} has no dead-letter sink: a replay that fails again must be kept; "
             "add [dead_letter]")
    return run_command(output, graph)


def _combine(outcomes: list[RunOutcome]) -> RunOutcome:
    for outcome in outcomes:
        if outcome.exit_code != 0:
            return outcome
    if len(outcomes) == 1:
        return outcomes[0]
    first = outcomes[0]
    assert first.report is not None
    total = first.report
    for other in outcomes[1:]:
        assert other.report is not None
        total = _add(total, other.report)
    return RunOutcome(report=total)


def _add(a: Any, b: Any) -> Any:
    import attrs

    return attrs.evolve(
        a, received=a.received + b.received, delivered=a.delivered + b.delivered,
        dead_lettered=a.dead_lettered + b.dead_lettered, filtered=a.filtered + b.filtered,
        expanded=a.expanded + b.expanded, in_flight=a.in_flight + b.in_flight,
        retries=a.retries + b.retries, elapsed=a.elapsed + b.elapsed,
        completed=a.completed and b.completed,
    )
