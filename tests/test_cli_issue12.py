"""The command you can trust (issue 12): checkpoints per destination, the dead-letter
budget, inputs and outputs, pipeline files, redrive, and one-line errors."""

from __future__ import annotations

import gzip
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from trio_ingest.cli._app import cli
from trio_ingest.cli._spec import default_checkpoint, destination_of
from trio_ingest.sources._files import read_checkpoint


def invoke(*args: str, stdin: bytes | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False, input=stdin)


def summary(result: Result) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def rows(db: Path, table: str) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute(f'SELECT id FROM "{table}" ORDER BY id')]
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def one_line_error(result: Result, pattern: str, code: int) -> None:
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert pattern in lines[0], lines[0]


def orders(path: Path, n: int, *, field: str = "id") -> list[str]:
    path.write_text("".join(json.dumps({field: f"o{i}", "n": i}) + "\n" for i in range(n)))
    return sorted(f"o{i}" for i in range(n))


# -- defect 1: a checkpoint belongs to (source, destination) ---------------------------


def test_a_rerun_after_fixing_a_wrong_flag_loads_everything(tmp_path: Path) -> None:
    # regression: the checkpoint depended on the file only; the run with --id-field ID
    # dead-lettered every line, committed them, and the fixed rerun loaded nothing (exit 0)
    data = tmp_path / "orders.jsonl"
    ids = orders(data, 3000)
    db = tmp_path / "out.db"
    wrong = invoke("ingest", str(data), "--sqlite", str(db), "--table", "t",
                   "--id-field", "ID", "--json")
    assert wrong.exit_code == 1
    assert "dead-letter budget exceeded" in summary(wrong)["error"]
    assert "missing id field 'ID'" in summary(wrong)["error"]
    fixed = invoke("ingest", str(data), "--sqlite", str(db), "--table", "t", "--json")
    assert fixed.exit_code == 0, fixed.output
    assert summary(fixed)["received"] == 3000
    assert rows(db, "t") == ids


@pytest.mark.parametrize("change", ["database", "table", "jsonl"])
def test_the_same_file_into_another_destination_loads_everything(
    tmp_path: Path, change: str
) -> None:
    data = tmp_path / "orders.jsonl"
    ids = orders(data, 500)
    first = invoke("ingest", str(data), "--sqlite", str(tmp_path / "a.db"), "--table", "t",
                   "--json")
    assert first.exit_code == 0 and summary(first)["table_rows"] == 500
    if change == "database":
        args = ["--sqlite", str(tmp_path / "b.db"), "--table", "t"]
    elif change == "table":
        args = ["--sqlite", str(tmp_path / "a.db"), "--table", "u"]
    else:
        args = ["--jsonl", str(tmp_path / "out.jsonl")]
    second = invoke("ingest", str(data), *args, "--json")
    assert second.exit_code == 0, second.output
    assert summary(second)["received"] == 500
    if change == "jsonl":
        lines = (tmp_path / "out.jsonl").read_text().splitlines()
        assert sorted(json.loads(line)["id"] for line in lines) == ids
    else:
        assert summary(second)["table_rows"] == 500


def test_a_checkpoint_of_another_destination_is_refused_with_the_fix(tmp_path: Path) -> None:
    data = tmp_path / "orders.jsonl"
    orders(data, 50)
    checkpoint = tmp_path / "shared.checkpoint"
    ok = invoke("ingest", str(data), "--sqlite", str(tmp_path / "a.db"), "--table", "t",
                "--checkpoint", str(checkpoint), "--quiet")
    assert ok.exit_code == 0
    refused = invoke("ingest", str(data), "--sqlite", str(tmp_path / "b.db"), "--table", "t",
                     "--checkpoint", str(checkpoint), "--quiet")
    one_line_error(refused, "belongs to destination 'sqlite:", 1)
    assert "--reset" in refused.stderr
    again = invoke("ingest", str(data), "--sqlite", str(tmp_path / "b.db"), "--table", "t",
                   "--checkpoint", str(checkpoint), "--reset", "--json")
    assert again.exit_code == 0 and summary(again)["table_rows"] == 50


