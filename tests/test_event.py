import attrs
import pytest

import trio_ingest as ti


def test_event_is_a_frozen_value() -> None:
    e = ti.Event(id="1", payload={"a": 1}, key="k", event_time=5.0)
    assert e == ti.Event(id="1", payload={"a": 1}, key="k", event_time=5.0)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        e.id = "2"  # type: ignore[misc]
    assert dict(e.headers) == {}
    assert e.to_dict() == {
        "id": "1",
        "key": "k",
        "event_time": 5.0,
        "headers": {},
        "payload": {"a": 1},
    }


@pytest.mark.parametrize("bad", ["", None, 3, b"x"])
def test_event_id_must_be_a_non_empty_str(bad: object) -> None:
    with pytest.raises(ValueError, match="'id' must be a non-empty str"):
        ti.Event(id=bad)  # type: ignore[arg-type]


def test_event_time_defaults_to_now() -> None:
    import time

    before = time.time()
    e = ti.Event(id="x")
    assert before <= e.event_time <= time.time()


def test_dead_letter_record_names_the_error() -> None:
    e = ti.Event(id="7", payload=1)
    letter = ti.DeadLetter.from_exception(e, "enrich", ti.TransientError("boom"), 3)
    assert letter.error_type == "trio_ingest._errors.TransientError"
    assert letter.error == "boom"
    assert letter.attempts == 3
    d = letter.to_dict()
    assert d["node"] == "enrich" and d["event"]["id"] == "7"
    builtin = ti.DeadLetter.from_exception(e, "n", ValueError("v"), 1)
    assert builtin.error_type == "ValueError"
