"""State memory: a million keys through ``dedupe`` and ``stateful_map`` with a TTL.

Run under Trio's ``MockClock`` (the TTL is in event time, so the result does not
depend on the clock; the mock clock makes every wait of the run instant). Live
keys stay within the stated bound (keys seen within ``ttl`` of event time, plus
one batch between expiry sweeps), the plan's memory bound does not grow with
the keys, and the process's resident memory grows by far less than a million
remembered keys would take.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psutil
import pytest
import trio
import trio.testing

import trio_ingest as ti

N, TTL, STEP, MAX_BATCH = 1_000_000, 1.0, 0.001, 256
BOUND = TTL / STEP + MAX_BATCH + 1  # keys younger than ttl, plus one batch
# a million keys remembered: about 100 bytes each in a dict, plus the expiry heap;
# with expiry the state holds about a thousand. Generous: allocator noise, not speed
RSS_GROWTH_LIMIT = 40 * 1024 * 1024


def produce() -> Iterator[ti.Event]:
    for i in range(N):  # a new key every event: only expiry keeps the state small
        yield ti.Event(f"e{i}", {"k": i}, event_time=i * STEP)


def run_and_watch(stage: Any) -> tuple[ti.RunReport, int, int, int]:
    """Run N events through ``stage``; returns (report, peak live keys, RSS growth, bound)."""
    process = psutil.Process()
    peak = 0
    seen = 0
    rss_before = process.memory_info().rss
    rss_peak = rss_before

    def watch(_p: Any) -> None:
        nonlocal peak, seen, rss_peak
        peak = max(peak, stage.live_keys)
        seen += 1
        if seen % 50_000 == 0:
            rss_peak = max(rss_peak, process.memory_info().rss)

    pipeline = ti.Pipeline(
        ti.sources.from_iterable(produce()),
        stage,
        ti.inspect(watch),
        sink=ti.sinks.Null(),
        max_batch=MAX_BATCH,
    )
    report = trio.run(pipeline.run, clock=trio.testing.MockClock(autojump_threshold=0))
    rss_peak = max(rss_peak, process.memory_info().rss)
    return report, peak, rss_peak - rss_before, pipeline.memory_bound()


def test_a_million_keys_through_dedupe_stay_within_the_ttl_bound() -> None:
    stage = ti.dedupe(lambda p: p["k"], ttl=TTL)
    report, peak, growth, bound = run_and_watch(stage)
    assert report.delivered == N and report.filtered == 0 and report.in_flight == 0
    assert 0 < peak <= BOUND, peak
    assert stage.live_keys <= BOUND  # what is left at the end is within it too
    # the plan's bound counts events in edges and hands; keys never add to it
    assert bound == ti.Pipeline(
        ti.sources.from_iterable([]), ti.dedupe(ttl=TTL), ti.inspect(print),
        sink=ti.sinks.Null(), max_batch=MAX_BATCH,
    ).memory_bound()
    assert growth < RSS_GROWTH_LIMIT, growth


def test_a_million_keys_through_stateful_map_with_ttl_stay_within_the_bound() -> None:
    def count(n: int, p: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return n + 1, p

    stage = ti.stateful_map(count, 0, key=lambda p: p["k"], ttl=TTL)
    report, peak, growth, _bound = run_and_watch(stage)
    assert report.delivered == N and report.in_flight == 0
    assert 0 < peak <= BOUND, peak
    assert growth < RSS_GROWTH_LIMIT, growth


def test_stateful_map_ttl_forgets_a_key_and_starts_it_afresh() -> None:
    seen: list[tuple[str, int]] = []

    def count(n: int, p: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        seen.append((p["k"], n + 1))
        return n + 1, p

    stage = ti.stateful_map(count, 0, key=lambda p: p["k"], ttl=5.0)
    times = [("a", 0), ("a", 4), ("b", 8.9), ("a", 9.5), ("a", 9.6)]
    events = [ti.Event(f"e{i}", {"k": k}, event_time=t) for i, (k, t) in enumerate(times)]
    pipeline = ti.Pipeline(
        ti.sources.from_iterable(events), stage, sink=ti.sinks.Null(), max_batch=1
    )
    trio.run(pipeline.run, clock=trio.testing.MockClock(autojump_threshold=0))
    # "a" was last updated at 4: at 9.5, 4 + ttl 5 is behind it, so "a" starts afresh
    assert seen == [("a", 1), ("a", 2), ("b", 1), ("a", 1), ("a", 2)]
    with pytest.raises(ti.ConfigError, match="'ttl'"):
        ti.stateful_map(count, 0, ttl=0)