def test_a_checkpoint_without_fingerprint_is_not_trusted(tmp_path: Path) -> None:
    data = tmp_path / "orders.jsonl"
    orders(data, 50)
    db = tmp_path / "a.db"
    checkpoint = default_checkpoint(data, destination_of("sqlite", {"path": db, "table": "t"}))
    checkpoint.write_text(json.dumps({"offset": 200, "line": 9, "destination": destination_of(
        "sqlite", {"path": db, "table": "t"})}))
    refused = invoke("ingest", str(data), "--sqlite", str(db), "--table", "t", "--quiet")
    one_line_error(refused, "holds no fingerprint", 1)


def test_reset_and_checkpoint_show_reset(tmp_path: Path) -> None:
    data = tmp_path / "orders.jsonl"
    orders(data, 100)
    db = tmp_path / "a.db"
    assert invoke("ingest", str(data), "--sqlite", str(db), "--table", "t", "-q").exit_code == 0
    assert invoke("ingest", str(data), "--jsonl", str(tmp_path / "o.jsonl"), "-q").exit_code == 0
    shown = invoke("checkpoint", "show", str(data), "--json")
    assert shown.exit_code == 0
    entries = json.loads(shown.stdout)
    assert sorted(e["destination"].split(":")[0] for e in entries) == ["jsonl", "sqlite"]
    assert all(e["line"] == 100 for e in entries)
    text = invoke("checkpoint", "show", str(data))
    assert "line 100" in text.stdout
    rerun = invoke("ingest", str(data), "--sqlite", str(db), "--table", "t", "--json")
    assert summary(rerun)["received"] == 0
    reset = invoke("checkpoint", "reset", str(data), "--destination", "sqlite")
    assert reset.exit_code == 0 and "removed" in reset.stdout
    assert len(json.loads(invoke("checkpoint", "show", str(data), "--json").stdout)) == 1
    again = invoke("ingest", str(data), "--sqlite", str(db), "--table", "t", "--json")
    assert summary(again)["received"] == 100
    assert summary(again)["rows_inserted"] == 0  # idempotent: nothing stored twice
    forced = invoke("ingest", str(data), "--sqlite", str(db), "--table", "t", "--reset",
                    "--json")
    assert summary(forced)["received"] == 100


# -- defect 2: the dead-letter budget ---------------------------------------------------


@pytest.mark.parametrize("case", ["csv_on_jsonl", "wrong_time_field"])
def test_plainly_wrong_input_fails_with_the_budget_option_and_commits_nothing(
    tmp_path: Path, case: str
) -> None:
    # regression: every line dead-lettered and the run said "completed", exit 0
    data = tmp_path / "orders.jsonl"
    orders(data, 5000)
    db = tmp_path / "a.db"
    extra = ["--format", "csv"] if case == "csv_on_jsonl" else ["--time-field", "ts"]
    result = invoke("ingest", str(data), "--sqlite", str(db), "--table", "t", *extra,
                    "--quiet")
    one_line_error(result, "dead-letter budget exceeded", 1)
    assert "--dead-letter-budget" in result.stderr
    reason = "missing id field 'id'" if case == "csv_on_jsonl" else "missing time field 'ts'"
    assert reason in result.stderr
    checkpoint = default_checkpoint(data, destination_of("sqlite", {"path": db, "table": "t"}))
    assert read_checkpoint(checkpoint) is None
    off = invoke("ingest", str(data), "--sqlite", str(db), "--table", "t", *extra,
                 "--dead-letter-budget", "off", "--json")
    assert off.exit_code == 0 and summary(off)["dead_lettered"] == (
        4999 if case == "csv_on_jsonl" else 5000)


