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


def test_an_event_pickles_and_copies_with_the_default_headers() -> None:
    # the shared empty headers are a mappingproxy, which pickle refuses: a window's or a
    # custom stage's state holding events must still checkpoint
    import copy
    import pickle
    from types import MappingProxyType

    plain = ti.Event(id="1", payload={"a": 1}, key="k", event_time=5.0)
    again = pickle.loads(pickle.dumps(plain))
    assert again == plain and type(again) is ti.Event
    assert again.headers is plain.headers  # the default, shared again
    assert copy.deepcopy(plain) == plain and copy.copy(plain) == plain
    proxied = ti.Event(id="2", headers=MappingProxyType({"h": "v"}), event_time=1.0)
    assert pickle.loads(pickle.dumps(proxied)).headers == {"h": "v"}
    with_dict = ti.Event(id="3", headers={"x": "y"}, event_time=1.0)
    assert pickle.loads(pickle.dumps(with_dict)) == with_dict
