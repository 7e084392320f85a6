"""Every program in ``examples/`` runs, in a subprocess, and does what its docstring says.

The docs include these files (pymdownx.snippets), so a broken example is a
broken page: this is where it is caught.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TIMEOUT = 60


def run(name: str, *args: str) -> str:
    """Run ``examples/<name>`` with this interpreter; its stdout (fails on a nonzero exit)."""
    done = subprocess.run(
        [sys.executable, os.fspath(EXAMPLES / name), *args],
        capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def figures(line: str) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S+)", line))


def test_every_example_has_a_test() -> None:
    source = Path(__file__).read_text(encoding="utf-8")
    untested = [p.name for p in EXAMPLES.glob("*.py") if f'"{p.name}"' not in source]
    assert untested == []


def test_file_to_sqlite_and_its_rerun_resumes(tmp_path: Path) -> None:
    first = figures(run("file_to_sqlite.py", os.fspath(tmp_path)))
    assert first == {
        "received": "1000", "delivered": "985", "filtered": "11", "dead_lettered": "4",
        "rows": "985", "balanced": "True",
    }
    again = figures(run("file_to_sqlite.py", os.fspath(tmp_path)))
    assert again["received"] == "0" and again["rows"] == "985"  # resumed at the checkpoint
    dead = (tmp_path / "dead-letters.jsonl").read_text().splitlines()
    assert len(dead) == 4 and "MalformedLine" in dead[0]


@pytest.fixture
def pg_table(postgres_dsn: str) -> Iterator[str]:
    import psycopg

    name = f"ti_example_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}")


@pytest.mark.postgres
def test_file_to_postgres(postgres_dsn: str, pg_table: str, tmp_path: Path) -> None:
    import psycopg

    out = figures(run("file_to_postgres.py", postgres_dsn, pg_table, os.fspath(tmp_path)))
    assert out == {"delivered": "500", "dead_lettered": "0"}
    with psycopg.connect(postgres_dsn) as conn:
        row = conn.execute(f"SELECT count(*), count(DISTINCT id) FROM {pg_table}").fetchone()
    assert row == (500, 500)


def test_fastapi_app_feeds_its_pipeline_from_requests(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")  # the test extra has both
    pytest.importorskip("hypercorn")
    db = tmp_path / "api.sqlite"
    out = figures(run("fastapi_app.py", os.fspath(db)).splitlines()[-1])
    assert out == {"posted": "200", "delivered": "200", "balanced": "True"}
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(DISTINCT id) FROM events").fetchone() == (200,)


def test_trio_app_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    db = tmp_path / "ticks.sqlite"
    process = subprocess.Popen(
        [sys.executable, os.fspath(EXAMPLES / "trio_graceful_shutdown.py"), os.fspath(db)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"  # waits for the line, no sleep
        process.send_signal(signal.SIGTERM)
        rest, err = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err[-3000:]
    assert "got SIGTERM: stopping" in rest
    out = figures(rest.splitlines()[-1])
    assert out["received"] == out["delivered"] and int(out["received"]) >= 1_000
    assert out["in_flight"] == "0" and out["completed"] == "True"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM ticks").fetchone() == (int(out["delivered"]),)


def test_fan_out_routing() -> None:
    out = figures(run("fan_out_routing.py"))
    assert out == {"eu": "250", "us": "150", "archive": "400", "received": "400",
                   "balanced": "True"}


def test_custom_stage() -> None:
    out = figures(run("custom_stage.py"))
    assert out == {"delivered": "45", "filtered": "10", "dead_lettered": "45",
                   "reasons": "['UnknownCustomer']", "balanced": "True"}


def test_custom_sink(tmp_path: Path) -> None:
    out = figures(run("custom_sink.py", os.fspath(tmp_path)))
    assert out["delivered"] == out["stored"] == "490" and out["dead_lettered"] == "10"
    assert int(out["retries"]) > 0 and out["balanced"] == "True"
    stored = [json.loads(p.read_text()) for p in (tmp_path / "out").glob("*.json")]
    assert all("amount" in row for batch in stored for row in batch)


@pytest.mark.redis
def test_redis_workers_share_a_group(redis_url: str, redis_prefix: str) -> None:
    stream = f"{redis_prefix}-example"
    out = figures(run("redis_workers.py", redis_url, stream))
    assert out["stream"] == stream
    assert out["distinct"] == out["total"] == "2000"
    assert int(out["w0"]) > 0 and int(out["w1"]) > 0, "both workers took entries"


def test_testing_under_faults_passes_its_own_tests() -> None:
    out = run("testing_under_faults.py")
    assert re.search(r"\b3 passed\b", out), out