def test_a_gzip_file_is_read_not_dead_lettered(tmp_path: Path) -> None:
    # regression: a .gz file was read as text: every line dead-lettered, exit 0
    data = tmp_path / "orders.jsonl.gz"
    with gzip.open(data, "wt") as f:
        f.write("".join(json.dumps({"id": f"g{i}"}) + "\n" for i in range(2000)))
    db = tmp_path / "a.db"
    result = invoke("ingest", str(data), "--sqlite", str(db), "--table", "t", "--json")
    assert result.exit_code == 0, result.output
    assert summary(result)["compression"] == "gzip"
    assert len(rows(db, "t")) == 2000
    # resumable: a rerun reads nothing
    again = invoke("ingest", str(data), "--sqlite", str(db), "--table", "t", "--json")
    assert summary(again)["received"] == 0


# -- inputs and outputs -----------------------------------------------------------------


def test_stdin_zstd_and_typed_csv_into_parquet(tmp_path: Path) -> None:
    zstd = pytest.importorskip("zstandard")
    db = tmp_path / "a.db"
    piped = invoke("ingest", "-", "--sqlite", str(db), "--table", "t", "--json",
                   stdin=b'{"id": "s1"}\n{"id": null}\n{"id": "s2"}\n')
    assert piped.exit_code == 0, piped.output
    assert summary(piped)["checkpoint"] is None
    assert rows(db, "t") == ["s1", "s2"]
    letters = (Path.cwd() / "stdin.dead-letters.jsonl")
    try:
        assert "id field 'id' is null" in letters.read_text()
    finally:
        letters.unlink(missing_ok=True)
    packed = tmp_path / "orders.data"  # no extension: the content says zstd
    packed.write_bytes(zstd.ZstdCompressor().compress(
        "".join(json.dumps({"id": f"z{i}"}) + "\n" for i in range(300)).encode()))
    result = invoke("ingest", str(packed), "--jsonl", str(tmp_path / "out.jsonl"), "--json")
    assert result.exit_code == 0 and summary(result)["compression"] == "zstd"
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 300
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = tmp_path / "in.csv"
    table.write_text("id,qty,price\na,1,2.5\nb,2,3\nc,x,1\n")
    out = tmp_path / "pq"
    typed = invoke("ingest", str(table), "--parquet", str(out), "--schema",
                   "qty:int,price:float", "--dead-letter-budget", "off", "--json")
    assert typed.exit_code == 0, typed.output
    assert summary(typed)["dead_lettered"] == 1
    files = sorted(out.rglob("*.parquet"))
    assert files
    read = pq.read_table(files[0]).to_pylist()
    assert sorted((r["event_id"], r["qty"], r["price"]) for r in read) == [
        ("a", 1, 2.5), ("b", 2, 3.0)]


# -- defect 5: errors are one line ------------------------------------------------------


def test_errors_are_one_line(tmp_path: Path) -> None:
    one_line_error(invoke("ingst", "x"), "no such command 'ingst' (did you mean 'ingest'?)", 2)
    one_line_error(invoke("--bogus"), "no such option '--bogus'", 2)
    one_line_error(invoke("top", "--url", "http://127.0.0.1:1/"), "cannot reach", 1)
    one_line_error(invoke("checkpoint", "sho", "x"), "no such command 'sho'", 2)
    one_line_error(invoke("validate", str(tmp_path / "none.toml")), "none.toml: no such file", 2)


def test_a_busy_metrics_port_is_one_line(tmp_path: Path) -> None:
    import socket

    data = tmp_path / "orders.jsonl"
    orders(data, 10)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = invoke("ingest", str(data), "--sqlite", str(tmp_path / "a.db"), "--table",
                        "t", "--metrics-port", str(port), "--quiet")
    one_line_error(result, f"cannot serve metrics on 127.0.0.1:{port}", 2)


