"""A pipeline file with an HTTP source and a validate stage, run by ``trio-ingest run``."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("hypercorn")
pytest.importorskip("jsonschema")

SCHEMA = {
    "type": "object",
    "properties": {"id": {"type": "string"}, "amount": {"type": "number"}},
    "required": ["id", "amount"],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_pipeline(tmp_path: Path, port: int) -> Path:
    (tmp_path / "click.schema.json").write_text(json.dumps(SCHEMA))
    path = tmp_path / "pipeline.toml"
    path.write_text(textwrap.dedent(f"""
        [source]
        type = "http"
        port = {port}
        route = "/in"
        id_field = "id"

        [[stages]]
        type = "validate"
        schema = "click.schema.json"

        [sink]
        type = "sqlite"
        path = "out.db"
        table = "clicks"

        [dead_letter]
        type = "jsonl"
        path = "dead.jsonl"
    """))
    return path


def test_an_http_pipeline_file_takes_posts_validates_and_stops_on_sigint(
    tmp_path: Path,
) -> None:
    port = free_port()
    pipeline = write_pipeline(tmp_path, port)
    proc = subprocess.Popen(
        [sys.executable, "-m", "trio_ingest", "run", str(pipeline), "--json", "--quiet"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + 60
            while True:  # wait for the server to answer, not for a time
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
                assert time.monotonic() < deadline, "the server never came up"
                time.sleep(0.05)
            answer = client.post("/in", json=[{"id": "a", "amount": 1.5},
                                              {"id": "b", "amount": "12,5"}])
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["accepted"] == 1 and body["dead_lettered"] == 1
            assert "$.amount" in body["errors"][0]["error"]
            again = client.post("/in", json={"id": "a", "amount": 1.5})  # a retry
            assert again.status_code == 200
            # the 2xx came after the commit: the row is there before the process stops
            with sqlite3.connect(tmp_path / "out.db") as db:
                assert db.execute("SELECT id FROM clicks").fetchall() == [("a",)]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()[-2000:]
    summary = json.loads(out)
    assert summary["received"] == 3 and summary["delivered"] == 2
    assert summary["dead_lettered"] == 1
    dead = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [d["event"]["id"] for d in dead] == ["b"]


def test_a_validate_stage_with_a_missing_schema_file_is_refused_before_anything_runs(
    tmp_path: Path,
) -> None:
    pipeline = write_pipeline(tmp_path, free_port())
    (tmp_path / "click.schema.json").unlink()
    result = subprocess.run(
        [sys.executable, "-m", "trio_ingest", "validate", str(pipeline)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "stages[0].schema: no such JSON Schema file" in result.stderr
