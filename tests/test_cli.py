"""The trio-ingest command: demo, ingest (with resume after stops and crashes), run, errors."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from fresh import fresh_python

from trio_ingest.cli._app import cli
from trio_ingest.cli._spec import default_checkpoint, destination_of
from trio_ingest.sources._files import read_checkpoint


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def summary(result: Result) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def table_ids(db: Path, table: str) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute(f'SELECT id FROM "{table}" ORDER BY id')]
    finally:
        conn.close()


def sqlite_checkpoint(data: Path, db: Path, table: str) -> Path:
    """Where ``ingest DATA --sqlite DB --table TABLE`` keeps its checkpoint by default."""
    return default_checkpoint(data, destination_of("sqlite", {"path": db, "table": table}))


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_one_line_error(result: Result, pattern: str) -> None:
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert pattern in lines[0], lines[0]


# -- demo -----------------------------------------------------------------------------


def test_demo_end_to_end(tmp_path: Path) -> None:
    db = tmp_path / "demo.sqlite"
    dead = tmp_path / "dead.jsonl"
    result = invoke(
        "demo", "--events", "600", "--latency-min", "0", "--latency-max", "0.002",
        "--failure-rate", "0.3", "--max-attempts", "2", "--backoff", "0.001",
        "--invalid-rate", "0.05", "--batch-size", "20", "--seed", "5",
        "--db", str(db), "--dead-letters", str(dead), "--json",
    )
    assert result.exit_code == 0, result.output
    report = summary(result)
    assert report["completed"] and report["balanced"]
    assert report["received"] == 600
    assert report["delivered"] + report["dead_lettered"] == 600
    assert report["retries"] > 0
    assert len(table_ids(db, "readings")) == report["delivered"] == report["sqlite_rows"]
    letters = jsonl(dead)
    assert len(letters) == report["dead_lettered"] == report["dead_letter_lines"]
    nodes = {letter["node"] for letter in letters}
    # invalid readings fail validation; with 2 attempts at a 30% failure rate some
    # writes outlive the retry policy too
    assert "validate" in nodes
    assert nodes <= {"validate", "sqlite"}
    reasons = [letter["error"] for letter in letters if letter["node"] == "validate"]
    assert all(("temperature_c" in r) or ("humidity_pct" in r) for r in reasons)
    assert report["edges"]["enrich->sqlite"]["capacity"] == 1000


def test_demo_prints_a_summary_table_and_starts_fresh(tmp_path: Path) -> None:
    db = tmp_path / "demo.sqlite"
    dead = tmp_path / "dead.jsonl"
    args = ["demo", "-n", "200", "--latency-min", "0", "--latency-max", "0", "--seed", "1",
            "--db", str(db), "--dead-letters", str(dead)]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    for label in ("received", "delivered", "retried", "dead-lettered", "filtered",
                  "throughput", "latency p50 / p99", "producers blocked", "peak depth",
                  "accounting ✓"):
        assert label in first.stdout
    second = invoke(*args, "--json")
    # the demo replaced its table and file: the counts are of this run alone
    assert len(table_ids(db, "readings")) == summary(second)["delivered"]
    assert len(jsonl(dead)) == summary(second)["dead_lettered"]


def test_demo_quiet_prints_nothing(tmp_path: Path) -> None:
    result = invoke("demo", "-n", "50", "--latency-max", "0", "--latency-min", "0", "-q",
                    "--db", str(tmp_path / "d.sqlite"),
                    "--dead-letters", str(tmp_path / "d.jsonl"))
    assert result.exit_code == 0
    assert result.stdout == ""
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--events", "many"], "invalid value for '--events'"),
        (["--events", "-1"], "invalid value for '--events'"),
        (["--failure-rate", "1"], "invalid value for '--failure-rate'"),
        (["--workers", "0"], "invalid value for '--workers'"),
        (["--latency-min", "0.5", "--latency-max", "0.1"], "--latency-min (0.5) is above"),
        (["--no-such-flag"], "no such option '--no-such-flag'"),
    ],
)
def test_demo_bad_flags(tmp_path: Path, args: list[str], message: str) -> None:
    result = invoke("demo", *args, "--db", str(tmp_path / "d.sqlite"))
    assert_one_line_error(result, message)
    assert result.exit_code == 2


def test_demo_unwritable_paths(tmp_path: Path) -> None:
    result = invoke("demo", "-n", "10", "--db", str(tmp_path / "no" / "d.sqlite"))
    assert_one_line_error(result, "cannot use SQLite database")
    result = invoke("demo", "-n", "10", "--db", str(tmp_path / "d.sqlite"),
                    "--dead-letters", str(tmp_path / "no" / "d.jsonl"))
    assert_one_line_error(result, "cannot write dead-letter file")


# -- ingest ---------------------------------------------------------------------------


def make_input(path: Path, n: int, *, bad_every: int = 0) -> list[str]:
    """Write ``n`` valid lines (and a malformed one every ``bad_every``); return the ids."""
    lines = []
    for i in range(n):
        lines.append(json.dumps({"id": f"r{i:06d}", "value": i, "group": i % 4}))
        if bad_every and i % bad_every == 0:
            lines.append('{"value": "no id here"}')
    path.write_text("\n".join(lines) + "\n")
    return [f"r{i:06d}" for i in range(n)]


def test_ingest_loads_a_file_and_a_rerun_adds_nothing(tmp_path: Path) -> None:
    data = tmp_path / "orders.jsonl"
    ids = make_input(data, 500, bad_every=100)
    db = tmp_path / "out.db"
    result = invoke("ingest", str(data), "--sqlite", str(db), "--table", "orders",
                    "--key-field", "group", "--json")
    assert result.exit_code == 0, result.output
    report = summary(result)
    assert report["delivered"] == 500
    assert report["dead_lettered"] == 5
    assert report["rows_inserted"] == report["table_rows"] == 500
    assert table_ids(db, "orders") == ids
    letters = jsonl(tmp_path / "orders.jsonl.dead-letters.jsonl")
    assert [letter["error"] for letter in letters] == [
        f"line {line}: missing id field 'id'" for line in (2, 103, 204, 305, 406)]
    checkpoint = read_checkpoint(sqlite_checkpoint(data, db, "orders"))
    assert checkpoint is not None and checkpoint["offset"] == data.stat().st_size
    again = invoke("ingest", str(data), "--sqlite", str(db), "--table", "orders", "--json")
    assert again.exit_code == 0
    assert summary(again)["received"] == 0
    assert table_ids(db, "orders") == ids


def test_ingest_every_malformed_kind_reaches_the_dead_letter_file(tmp_path: Path) -> None:
    data = tmp_path / "mixed.jsonl"
    raw = [
        b'{"id": "a1"}',
        b"{bad json",
        b'{"id": "a2"}',
        b'"just a string"',
        b'{"id": "a3"}',
        b'{"id": ""}',
        b'{"id": null}',
        b'{"id": "a4"}',
        b'{"id": "\xc3\x28"}',
        b'{"id": "a\x005"}',
        b'{"id": "a6", "pad": "' + b"x" * 100 + b'"}',
        b'{"id": "a7"}',
    ]
    data.write_bytes(b"\r\n".join(raw) + b"\r\n")
    db = tmp_path / "out.db"
    dead = tmp_path / "dead.jsonl"
    result = invoke("ingest", str(data), "--sqlite", str(db), "--table", "t",
                    "--dead-letters", str(dead), "--max-line-bytes", "80", "--json",
                    "--dead-letter-budget", "off")
    assert result.exit_code == 0, result.output
    assert table_ids(db, "t") == ["a1", "a2", "a3", "a4", "a7"]
    errors = {letter["event"]["id"]: letter["error"] for letter in jsonl(dead)}
    assert errors == {
        f"{data}:2": "line 2: bad JSON: Expecting property name enclosed in double quotes: "
                     "line 1 column 2 (char 1)",
        f"{data}:4": "line 4: expected a JSON object, got a string",
        f"{data}:6": "line 6: empty id field 'id'",
        f"{data}:7": "line 7: id field 'id' is null",
        f"{data}:9": "line 9: invalid UTF-8 at byte 9: invalid continuation byte",
        f"{data}:10": "line 10: NUL byte at column 10",
        f"{data}:11": "line 11: line longer than max_line_bytes=80",
    }
    assert all(letter["error_type"] == "MalformedLine" for letter in jsonl(dead))
    assert summary(result)["dead_lettered"] == 7


def test_ingest_duplicate_ids_give_one_row_each(tmp_path: Path) -> None:
    data = tmp_path / "dups.jsonl"
    data.write_text("".join(json.dumps({"id": f"d{i % 10}", "n": i}) + "\n" for i in range(55)))
    db = tmp_path / "out.db"
    result = invoke("ingest", str(data), "--sqlite", str(db), "--table", "t", "--json")
    assert result.exit_code == 0
    assert summary(result)["delivered"] == 55
    assert summary(result)["rows_inserted"] == 10
    assert table_ids(db, "t") == [f"d{i}" for i in range(10)]


def test_ingest_csv(tmp_path: Path) -> None:
    data = tmp_path / "people.csv"
    data.write_text("id,name,ts\n1,Ann,2024-05-01T00:00:00Z\n2,\"Bo, Jr\",1714521600\n,Nobody,1\n")
    db = tmp_path / "out.db"
    result = invoke("ingest", str(data), "--sqlite", str(db), "--table", "people",
                    "--time-field", "ts", "--json")
    assert result.exit_code == 0, result.output
    conn = sqlite3.connect(db)
    stored = conn.execute("SELECT id, event_time, payload FROM people ORDER BY id").fetchall()
    conn.close()
    assert stored == [
        ("1", 1714521600.0, '{"id":"1","name":"Ann","ts":"2024-05-01T00:00:00Z"}'),
        ("2", 1714521600.0, '{"id":"2","name":"Bo, Jr","ts":"1714521600"}'),
    ]
    assert summary(result)["dead_lettered"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.jsonl", "--sqlite", "{tmp}/o.db", "--table", "t"],
         "missing.jsonl: no such file"),
        (["{file}", "--sqlite", "{tmp}/no/dir/o.db", "--table", "t"],
         "sink 'sqlite': cannot open SQLite database"),
        (["{file}", "--sqlite", "{tmp}/o.db", "--table", "bad name"],
         "--table may hold only letters, digits and '_': 'bad name'"),
        (["{file}", "--sqlite", "{tmp}/o.db", "--table", "1abc"],
         "--table must start with a letter or '_', not a digit: '1abc'"),
        (["{file}", "--table", "t"], "give exactly one of --sqlite DB, --postgres DSN, "
                                     "--jsonl FILE, --parquet DIR"),
        (["{file}", "--sqlite", "{tmp}/o.db"], "--sqlite needs --table NAME"),
        (["{file}", "--jsonl", "{tmp}/o.jsonl", "--table", "t"],
         "--table applies to --sqlite and --postgres only"),
        (["{file}", "--postgres", "host=x port=abc", "--table", "t"],
         "--postgres is not a valid DSN: port must be a number: 'abc'"),
        (["{file}", "--postgres", "nonsense", "--table", "t"],
         "--postgres is not a valid DSN:"),
        (["{file}", "--sqlite", "{tmp}/o.db", "--table", "t", "--dead-letter-budget", "ratio=2"],
         "--dead-letter-budget: 'max_ratio' must be a number in (0, 1]: 2.0"),
        (["{file}", "--sqlite", "{tmp}/o.db", "--table", "t", "--schema", "n:int"],
         "--schema applies to CSV input only"),
        (["-", "--sqlite", "{tmp}/o.db", "--table", "t", "--follow"],
         "--follow needs a file, not stdin"),
        (["{file}", "--sqlite", "{tmp}/o.db", "--table", "t", "--batch-size", "0"],
         "invalid value for '--batch-size'"),
        (["{file}", "--sqlite", "{tmp}/o.db", "--table", "t", "--format", "xml"],
         "invalid value for '--format'"),
        (["{tmp}", "--sqlite", "{tmp}/o.db", "--table", "t"], "not a regular file"),
    ],
)
def test_ingest_errors(tmp_path: Path, args: list[str], message: str) -> None:
    data = tmp_path / "in.jsonl"
    make_input(data, 3)
    argv = [a.format(tmp=tmp_path, file=data) for a in args]
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        result = invoke("ingest", *argv)
    finally:
        os.chdir(old)
    assert_one_line_error(result, message)


def _spawn_ingest(data: Path, db: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "trio_ingest", "ingest", str(data), "--sqlite", str(db),
         "--table", "t", "--batch-size", "50", "--quiet", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def _wait_for_progress(checkpoint: Path, proc: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            stored = read_checkpoint(checkpoint)
        except Exception:
            stored = None
        if stored is not None and stored["offset"] > 0:
            return int(stored["offset"])
        time.sleep(0.02)
    raise AssertionError("no checkpoint progress within 30 s")


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_ingest_stopped_mid_run_resumes_and_stores_every_line_once(
    tmp_path: Path, how: str
) -> None:
    """Graceful stop (SIGTERM) and crash (SIGKILL) mid-file, then rerun: all lines, once."""
    data = tmp_path / "big.jsonl"
    ids = make_input(data, 6000, bad_every=500)
    db = tmp_path / "out.db"
    checkpoint = sqlite_checkpoint(data, db, "t")
    proc = _spawn_ingest(data, db, "--rate", "3000")
    try:
        _wait_for_progress(checkpoint, proc)
        proc.send_signal(getattr(signal, how))
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stopped_at = read_checkpoint(checkpoint)
    assert stopped_at is not None
    assert 0 < stopped_at["offset"] < data.stat().st_size  # really stopped in the middle
    partial = table_ids(db, "t")
    assert 0 < len(partial) < len(ids)
    with data.open("rb") as f:
        committed_lines = f.read(stopped_at["offset"]).decode().splitlines()
    assert len(committed_lines) == stopped_at["line"]
    committed_ids = {json.loads(line).get("id") for line in committed_lines} - {None}
    if how == "SIGTERM":
        assert proc.returncode == 0, err  # a graceful stop that drained is a clean exit
        assert b"Traceback" not in err
        # a graceful stop drains and commits: the checkpoint covers exactly what was written
        assert committed_ids == set(partial)
    else:
        assert proc.returncode == -signal.SIGKILL
        # a crash may lose the last commits, never commit what was not written
        assert committed_ids <= set(partial)
    rerun = invoke("ingest", str(data), "--sqlite", str(db), "--table", "t",
                   "--batch-size", "50", "--json")
    assert rerun.exit_code == 0, rerun.output
    report = summary(rerun)
    assert report["received"] < 6000 + 12  # resumed, not restarted
    assert table_ids(db, "t") == ids
    if how == "SIGTERM":
        assert report["rows_inserted"] == report["delivered"]  # nothing was redelivered
    letters = jsonl(tmp_path / "big.jsonl.dead-letters.jsonl")
    lines = {letter["event"]["id"] for letter in letters}
    assert len(lines) == 12  # each malformed line dead-lettered (again, after a crash)


# -- run ------------------------------------------------------------------------------

USER_MODULE = textwrap.dedent(
    """
    import os
    import trio_ingest as ti

    class Started(ti.sinks.Null):
        # tells the test the pipeline is up (its signal handling is installed by then)
        async def open(self):
            open(os.environ["STARTED_MARKER"], "w").close()

    class Hanging(ti.testing.HangingSink):
        async def open(self):
            open(os.environ["STARTED_MARKER"], "w").close()

    def finite():
        return ti.Pipeline(ti.sources.synthetic(300), ti.map(lambda p: p), sink=ti.sinks.Memory())

    async def built_async():
        return finite()

    def endless():
        return ti.Pipeline(ti.sources.synthetic(None, rate=500), sink=Started())

    def hanging():
        return ti.Pipeline(ti.sources.synthetic(None, rate=500), sink=Hanging())

    def failing():
        class Broken(ti.Sink):
            async def write_batch(self, events):
                raise RuntimeError("disk on fire")
        return ti.Pipeline(ti.sources.synthetic(10), sink=Broken(name="broken"),
                           retry=ti.RetryPolicy.none())

    def not_a_graph():
        return 42

    def raises():
        raise KeyError("config missing")
    """
)


@pytest.fixture
def user_module(tmp_path: Path) -> Path:
    path = tmp_path / "jobs.py"
    path.write_text(USER_MODULE)
    return path


def test_run_a_factory_from_a_file(user_module: Path) -> None:
    for factory in ("finite", "built_async"):
        result = invoke("run", f"{user_module}:{factory}", "--json")
        assert result.exit_code == 0, result.output
        assert summary(result)["delivered"] == 300


def test_run_a_factory_from_a_module(user_module: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(user_module.parent)
    monkeypatch.syspath_prepend(str(user_module.parent))
    result = invoke("run", "jobs:finite")
    assert result.exit_code == 0, result.output
    assert "completed" in result.stdout


def test_run_a_failing_pipeline_exits_1_with_one_line(user_module: Path) -> None:
    result = invoke("run", f"{user_module}:failing", "--quiet")
    assert result.exit_code == 1
    assert_one_line_error(result, "sink 'broken': gave up after 1 attempt(s): "
                                  "RuntimeError: disk on fire")


@pytest.mark.parametrize(
    ("target", "message", "code"),
    [
        ("{mod}:not_a_graph", "must return a trio_ingest Pipeline or Graph, not int", 2),
        ("{mod}:raises", "raised KeyError: 'config missing'", 1),
        ("{mod}:nothing", "has no attribute 'nothing'", 2),
        ("{mod}", "expected MODULE:FACTORY", 2),
        ("no_such_module_xyz:f", "no module named 'no_such_module_xyz'", 2),
        ("{dir}/absent.py:f", "absent.py: no such file", 2),
    ],
)
def test_run_errors(user_module: Path, target: str, message: str, code: int) -> None:
    result = invoke("run", target.format(mod=user_module, dir=user_module.parent))
    assert_one_line_error(result, message)
    assert result.exit_code == code


def _run_until_started(user_module: Path, factory: str, *args: str
                       ) -> subprocess.Popen[bytes]:
    marker = user_module.parent / f"{factory}.started"
    proc = subprocess.Popen(
        [sys.executable, "-m", "trio_ingest", "run", f"{user_module}:{factory}", "--json", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "STARTED_MARKER": str(marker)},
    )
    deadline = time.monotonic() + 30
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(proc.communicate())
        time.sleep(0.02)
    time.sleep(0.2)  # let some events through
    return proc


def _finish(proc: subprocess.Popen[bytes]) -> tuple[dict[str, Any], bytes]:
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert b"Traceback" not in err, err
    return json.loads(out), err


def test_run_sigterm_stops_gracefully_with_exit_0(user_module: Path) -> None:
    proc = _run_until_started(user_module, "endless")
    proc.send_signal(signal.SIGTERM)
    report, err = _finish(proc)
    assert proc.returncode == 0, err
    assert report["signal"] == "SIGTERM"
    assert report["balanced"] and report["in_flight"] == 0 and report["completed"]
    assert report["delivered"] > 0
    assert b"SIGTERM: stopping gracefully" in err


def test_run_second_sigint_forces_the_stop(user_module: Path) -> None:
    proc = _run_until_started(user_module, "hanging", "--shutdown-timeout", "60")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    assert proc.poll() is None  # draining: the sink never finishes its write
    proc.send_signal(signal.SIGINT)
    report, err = _finish(proc)
    assert proc.returncode == 130, err
    assert report["in_flight"] > 0 and not report["completed"]
    assert report["balanced"]
    assert b"SIGINT again: forcing the stop" in err


def test_run_shutdown_deadline_cancels_what_is_left(user_module: Path) -> None:
    proc = _run_until_started(user_module, "hanging", "--shutdown-timeout", "0.3")
    proc.send_signal(signal.SIGTERM)
    report, err = _finish(proc)
    assert proc.returncode == 143, err
    assert report["in_flight"] > 0 and not report["completed"]
    assert b"the shutdown deadline (0.3s) passed" in err


def test_python_dash_m_entry_point(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "trio_ingest", "demo", "-n", "100", "--latency-min", "0",
         "--latency-max", "0", "--json", "--db", str(tmp_path / "d.sqlite"),
         "--dead-letters", str(tmp_path / "d.jsonl")],
        capture_output=True, check=False, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["received"] == 100


def test_ingest_into_postgres(tmp_path: Path, postgres_dsn: str) -> None:
    import uuid

    import psycopg

    table = f"cli_ingest_{uuid.uuid4().hex[:8]}"
    data = tmp_path / "in.jsonl"
    data.write_text("".join(f'{{"id": "{i % 40}", "v": {i}}}\n' for i in range(50)) + "not json\n")
    try:
        for _ in range(2):  # the second run finds everything committed
            result = subprocess.run(
                [sys.executable, "-m", "trio_ingest", "ingest", str(data), "--postgres",
                 postgres_dsn, "--table", table, "--json"],
                capture_output=True, text=True, timeout=120,
            )
            assert result.returncode == 0, result.stderr
        with psycopg.connect(postgres_dsn) as conn:
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (40,)
        assert (tmp_path / "in.jsonl.dead-letters.jsonl").read_text().count("\n") == 1
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")


def test_ingest_needs_exactly_one_target(tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text('{"id": "1"}\n')
    result = subprocess.run(
        [sys.executable, "-m", "trio_ingest", "ingest", str(data), "--table", "t"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: give exactly one of --sqlite DB, --postgres DSN, "
                                     "--jsonl FILE, --parquet DIR")


def test_demo_serves_metrics_and_logs_json(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trio_ingest", "demo", "-n", "500", "--latency-min", "0.001",
         "--latency-max", "0.002", "--invalid-rate", "0.05", "--seed", "3",
         "--metrics-port", "0", "--log-format", "json", "--log-level", "warning",
         "--db", str(tmp_path / "d.sqlite"), "--dead-letters", str(tmp_path / "d.jsonl")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "metrics http://127.0.0.1:" in result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert records and all(r["logger"].startswith("trio_ingest") for r in records)
    assert any(r.get("node") == "validate" and r.get("event_id") for r in records)


def test_help_lists_every_command_by_its_first_sentence_without_importing_it() -> None:
    import click

    from trio_ingest.cli._app import COMMANDS, SUMMARIES

    assert set(SUMMARIES) == set(COMMANDS)
    ctx = click.Context(cli)
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        assert command is not None and command.help is not None
        first = " ".join(command.help.split("\n\n")[0].split())
        assert SUMMARIES[name] == first, name
    # --help imports no command: the Redis client and the test kit stay unloaded
    out = fresh_python(
        """
        import sys
        from trio_ingest.cli._app import cli
        try:
            cli(["--help"])
        except SystemExit:
            pass
        shell = ("trio_ingest.cli._app", "trio_ingest.cli._common")
        loaded = (m for m in sys.modules if m.startswith(("coredis", "trio_ingest.cli._")))
        print(sorted(m for m in loaded if m not in shell))
        """
    )
    assert any("Show or reset the checkpoints" in line for line in out)
    assert out[-1] == "[]"