def test_a_missing_extra_names_the_install_line(tmp_path: Path) -> None:
    # coredis hidden: worker and produce must say which extra to install
    code = textwrap.dedent("""
        import sys
        sys.modules["coredis"] = None
        from trio_ingest.cli import main
        main(["produce", "x"])
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: 'produce' needs the 'redis' extra: pip install 'trio-ingest[redis]' "
        "(coredis is missing)"]


# -- pipeline files ---------------------------------------------------------------------

MODULE = """
import os


def enrich(payload):
    if os.environ.get("TI_TEST_BUGGY") and payload["n"] % 10 == 0:
        raise KeyError("price")
    return {**payload, "enriched": True}
"""

PIPELINE = """
[pipeline]
capacity = 1000
[source]
type = "jsonl"          # also csv, redis, kafka when present
path = "in.jsonl"
[[stages]]
type = "map"            # filter, flat_map, key_by, batch, ...; windows when present
function = "mymodule:enrich"
[sink]
type = "sqlite"         # postgres, parquet, jsonl, redis, ...
path = "out.db"
table = "events"
[dead_letter]
type = "jsonl"
path = "dead.jsonl"
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / f"mymodule_{tmp_path.name[-8:]}.py").write_text(MODULE)
    module = f"mymodule_{tmp_path.name[-8:]}"
    (tmp_path / "pipeline.toml").write_text(PIPELINE.replace("mymodule", module))
    orders(tmp_path / "in.jsonl", 1000)
    monkeypatch.delenv("TI_TEST_BUGGY", raising=False)
    return tmp_path


def test_the_minimal_pipeline_file_validates_and_runs(project: Path) -> None:
    ok = invoke("validate", str(project / "pipeline.toml"))
    assert ok.exit_code == 0 and "valid" in ok.stdout
    result = invoke("run", str(project / "pipeline.toml"), "--json")
    assert result.exit_code == 0, result.output
    assert summary(result)["delivered"] == 1000
    assert len(rows(project / "out.db", "events")) == 1000
    again = invoke("run", str(project / "pipeline.toml"), "--json")
    assert summary(again)["received"] == 0  # resumed from its checkpoint


def test_validate_reports_every_error_with_its_path(project: Path) -> None:
    broken = project / "broken.toml"
    broken.write_text(textwrap.dedent("""
        [pipelin]
        capacity = 1
        [source]
        type = "jsn"
        [[stages]]
        type = "map"
        function = "no_such_module_here:f"
        [[stages]]
        type = "filter"
        [sink]
        type = "sqlite"
        path = "out.db"
        tabel = "events"
        [dead_letter]
        type = "jsonl"
        path = 3
    """))
    result = invoke("validate", str(broken))
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    lines = [line.removeprefix(f"error: {broken}: ") for line in result.stderr.splitlines()]
    assert lines == [
        "pipelin: unknown section (did you mean 'pipeline'?)",
        "source.type: unknown type 'jsn' (did you mean 'jsonl'?); one of jsonl, csv, redis, "
        "kafka, http",
        "stages[0].function: cannot import 'no_such_module_here:f': no module named "
        "'no_such_module_here'",
        "stages[1].function: required",
        "sink.tabel: unknown option (did you mean 'table'?)",
        "sink.table: required",
        "dead_letter.path: must be a string, got 3",
    ]
    run = invoke("run", str(broken))
    assert run.exit_code == 2 and run.stderr == result.stderr
    assert not (project / "out.db").exists()  # nothing opened, no data moved
    bad_toml = project / "bad.toml"
    bad_toml.write_text("[source\n")
    one_line_error(invoke("validate", str(bad_toml)), "not valid TOML", 2)


# -- redrive ----------------------------------------------------------------------------


