"""Keyed state beyond windows: dedupe (TTL, memory bounded by live keys) and stateful_map."""

from __future__ import annotations

from typing import Any

import pytest

import trio_ingest as ti

pytestmark = pytest.mark.anyio


def events(rows: list[tuple[str, Any, float]]) -> list[ti.Event]:
    return [ti.Event(i, p, event_time=t) for i, p, t in rows]


async def test_dedupe_drops_repeats_within_ttl_as_filtered() -> None:
    rows = [
        ("a", {"k": 1}, 0.0),
        ("b", {"k": 1}, 4.0),
        ("c", {"k": 2}, 5.0),
        ("d", {"k": 1}, 10.5),
        ("e", {"k": 1}, 12.0),
        ("f", {"k": 2}, 5.5),
    ]
    sink = ti.sinks.Memory()
    pipeline = ti.Pipeline(
        ti.sources.from_iterable(events(rows)), ti.dedupe(lambda p: p["k"], ttl=10.0), sink=sink
    )
    report = await pipeline.run()
    # b and e repeat k=1 within 10 s of a kept sighting; f repeats k=2; d is 10.5 s after a
    assert [e.id for e in sink.events] == ["a", "c", "d"]
    assert report.filtered == 3 and report.nodes["dedupe"].filtered == 3
    assert report.balanced and report.in_flight == 0


async def test_dedupe_by_id_and_a_failing_key_is_dead_lettered() -> None:
    rows = [("x", {"k": 1}, 0.0), ("x", {"k": 1}, 1.0), ("y", {}, 2.0)]
    sink, dead = ti.sinks.Memory(), ti.sinks.Memory()
    pipeline = ti.Pipeline(
        ti.sources.from_iterable(events(rows[:2])), ti.dedupe(ttl=5), sink=sink, dead_letter=dead
    )
    await pipeline.run()
    assert [e.id for e in sink.events] == ["x"]
    pipeline = ti.Pipeline(
        ti.sources.from_iterable(events(rows)),
        ti.dedupe(lambda p: p["k"], ttl=5),
        sink=(sink := ti.sinks.Memory()),
        dead_letter=dead,
    )
    report = await pipeline.run()
    assert [e.id for e in sink.events] == ["x"]
    assert [d.payload.event.id for d in dead.events] == ["y"]
    assert "KeyError" in dead.events[0].payload.error_type
    assert report.balanced


@pytest.mark.parametrize("anyio_backend", ["trio"])  # a million events: one backend is enough
async def test_a_million_keys_with_ttl_stay_within_the_live_key_bound() -> None:
    n, ttl, step, max_batch = 1_000_000, 1.0, 0.001, 256
    stage = ti.dedupe(lambda p: p, ttl=ttl)
    peak = 0

    def watch(_p: Any) -> None:
        nonlocal peak
        peak = max(peak, stage.live_keys)

    def produce() -> Any:
        for i in range(n):
            yield ti.Event(f"e{i}", i, event_time=i * step)

    pipeline = ti.Pipeline(
        ti.sources.from_iterable(produce()),
        stage,
        ti.inspect(watch),
        sink=ti.sinks.Null(),
        max_batch=max_batch,
    )
    report = await pipeline.run()
    assert report.delivered == n
    # keys younger than ttl, plus one batch between expiry sweeps
    assert 0 < peak <= ttl / step + max_batch + 1


async def test_stateful_map_keeps_state_per_key_and_none_forgets_it() -> None:
    def running_total(total: int, p: dict[str, Any]) -> tuple[int | None, dict[str, Any]]:
        total += p["n"]
        return (None if p.get("last") else total), {**p, "total": total}

    rows = [
        ("1", {"u": "a", "n": 1}, 0),
        ("2", {"u": "b", "n": 5}, 0),
        ("3", {"u": "a", "n": 2}, 0),
        ("4", {"u": "a", "n": 3, "last": True}, 0),
        ("5", {"u": "a", "n": 10}, 0),
    ]
    stage = ti.stateful_map(running_total, 0, key=lambda p: p["u"])
    sink = ti.sinks.Memory()
    report = await ti.Pipeline(ti.sources.from_iterable(events(rows)), stage, sink=sink).run()
    assert [e.payload["total"] for e in sink.events] == [1, 5, 3, 6, 10]
    assert [e.id for e in sink.events] == ["1", "2", "3", "4", "5"]
    assert stage.state == {"b": 5, "a": 10}
    assert report.balanced and report.in_flight == 0


def test_keyed_state_configuration_errors() -> None:
    with pytest.raises(ti.ConfigError, match="'ttl' must be"):
        ti.dedupe(ttl=0)
    with pytest.raises(ti.ConfigError, match="needs a callable"):
        ti.stateful_map(3)  # type: ignore[arg-type]
