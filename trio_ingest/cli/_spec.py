"""Pipeline files (TOML) and the builders every command shares.

A pipeline file names a source, stages, a sink and a dead-letter sink by
type and options::

    [pipeline]
    capacity = 1000
    state = "state.db"          # optional: checkpoint epochs in an embedded SQLite store
    [source]
    type = "jsonl"
    path = "in.jsonl"
    [[stages]]
    type = "map"
    function = "mymodule:enrich"
    [sink]
    type = "sqlite"
    path = "out.db"
    table = "events"
    [dead_letter]
    type = "jsonl"
    path = "dead.jsonl"

:func:`check` reads and validates a file without opening anything and
returns *every* problem with its path (``sink.tabel: unknown option (did you
mean 'table'?)``); :func:`build` turns a valid spec into a ``Pipeline``.
Relative paths in the file are relative to the file's directory.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import json
import os
import re
import sys
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from .._budget import DeadLetterBudget
from .._errors import ConfigError
from ..state import SQLite as SQLiteState

__all__ = (
    "Spec",
    "build",
    "check",
    "check_dsn",
    "check_table",
    "default_checkpoint",
    "destination_of",
    "import_callable",
    "make_sink",
)

_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: The dead-letter budget the command uses unless told otherwise.
DEFAULT_BUDGET = DeadLetterBudget()


def check_table(table: str, where: str = "--table") -> str | None:
    """Why ``table`` is not a usable table name, or None."""
    parts = table.split(".")
    if len(parts) > 2 or not all(parts):
        return f"{where} must be NAME or SCHEMA.NAME: {table!r}"
    for part in parts:
        if not _TABLE.fullmatch(part):
            if part[:1].isdigit():
                return f"{where} must start with a letter or '_', not a digit: {table!r}"
            return f"{where} may hold only letters, digits and '_': {table!r}"
    return None


def check_dsn(dsn: str, where: str = "--postgres") -> str | None:
    """Why ``dsn`` is not a libpq connection string or URL, or None (opens nothing)."""
    try:
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        return f"{where} needs the 'postgres' extra: pip install 'trio-ingest[postgres]'"
    try:
        params = conninfo_to_dict(dsn)
    except Exception as exc:  # noqa: BLE001 -- psycopg's ProgrammingError: say it in one line
        detail = " ".join(str(exc).split()).removeprefix("invalid connection string: ")
        return f"{where} is not a valid DSN: {detail}"
    port = str(params.get("port", "5432"))
    if not all(p.isdigit() for p in port.split(",")):
        return f"{where} is not a valid DSN: port must be a number: {port!r}"
    return None


def _pg_target(dsn: str | None) -> str:
    dsn = dsn or os.environ.get("TRIO_INGEST_PG_DSN", "")
    try:
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(dsn)
    except Exception:  # noqa: BLE001 -- only naming the target; the sink reports bad DSNs
        return dsn
    host = params.get("host", "localhost")
    return f"{host}:{params.get('port', 5432)}/{params.get('dbname', params.get('user', ''))}"


def destination_of(kind: str, options: Mapping[str, Any]) -> str:
    """A stable name of where a sink writes: what a checkpoint belongs to (with its file)."""
    if kind == "sqlite":
        return f"sqlite:{os.path.abspath(options['path'])}:{options['table']}"
    if kind == "postgres":
        return f"postgres:{_pg_target(options.get('dsn'))}:{options.get('table') or 'events'}"
    if kind in ("jsonl", "parquet"):
        return f"{kind}:{os.path.abspath(options['path'])}"
    if kind == "redis":
        return f"redis:{options.get('url', 'redis://127.0.0.1:6379')}:{options['stream']}"
    return f"{kind}:" + ",".join(f"{k}={v}" for k, v in sorted(options.items()))


def default_checkpoint(file: Path, destination: str) -> Path:
    """``FILE.<kind>-<hash>.checkpoint``: one checkpoint per (file, destination) pair."""
    kind = destination.split(":", 1)[0]
    digest = hashlib.sha256(destination.encode()).hexdigest()[:8]
    return file.with_name(f"{file.name}.{kind}-{digest}.checkpoint")


def import_callable(ref: str) -> Callable[..., Any]:
    """Import ``module:function`` (or ``path/file.py:function``).

    Raises:
        ConfigError: It cannot be imported or is not callable (one line).
    """
    module_ref, sep, attribute = ref.rpartition(":")
    if not sep or not module_ref or not attribute:
        raise ConfigError(f"expected MODULE:FUNCTION, got {ref!r}")
    try:
        if module_ref.endswith(".py") or "/" in module_ref:
            path = Path(module_ref)
            if not path.is_file():
                raise ConfigError(f"cannot import {ref!r}: no such file {module_ref!r}")
            name = f"_trio_ingest_user_{path.stem}"
            module = sys.modules.get(name)
            if module is None:
                spec = importlib.util.spec_from_file_location(name, path)
                if spec is None or spec.loader is None:
                    raise ConfigError(f"cannot import {ref!r}: not a Python module")
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                sys.path.insert(0, str(path.resolve().parent))
                spec.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(module_ref)
    except ConfigError:
        raise
    except ModuleNotFoundError as exc:
        raise ConfigError(f"cannot import {ref!r}: no module named {exc.name!r}") from None
    except Exception as exc:  # noqa: BLE001 -- the user's module failed to import
        raise ConfigError(f"cannot import {ref!r}: {type(exc).__name__}: {exc}") from None
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(f"cannot import {ref!r}: {module_ref!r} has no "
                              f"attribute {part!r}") from None
    if not callable(target):
        raise ConfigError(f"{ref!r} is not callable: {target!r}")
    return target  # type: ignore[no-any-return]


# -- the schema of a pipeline file ---------------------------------------------------

# option -> (accepted types, required). Paths are str resolved against the file.
_Opt = tuple[tuple[type, ...], bool]
_STR, _INT, _NUM, _BOOL = (str,), (int,), (int, float), (bool,)
_FILE_SOURCE: dict[str, _Opt] = {
    "path": (_STR, True), "checkpoint": (_STR, False), "follow": (_BOOL, False),
    "poll_interval": (_NUM, False), "id_field": (_STR, False), "key_field": (_STR, False),
    "time_field": (_STR, False), "max_line_bytes": (_INT, False), "rate": (_NUM, False),
    "commit_interval": (_NUM, False), "name": (_STR, False),
}
SOURCES: dict[str, dict[str, _Opt]] = {
    "jsonl": _FILE_SOURCE,
    "csv": {**_FILE_SOURCE, "delimiter": (_STR, False), "quotechar": (_STR, False),
            "schema": ((str, dict), False), "fieldnames": ((list,), False)},
    "redis": {"streams": ((str, list), True), "group": (_STR, True),
              "consumer": (_STR, True), "url": (_STR, False), "block": (_NUM, False),
              "claim_idle": (_NUM, False), "max_deliveries": (_INT, False),
              "start_id": (_STR, False), "id_field": (_STR, False), "name": (_STR, False)},
    "kafka": {"topics": ((str, list), True), "group": (_STR, True),
              "bootstrap_servers": (_STR, True), "id_field": (_STR, False),
              "id_header": (_STR, False), "commit_interval": (_NUM, False),
              "revoke_timeout": (_NUM, False), "config": ((dict,), False),
              "name": (_STR, False)},
    # ``route`` is the URL path events are POSTed to (``path`` options name files here)
    "http": {"host": (_STR, False), "port": (_INT, False), "route": (_STR, False),
             "ack": (_STR, False), "id_field": (_STR, False), "max_body": (_INT, False),
             "max_events": (_INT, False), "queue_timeout": (_NUM, False),
             "retry_after": (_NUM, False), "name": (_STR, False)},
}
_FN = {"function": (_STR, True), "name": (_STR, False)}
_WORKERS = {"workers": (_INT, False), "ordered": (_BOOL, False)}
STAGES: dict[str, dict[str, _Opt]] = {
    "map": {**_FN, **_WORKERS}, "filter": {**_FN, **_WORKERS},
    "flat_map": {**_FN, **_WORKERS}, "map_batch": {**_FN, **_WORKERS},
    "map_event": {**_FN, **_WORKERS}, "key_by": dict(_FN),
    "batch": {"max_size": (_INT, True), "max_wait": (_NUM, True), "name": (_STR, False)},
    # schema: a JSON Schema file (``*.json``, beside the pipeline file) or ``module:Type``
    # (a msgspec Struct or a pydantic model)
    "validate": {"schema": (_STR, True), "convert": (_BOOL, False), "name": (_STR, False)},
}
# event-time windows: key and reduce name functions; agg a ready aggregation
# ("count", "collect", or "sum" / "min" / "max" / "mean" / "collect" with ":field")
_WINDOW: dict[str, _Opt] = {
    "key": (_STR, False), "reduce": (_STR, False), "merge": (_STR, False),
    "initial": ((str, int, float, bool, list, dict), False), "agg": (_STR, False),
    "max_delay": (_NUM, False), "allowed_lateness": (_NUM, False),
    "idle_timeout": (_NUM, False), "name": (_STR, False),
}
STAGES.update({
    "tumbling": {"size": (_NUM, True), **_WINDOW},
    "sliding": {"size": (_NUM, True), "every": (_NUM, True), **_WINDOW},
    "session": {"gap": (_NUM, True), **_WINDOW},
})
#: Stage options that name a Python callable (``module:function``): imported when checked.
FUNCTION_OPTIONS = ("function", "key", "reduce", "merge")
_AGGS = ("count", "sum", "min", "max", "mean", "collect")
_SINK_COMMON: dict[str, _Opt] = {"name": (_STR, False), "max_batch": (_INT, False),
                                 "workers": (_INT, False)}
SINKS: dict[str, dict[str, _Opt]] = {
    "sqlite": {"path": (_STR, True), "table": (_STR, True), "synchronous": (_STR, False),
               **_SINK_COMMON},
    "postgres": {"dsn": (_STR, False), "table": (_STR, False), **_SINK_COMMON},
    "jsonl": {"path": (_STR, True), "fsync": (_STR, False), **_SINK_COMMON},
    "parquet": {"path": (_STR, True), "partition_by": (_STR, False),
                "flush_every": (_INT, False), "flush_interval": (_NUM, False),
                "compression": (_STR, False), **_SINK_COMMON},
    "redis": {"stream": (_STR, True), "url": (_STR, False), "maxlen": (_INT, False),
              **_SINK_COMMON},
    "kafka": {"topic": (_STR, True), "bootstrap_servers": (_STR, True),
              "config": ((dict,), False), **_SINK_COMMON},
    "memory": dict(_SINK_COMMON),
}
PIPELINE: dict[str, _Opt] = {
    "capacity": (_INT, False), "max_batch": (_INT, False), "shutdown_timeout": (_NUM, False),
    "commit_timeout": (_NUM, False), "dead_letter_budget": ((str, dict, bool), False),
    "state": (_STR, False), "checkpoint_interval": (_NUM, False),
}
_SECTIONS = ("pipeline", "source", "stages", "sink", "dead_letter")
_PATH_OPTIONS = frozenset({"path", "checkpoint", "state"})


@attrs.frozen
class Spec:
    """A validated pipeline file: plain data, nothing opened yet."""

    file: Path
    pipeline: dict[str, Any]
    source: dict[str, Any]
    stages: list[dict[str, Any]]
    sink: dict[str, Any]
    dead_letter: dict[str, Any] | None
    functions: dict[str, Callable[..., Any]]
    #: ``validate`` stages' schemas by the text the file gives (a file name or a reference).
    schemas: dict[str, Any] = attrs.field(factory=dict)

    @property
    def destination(self) -> str:
        options = {k: v for k, v in self.sink.items() if k != "type"}
        return destination_of(self.sink["type"], options)

    def stage_names(self) -> list[str]:
        return [s.get("name") or s["type"] for s in self.stages]


def _did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _type_name(types: tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
             list: "a list", dict: "a table"}
    return " or ".join(dict.fromkeys(names[t] for t in types))


def _check_section(where: str, table: object, kinds: dict[str, dict[str, _Opt]],
                   errors: list[str], base: Path) -> dict[str, Any] | None:
    if not isinstance(table, dict):
        errors.append(f"{where}: must be a table")
        return None
    kind = table.get("type")
    if not isinstance(kind, str):
        errors.append(f"{where}.type: required, one of {', '.join(kinds)}")
        return None
    if kind not in kinds:
        errors.append(f"{where}.type: unknown type {kind!r}{_did_you_mean(kind, tuple(kinds))}; "
                      f"one of {', '.join(kinds)}")
        return None
    return _check_options(where, table, kinds[kind], errors, base, skip=("type",))


def _check_options(where: str, table: dict[str, Any], options: dict[str, _Opt],
                   errors: list[str], base: Path, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {k: table[k] for k in skip if k in table}
    for key, value in table.items():
        if key in skip:
            continue
        if key not in options:
            errors.append(f"{where}.{key}: unknown option{_did_you_mean(key, tuple(options))}")
            continue
        types, _required = options[key]
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            errors.append(f"{where}.{key}: must be {_type_name(types)}, got {value!r}")
            continue
        if key in _PATH_OPTIONS and isinstance(value, str) and value != "-":
            value = os.fspath(base / value)
        out[key] = value
    for key, (_types, required) in options.items():
        if required and key not in table:
            errors.append(f"{where}.{key}: required")
    return out


def check(path: Path, *, need_source: bool = True) -> tuple[Spec | None, list[str]]:
    """Read and validate the pipeline file at ``path``; return the spec and every problem.

    Opens no source or sink; imports the functions the stages name (they must
    import). ``need_source=False`` (redrive) accepts a file without a source.
    """
    errors: list[str] = []
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, [f"{path}: no such file"]
    except OSError as exc:
        return None, [f"{path}: cannot read: {exc.strerror}"]
    except UnicodeDecodeError as exc:
        return None, [f"{path}: not UTF-8 text: {exc.reason}"]
    except tomllib.TOMLDecodeError as exc:
        return None, [f"{path}: not valid TOML: {exc}"]
    base = path.parent
    # the file's own directory is importable, as the current directory is for `run`
    if str(base.resolve()) not in sys.path:
        sys.path.insert(0, str(base.resolve()))
    errors.extend(f"{key}: unknown section{_did_you_mean(key, _SECTIONS)}"
                  for key in data if key not in _SECTIONS)
    pipeline_table = data.get("pipeline", {})
    pipeline: dict[str, Any] = {}
    if not isinstance(pipeline_table, dict):
        errors.append("pipeline: must be a table")
    else:
        pipeline = _check_options("pipeline", pipeline_table, PIPELINE, errors, base)
        budget = pipeline.get("dead_letter_budget")
        try:
            pipeline["dead_letter_budget"] = _budget(budget)
        except (ConfigError, TypeError) as exc:
            errors.append(f"pipeline.dead_letter_budget: {exc}")
    source: dict[str, Any] | None = None
    if "source" in data:
        source = _check_section("source", data["source"], SOURCES, errors, base)
    elif need_source:
        errors.append("source: required section")
    stages: list[dict[str, Any]] = []
    raw_stages = data.get("stages", [])
    if not isinstance(raw_stages, list):
        errors.append("stages: must be an array of tables ([[stages]])")
        raw_stages = []
    functions: dict[str, Callable[..., Any]] = {}
    schemas: dict[str, Any] = {}
    for i, raw in enumerate(raw_stages):
        where = f"stages[{i}]"
        stage = _check_section(where, raw, STAGES, errors, base)
        if stage is None:
            continue
        stages.append(stage)
        for option in FUNCTION_OPTIONS:
            ref = stage.get(option)
            if isinstance(ref, str):
                try:
                    functions[ref] = import_callable(ref)
                except ConfigError as exc:
                    errors.append(f"{where}.{option}: {exc}")
        if stage["type"] == "validate" and isinstance(stage.get("schema"), str):
            try:
                schemas[stage["schema"]] = _schema(stage["schema"], base)
            except ConfigError as exc:
                errors.append(f"{where}.schema: {exc}")
        if "agg" in stage:
            problem = _check_agg(stage["agg"])
            if problem:
                errors.append(f"{where}.agg: {problem}")
        if stage["type"] in ("tumbling", "sliding", "session") and (
            "agg" in stage and "reduce" in stage
        ):
            errors.append(f"{where}: give either 'agg' or 'reduce', not both")
    names = [s.get("name") or s["type"] for s in stages]
    errors.extend(f"stages: several stages are named {name!r}: give them distinct names"
                  for name in sorted({n for n in names if names.count(n) > 1}))
    sink = None
    if "sink" in data:
        sink = _check_section("sink", data["sink"], SINKS, errors, base)
    else:
        errors.append("sink: required section")
    if sink is not None and sink.get("type") in ("sqlite", "postgres") and "table" in sink:
        problem = check_table(sink["table"], "sink.table")
        if problem:
            errors.append(problem)
    if sink is not None and sink.get("type") == "postgres" and "dsn" in sink:
        problem = check_dsn(sink["dsn"], "sink.dsn")
        if problem:
            errors.append(problem)
    dead = None
    if "dead_letter" in data:
        dead = _check_section("dead_letter", data["dead_letter"], SINKS, errors, base)
    if errors:
        return None, errors
    assert sink is not None
    spec = Spec(file=path, pipeline=pipeline, source=source or {}, stages=stages, sink=sink,
                dead_letter=dead, functions=functions, schemas=schemas)
    return spec, []


def _schema(ref: str, base: Path) -> Any:
    """A ``validate`` stage's schema: a JSON Schema file's content, or the type ``ref`` names.

    Raises:
        ConfigError: The file cannot be read or is not a JSON object; the reference
            does not import.
    """
    if ref.endswith(".json"):
        file = base / ref
        try:
            schema = json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"no such JSON Schema file: {os.fspath(file)!r}") from None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ConfigError(f"cannot read JSON Schema {os.fspath(file)!r}: {exc}") from None
        if not isinstance(schema, dict):
            raise ConfigError(f"JSON Schema {os.fspath(file)!r} must be a JSON object")
        return schema
    return import_callable(ref)  # a msgspec Struct or pydantic model class is callable


def _budget(value: object) -> DeadLetterBudget | None:
    if value is None or value is True:
        return DEFAULT_BUDGET
    if value is False:
        return None
    if isinstance(value, str):
        return DeadLetterBudget.parse(value)
    if isinstance(value, dict):
        return DeadLetterBudget(**value)
    raise ConfigError(f"must be 'off', a KEY=VALUE string or a table: {value!r}")


# -- building ------------------------------------------------------------------------


def make_sink(kind: str, options: Mapping[str, Any]) -> Any:
    """The sink of type ``kind`` (a pipeline file's names) with ``options``.

    Raises:
        ConfigError: An option is invalid; ImportError: its extra is missing.
    """
    from .. import sinks

    opts = dict(options)
    if kind == "sqlite":
        return sinks.SQLite(opts.pop("path"), opts.pop("table"), **opts)
    if kind == "postgres":
        return sinks.Postgres(opts.pop("dsn", None), opts.pop("table", None), **opts)
    if kind == "jsonl":
        return sinks.JsonLines(opts.pop("path"), **opts)
    if kind == "parquet":
        return sinks.Parquet(opts.pop("path"), **opts)
    if kind == "redis":
        return sinks.RedisStreams(opts.pop("stream"), **opts)
    if kind == "kafka":
        config = opts.pop("config", {})
        return sinks.Kafka(opts.pop("topic"), **opts, **config)
    if kind == "memory":
        return sinks.Memory(**opts)
    raise ConfigError(f"unknown sink type {kind!r}")


def make_source(kind: str, options: Mapping[str, Any], destination: str) -> Any:
    """The source of type ``kind``; file sources get a checkpoint per (file, destination)."""
    from .. import sources

    opts = dict(options)
    if kind in ("jsonl", "csv"):
        path = opts.pop("path")
        if path != "-" and "checkpoint" not in opts:
            opts["checkpoint"] = default_checkpoint(Path(path), destination)
        if path != "-":
            opts["destination"] = destination
        if kind == "jsonl":
            return sources.JsonLines(path, **opts)
        return sources.CSV(path, **opts)
    if kind == "redis":
        from ..sources._redis import RedisStreams

        streams = opts.pop("streams")
        return RedisStreams(streams, opts.pop("group"), opts.pop("consumer"), **opts)
    if kind == "kafka":
        config = opts.pop("config", {})
        return sources.Kafka(opts.pop("topics"), **opts, **config)
    if kind == "http":
        if "route" in opts:
            opts["path"] = opts.pop("route")
        return sources.HTTP(**opts)
    raise ConfigError(f"unknown source type {kind!r}")


def make_stages(spec: Spec, start_at: str | None = None) -> list[Any]:
    """The stages of ``spec``, from the one named ``start_at`` on (redrive) or all.

    A ``start_at`` that names no stage gives none: the events go to the sink.
    """
    from .. import stages as ops

    made: list[Any] = []
    started = start_at is None
    for stage, name in zip(spec.stages, spec.stage_names(), strict=True):
        if not started:
            if name != start_at:
                continue
            started = True
        opts = {k: v for k, v in stage.items() if k not in ("type", "function")}
        opts.setdefault("name", name)
        kind = stage["type"]
        if kind == "batch":
            made.append(ops.batch(opts.pop("max_size"), opts.pop("max_wait"), **opts))
            continue
        if kind in ("tumbling", "sliding", "session"):
            made.append(_window(spec, kind, opts))
            continue
        if kind == "validate":
            made.append(ops.validate(spec.schemas[opts.pop("schema")], **opts))
            continue
        fn = spec.functions[stage["function"]]
        made.append(getattr(ops, kind)(fn, **opts))
    return made


def _check_agg(text: object) -> str | None:
    """What is wrong with a window's ``agg`` option, or None."""
    if not isinstance(text, str):
        return f"must be a string such as 'count' or 'sum:amount', got {text!r}"
    kind, _, field = text.partition(":")
    if kind not in _AGGS:
        choices = ", ".join(_AGGS)
        return f"unknown aggregation {kind!r}{_did_you_mean(kind, _AGGS)} (one of {choices})"
    if kind == "count" and field:
        return "'count' takes no field"
    return None


def _window(spec: Spec, kind: str, opts: dict[str, Any]) -> Any:
    """A window stage of a pipeline file: functions resolved, ``agg`` made."""
    from ..stages import agg as aggs
    from ..stages import windows

    for option in ("key", "reduce", "merge"):
        if option in opts:
            opts[option] = spec.functions[opts[option]]
    if "agg" in opts:
        name, _, field = opts.pop("agg").partition(":")
        made = getattr(aggs, name)
        opts["agg"] = made() if name == "count" else made(field or None)
    if kind == "tumbling":
        return windows.tumbling(opts.pop("size"), **opts)
    if kind == "sliding":
        return windows.sliding(opts.pop("size"), opts.pop("every"), **opts)
    return windows.session(opts.pop("gap"), **opts)


def build(spec: Spec, *, source: Any = None, start_at: str | None = None) -> Any:
    """A ``Pipeline`` from ``spec`` (``source`` replaces the file's, for redrive).

    Raises:
        ConfigError: A value was refused by the object it configures, prefixed
            by where it is in the file.
    """
    from .._pipeline import Pipeline

    section = "source"
    try:
        if source is None:
            src = spec.source
            source = make_source(src["type"], {k: v for k, v in src.items() if k != "type"},
                                 spec.destination)
        section = "stages"
        stages = make_stages(spec, start_at)
        section = "sink"
        sink = make_sink(spec.sink["type"], {k: v for k, v in spec.sink.items() if k != "type"})
        dead = None
        if spec.dead_letter is not None:
            section = "dead_letter"
            options = {k: v for k, v in spec.dead_letter.items() if k != "type"}
            options.setdefault("name", "dead_letters")
            dead = make_sink(spec.dead_letter["type"], options)
        section = "pipeline"
        options = dict(spec.pipeline)
        if "state" in options:  # a path: the embedded durable store
            options["state"] = SQLiteState(options["state"])
        return Pipeline(source, *stages, sink=sink, dead_letter=dead, **options)
    except ConfigError as exc:
        raise ConfigError(f"{section}: {exc}") from None