def test_redrive_after_a_fixed_bug_stores_every_event_exactly_once(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TI_TEST_BUGGY", "1")
    first = invoke("run", str(project / "pipeline.toml"), "--json")
    assert first.exit_code == 0 and summary(first)["dead_lettered"] == 100
    dead = project / "dead.jsonl"
    # a crash may leave a record twice in a dead-letter file (at-least-once)
    lines = dead.read_text().splitlines()
    dead.write_text("\n".join([*lines, lines[0]]) + "\n")
    dry = invoke("redrive", str(dead), str(project / "pipeline.toml"), "--dry-run", "--json")
    assert dry.exit_code == 0
    counts = summary(dry)
    assert counts["duplicates"] == 1 and counts["to_replay"] == 100
    assert counts["by_reason"] == {"KeyError: 'price'": 100}
    monkeypatch.delenv("TI_TEST_BUGGY")  # the bug is fixed
    fixed = invoke("redrive", str(dead), str(project / "pipeline.toml"), "--json")
    assert fixed.exit_code == 0, fixed.output
    assert summary(fixed)["delivered"] == 100
    conn = sqlite3.connect(project / "out.db")
    stored = conn.execute("SELECT id, payload FROM events").fetchall()
    conn.close()
    assert len(stored) == len({i for i, _ in stored}) == 1000
    assert all(json.loads(p)["enriched"] for _, p in stored)  # the fixed function ran once
    again = invoke("redrive", str(dead), str(project / "pipeline.toml"), "--json")
    assert again.exit_code == 0
    assert len(rows(project / "out.db", "events")) == 1000  # nothing stored twice
    none = invoke("redrive", str(dead), str(project / "pipeline.toml"), "--reason",
                  "ValueError", "--json")
    assert none.exit_code == 0 and summary(none)["selected"] == 0


def test_redrive_quarantines_what_keeps_failing(project: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    text = (project / "pipeline.toml").read_text()
    (project / "pipeline.toml").write_text(text.replace(
        "capacity = 1000", 'capacity = 1000\ndead_letter_budget = "off"'))
    monkeypatch.setenv("TI_TEST_BUGGY", "1")
    assert invoke("run", str(project / "pipeline.toml"), "-q").exit_code == 0
    dead = project / "dead.jsonl"
    for round_ in range(2):
        result = invoke("redrive", str(dead), str(project / "pipeline.toml"),
                        "--max-redrives", "2", "--json")
        assert result.exit_code == 0, result.output
        assert summary(result)["to_replay"] == 100, round_
    final = invoke("redrive", str(dead), str(project / "pipeline.toml"), "--max-redrives", "2",
                   "--json")
    assert final.exit_code == 0
    assert summary(final)["to_quarantine"] == 100 and summary(final)["to_replay"] == 0
    quarantine = project / "dead.jsonl.quarantine.jsonl"
    assert len(quarantine.read_text().splitlines()) == 100
    repeat = invoke("redrive", str(dead), str(project / "pipeline.toml"), "--max-redrives", "2",
                    "-q")
    assert repeat.exit_code == 0
    assert len(quarantine.read_text().splitlines()) == 100  # set aside once


def test_redrive_through_a_factory(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TI_TEST_BUGGY", "1")
    assert invoke("run", str(project / "pipeline.toml"), "-q").exit_code == 0
    monkeypatch.delenv("TI_TEST_BUGGY")
    factory = project / "factory.py"
    factory.write_text(textwrap.dedent(f"""
        import trio_ingest as ti
        from {next(project.glob("mymodule_*.py")).stem} import enrich

        def build(source, db, table):
            return ti.Pipeline(source, ti.map(enrich), sink=ti.sinks.SQLite(db, table),
                               dead_letter=ti.sinks.JsonLines("{project}/dead2.jsonl"))
    """))
    result = invoke("redrive", str(project / "dead.jsonl"), f"{factory}:build", "-o",
                    f"db={project / 'out.db'}", "-o", "table=events", "--json")
    assert result.exit_code == 0, result.output
    assert summary(result)["delivered"] == 100
    assert len(rows(project / "out.db", "events")) == 1000
    one_line_error(invoke("redrive", str(project / "dead.jsonl"), f"{factory}:build", "-o",
                          "bad"), "-o/--option must be KEY=VALUE", 2)
    os.environ.pop("TI_TEST_BUGGY", None)


def test_the_same_file_into_sqlite_then_postgres_loads_everything(
    tmp_path: Path, postgres_dsn: str
) -> None:
    # regression: ingesting into --postgres after SQLite found the file's checkpoint: 0 rows
    import uuid

    import psycopg

    table = f"cli_dest_{uuid.uuid4().hex[:8]}"
    data = tmp_path / "orders.jsonl"
    orders(data, 300)
    assert invoke("ingest", str(data), "--sqlite", str(tmp_path / "a.db"), "--table", "t",
                  "-q").exit_code == 0
    try:
        result = invoke("ingest", str(data), "--postgres", postgres_dsn, "--table", table,
                        "--json")
        assert result.exit_code == 0, result.output
        assert summary(result)["received"] == 300
        with psycopg.connect(postgres_dsn) as conn:
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (300,)
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")


# -- pipeline files with the stages and connectors that came later -----------------------


def test_a_pipeline_file_with_an_event_time_window_runs(tmp_path: Path) -> None:
    module = f"winmod_{tmp_path.name[-8:]}"
    (tmp_path / f"{module}.py").write_text("def user(p):\n    return p['user']\n")
    (tmp_path / "in.jsonl").write_text("".join(
        json.dumps({"id": f"e{i}", "user": f"u{i % 3}", "amount": 1.5, "ts": float(i)}) + "\n"
        for i in range(30)
    ))
    (tmp_path / "win.toml").write_text(textwrap.dedent(f"""
        [source]
        type = "jsonl"
        path = "in.jsonl"
        time_field = "ts"
        [[stages]]
        type = "tumbling"
        size = 10.0
        key = "{module}:user"
        agg = "sum:amount"
        name = "spend"
        [sink]
        type = "sqlite"
        path = "out.db"
        table = "spend"
    """))
    assert invoke("validate", str(tmp_path / "win.toml")).exit_code == 0
    result = invoke("run", str(tmp_path / "win.toml"), "--json")
    assert result.exit_code == 0, result.output
    # 3 windows of 10 s x 3 users, each summing 10 / 3 events of 1.5
    ids = rows(tmp_path / "out.db", "spend")
    assert len(ids) == 9 and all(i.startswith("spend:u") for i in ids)


def test_a_kafka_pipeline_file_validates_without_a_broker(tmp_path: Path) -> None:
    (tmp_path / "k.toml").write_text(textwrap.dedent("""
        [source]
        type = "kafka"
        topics = ["events"]
        group = "loaders"
        bootstrap_servers = "127.0.0.1:1"
        id_field = "id"
        config = {"session.timeout.ms" = 6000}
        [[stages]]
        type = "tumbling"
        size = 1.0
        agg = "avg"
        [sink]
        type = "kafka"
        topic = "out"
        bootstrap_servers = "127.0.0.1:1"
    """))
    result = invoke("validate", str(tmp_path / "k.toml"))
    assert result.exit_code == 2
    assert "stages[0].agg: unknown aggregation 'avg'" in result.output
    fixed = (tmp_path / "k.toml").read_text().replace('"avg"', '"count"')
    (tmp_path / "k.toml").write_text(fixed)
    ok = invoke("validate", str(tmp_path / "k.toml"))
    assert ok.exit_code == 0, ok.output


def test_kafka_types_of_a_pipeline_file_build_the_kafka_connectors() -> None:
    from trio_ingest.cli import _spec

    source = _spec.make_source(
        "kafka", {"topics": ["t"], "group": "g", "bootstrap_servers": "127.0.0.1:1",
                  "config": {"session.timeout.ms": 6000}}, "dest",
    )
    sink = _spec.make_sink("kafka", {"topic": "out", "bootstrap_servers": "127.0.0.1:1"})
    assert type(source).__name__ == "Kafka" and type(sink).__name__ == "Kafka"
