"""The oracle itself: it must see every kind of broken promise, or it proves nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trio_ingest.testing import check, dead_letter_ids, torn_dead_letter_lines


def test_a_clean_run_passes() -> None:
    verdict = check(["a", "b", "c"], ["a", "b"], ["c"])
    verdict.assert_ok()
    assert verdict.figures()["lost"] == 0 and verdict.dead_letters == 1


@pytest.mark.parametrize(
    ("rows", "dead", "message"),
    [
        (["a", "b"], [], r"lost 1 id\(s\): 'c'"),
        (["a", "b", "c", "c"], [], "1 duplicate row"),
        (["a", "b", "c", "zz"], [], r"1 unexpected id\(s\): 'zz'"),
    ],
)
def test_each_broken_promise_fails(rows: list[str], dead: list[str], message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check(["a", "b", "c"], rows, dead).assert_ok()


def test_duplicates_are_allowed_for_a_sink_that_is_not_idempotent() -> None:
    check(["a"], ["a", "a"]).assert_ok(idempotent=False)


def test_dead_letter_file_reading_skips_torn_lines(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    record = {"node": "n", "error_type": "E", "error": "e", "attempts": 1, "time": 0.0,
              "event": {"id": "x"}}
    path.write_text(json.dumps(record) + "\n" + '{"node": "n", "err\n' + json.dumps(record))
    assert dead_letter_ids(path) == ["x"]  # the cut line and the unterminated last one skipped
    assert torn_dead_letter_lines(path) == 2
