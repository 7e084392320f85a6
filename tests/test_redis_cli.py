"""``trio-ingest produce`` and the worker's command-line checks (one-line errors)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from redis_factory import redis_command

from trio_ingest import Event
from trio_ingest.cli._app import cli
from trio_ingest.sinks._redis import partition_of


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def stream(redis_prefix: str) -> str:
    return redis_prefix


def test_produce_loads_a_file_into_partitions_and_dead_letters_bad_lines(
    redis_url: str, stream: str, tmp_path: Path
) -> None:
    data = tmp_path / "in.jsonl"
    lines = [json.dumps({"id": f"r{i}", "user": f"u{i % 5}", "n": i}) for i in range(500)]
    lines.insert(100, "{not json")
    lines.insert(200, json.dumps({"no_id": 1}))
    data.write_text("\n".join(lines) + "\n")
    result = invoke("produce", str(data), "--redis", redis_url, "--stream", stream,
                    "--partitions", "3", "--key-field", "user", "--json")
    assert result.exit_code == 0, result.output
    summary: dict[str, Any] = json.loads(result.stdout)
    assert summary["entries"] == 500 and summary["dead_letter_lines"] == 2
    assert summary["streams"] == [f"{stream}:{p}" for p in range(3)]
    seen: dict[str, int] = {}
    for p in range(3):
        for _, fields in redis_command(redis_url, "XRANGE", f"{stream}:{p}", "-", "+"):
            values = dict(zip(fields[::2], fields[1::2], strict=True))
            payload = json.loads(values["payload"])
            key = json.loads(values["key"])
            assert key == payload["user"]
            assert partition_of(Event(id=values["id"], key=key), 3) == p
            seen[values["id"]] = p
    assert sorted(seen) == sorted(f"r{i}" for i in range(500))
    dead_file = tmp_path / "in.jsonl.dead-letters.jsonl"
    dead = [json.loads(x) for x in dead_file.read_text().splitlines() if x]
    assert [d["error_type"] for d in dead] == ["MalformedLine", "MalformedLine"]


def test_produce_missing_file_is_a_one_line_error(tmp_path: Path) -> None:
    result = invoke("produce", str(tmp_path / "nope.jsonl"), "--stream", "s")
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: ")
    assert "no such file" in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--stream", "a", "--stream", "b", "--partitions", "2"],
         "--partitions takes exactly one --stream"),
        (["--stream", "a", "--worker-index", "1"],
         "--worker-index and --workers need --partitions"),
        (["--stream", "a", "--partitions", "2", "--workers", "3"],
         "--workers must be <= 'partitions' (2): 3"),
        (["--stream", "a", "--partitions", "4", "--workers", "2", "--worker-index", "2"],
         "--worker-index must be in [0, 2): 2"),
        (["--stream", "a", "--block", "2"], "--block"),
        (["--stream", "a", "-o", "no-equals"], "-o/--option must be KEY=VALUE"),
        (["--stream", "a", "--redis", "http://x"], "'url' must be a redis://"),
    ],
)
def test_worker_flags_are_checked_before_anything_runs(args: list[str], message: str) -> None:
    result = invoke("worker", "tests.redis_factory:build", "--group", "g", "--consumer", "c",
                    *args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("tests.redis_factory", "expected MODULE:FACTORY or FILE.py:FACTORY"),
        ("tests.no_such_module:build", "no module named 'tests.no_such_module'"),
        ("tests.redis_factory:nope", "has no attribute 'nope'"),
        ("tests.redis_factory:not_a_graph", "must return a Pipeline or Graph, got str"),
        ("tests.redis_factory:ignores_its_source", "does not read the source it was given"),
        ("tests.redis_factory:build", "build(source, **options) failed"),  # no db= option
    ],
)
def test_worker_factory_contract_errors(factory: str, message: str) -> None:
    result = invoke("worker", factory, "--group", "g", "--consumer", "c", "--stream", "s")
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and message in result.output
