"""``ti.join_latest``: enrichment against a keyed table stream, on Trio and asyncio."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

import trio_ingest as ti

pytestmark = pytest.mark.anyio


def accounted(report: ti.RunReport) -> None:
    assert report.in_flight == 0
    assert report.received + report.expanded == (
        report.delivered + report.dead_lettered + report.filtered
    )


def order(i: int, customer: str, t: float) -> ti.Event:
    return ti.Event(f"o{i}", {"order": i, "customer": customer}, event_time=t)


def customer(cid: str, tier: str, t: float) -> ti.Event:
    return ti.Event(f"c-{cid}-{t}", {"id": cid, "tier": tier}, event_time=t)


async def one_source(
    events: list[ti.Event], stage: Any, max_batch: int = 256
) -> tuple[ti.RunReport, list[ti.Event], list[ti.Event]]:
    """One source carrying both inputs (table rows picked by a predicate)."""
    out, dead = ti.sinks.Memory(), ti.sinks.Memory()
    pipeline = ti.Pipeline(
        ti.sources.from_iterable(events), stage, sink=out, dead_letter=dead, max_batch=max_batch
    )
    report = await pipeline.run()
    return report, list(out.events), list(dead.events)


def join(**options: Any) -> Any:
    return ti.join_latest(
        table=options.pop("table", lambda p: "id" in p),
        key=lambda p: p["customer"],
        table_key=lambda p: p["id"],
        name="enrich",
        **options,
    )


@pytest.mark.parametrize("max_batch", [1, 3, 256])
async def test_stream_events_get_the_latest_row_and_rows_are_filtered(max_batch: int) -> None:
    events = [
        customer("a", "gold", 1),
        order(1, "a", 2),
        customer("a", "silver", 3),  # replaces the row: later orders see silver
        order(2, "a", 4),
        order(3, "b", 5),  # no row: passed unchanged
    ]
    report, out, dead = await one_source(events, join(), max_batch)
    assert [e.payload for e in out] == [
        {"id": "a", "tier": "gold", "order": 1, "customer": "a"},
        {"id": "a", "tier": "silver", "order": 2, "customer": "a"},
        {"order": 3, "customer": "b"},
    ]
    assert [e.id for e in out] == ["o1", "o2", "o3"]  # metadata kept
    assert dead == []
    assert report.filtered == 2 and report.nodes["enrich"].filtered == 2
    accounted(report)


async def test_missing_dead_letter_says_which_key_and_table() -> None:
    events = [order(1, "x", 1), customer("x", "gold", 2), order(2, "x", 3)]
    stage = join(missing="dead_letter", merge=lambda p, row: {**p, "tier": row["tier"]})
    report, out, dead = await one_source(events, stage)
    assert [e.payload for e in out] == [{"order": 2, "customer": "x", "tier": "gold"}]
    assert [d.payload.event.id for d in dead] == ["o1"]
    assert "no row for key 'x' in table (predicate)" in dead[0].payload.error
    assert dead[0].payload.error_type.endswith("MissingRowError")
    assert report.nodes["enrich"].errors == 0  # a missing row is not a failure of a function
    accounted(report)


async def test_missing_wait_holds_until_the_row_arrives_in_arrival_order() -> None:
    events = [
        order(1, "late", 1),
        order(2, "late", 2),
        order(3, "never", 3),
        customer("late", "gold", 4),
    ]
    report, out, dead = await one_source(events, join(missing="wait"), max_batch=1)
    assert [(e.id, e.payload["tier"]) for e in out] == [("o1", "gold"), ("o2", "gold")]
    # still waiting when the input ended: dead-lettered with the reason
    assert [d.payload.event.id for d in dead] == ["o3"]
    assert "by the end of the input" in dead[0].payload.error
    accounted(report)


async def test_wait_timeout_and_max_waiting_bound_the_held_events() -> None:
    events = [order(1, "a", 0), order(2, "b", 1), order(3, "c", 2), order(4, "d", 10)]
    stage = join(missing="wait", wait_timeout=5.0, max_waiting=2)
    report, out, dead = await one_source(events, stage, max_batch=1)
    reasons = {d.payload.event.id: d.payload.error for d in dead}
    assert "max_waiting=2" in reasons["o1"]  # the third waiting event pushed out the oldest
    assert "within 5 s" in reasons["o2"] and "within 5 s" in reasons["o3"]
    assert "by the end of the input" in reasons["o4"]
    assert out == []
    assert stage.waiting_events == 0
    accounted(report)


async def test_rows_expire_by_ttl_of_event_time_and_by_max_rows() -> None:
    events = [
        customer("a", "gold", 0),
        customer("b", "gold", 8),
        order(1, "a", 9),  # a's row is 9 s old: expired (ttl 5)
        order(2, "b", 10),
    ]
    report, out, _dead = await one_source(events, join(ttl=5.0), max_batch=1)
    assert [("tier" in e.payload) for e in out] == [False, True]
    assert report.nodes["enrich"].filtered == 2

    capped = join(max_rows=2)
    rows = [customer(c, "gold", i) for i, c in enumerate("abc")]
    report, out, _dead = await one_source([*rows, order(1, "a", 5), order(2, "c", 6)], capped)
    assert [("tier" in e.payload) for e in out] == [False, True]  # a was least recently updated
    assert capped.live_rows == 2
    accounted(report)


async def test_a_failing_key_function_dead_letters_that_event_alone() -> None:
    bad = ti.Event("bad", {"order": 9}, event_time=1)  # no "customer": the key function fails
    events = [customer("a", "gold", 0), bad, order(1, "a", 2)]
    report, out, dead = await one_source(events, join())
    assert [e.id for e in out] == ["o1"]
    assert [d.payload.event.id for d in dead] == ["bad"]
    assert "KeyError" in dead[0].payload.error_type
    assert report.nodes["enrich"].errors == 1
    accounted(report)


def test_configuration_errors_name_the_field() -> None:
    base: dict[str, Any] = {"table": "t", "key": str, "table_key": str}
    with pytest.raises(ti.ConfigError, match="'missing' must be one of"):
        ti.join_latest(**base, missing="drop")
    with pytest.raises(ti.ConfigError, match="'key' must be callable"):
        ti.join_latest(**{**base, "key": 1})
    with pytest.raises(ti.ConfigError, match="'table' must be a source name"):
        ti.join_latest(**{**base, "table": ""})
    with pytest.raises(ti.ConfigError, match="'ttl'"):
        ti.join_latest(**base, ttl=0)
    with pytest.raises(ti.ConfigError, match="'max_rows'"):
        ti.join_latest(**base, max_rows=0)


def test_memory_bound_counts_the_table_and_the_waiting_events() -> None:
    g = ti.Graph(max_batch=10, capacity=100)
    orders = g.add_source(ti.sources.from_iterable([order(1, "a", 0)]), name="orders")
    rows = g.add_source(ti.sources.from_iterable([customer("a", "g", 0)]), name="customers")
    plain = ti.join_latest(table="customers", key=str, table_key=str, max_rows=500)
    waits = ti.join_latest(
        table="customers", key=str, table_key=str, max_rows=500, missing="wait", max_waiting=70
    )
    assert plain.in_hand(10) == 2 * 10 + 500
    assert waits.in_hand(10) == 2 * 10 + 500 + 70
    g.add_stage(waits, inputs=[orders, rows], name="enrich")
    g.add_sink(ti.sinks.Null(), inputs="enrich")
    assert g.memory_bound() >= 500 + 70


# -- two sources in a Graph: the table input is told apart by its source ----------------


def graph_join(
    orders: Any, customers: Any, stage: Any
) -> tuple[ti.Graph, ti.sinks.Memory, ti.sinks.Memory]:
    out, dead = ti.sinks.Memory(), ti.sinks.Memory()
    g = ti.Graph(dead_letter=dead)
    o = g.add_source(ti.sources.from_iterable(orders), name="orders")
    c = g.add_source(ti.sources.from_iterable(customers), name="customers")
    # the table may pass stages on the way: its events still come from "customers"
    up = g.add_stage(ti.map(lambda p: {**p, "tier": p["tier"].upper()}), inputs=c, name="upper")
    g.add_stage(stage, inputs=[o, up], name="enrich")
    g.add_sink(out, inputs="enrich")
    return g, out, dead


async def test_two_sources_with_wait_enrich_every_order_whatever_the_interleaving() -> None:
    orders = [order(i, f"c{i % 7}", i) for i in range(200)]
    customers = [customer(f"c{k}", "gold", k) for k in range(7)]
    stage = ti.join_latest(
        table="customers", key=lambda p: p["customer"], table_key=lambda p: p["id"],
        missing="wait",
    )
    g, out, dead = graph_join(orders, customers, stage)
    report = await g.run()
    assert sorted(e.payload["order"] for e in out.events) == list(range(200))
    assert all(e.payload["tier"] == "GOLD" for e in out.events)
    assert dead.events == []
    assert report.nodes["enrich"].filtered == 7
    accounted(report)


async def _rows_after(seen: anyio.Event, rows: list[ti.Event]) -> AsyncIterator[ti.Event]:
    """Yield ``rows`` only once the join looked the order up: the row arrives after it."""
    await seen.wait()
    for row in rows:
        yield row


def watched_key(seen: anyio.Event) -> Any:
    """The order's key function; it tells ``seen`` once the join has looked an order up."""

    def key(p: dict[str, Any]) -> str:
        seen.set()  # the stage files the order (waiting / dead letter) before it next awaits
        return str(p["customer"])

    return key


async def test_race_a_row_arriving_after_its_order_is_joined_with_wait() -> None:
    seen = anyio.Event()
    stage = ti.join_latest(
        table="customers", key=watched_key(seen), table_key=lambda p: p["id"], missing="wait"
    )
    rows = _rows_after(seen, [customer("a", "gold", 5)])
    g, out, dead = graph_join([order(1, "a", 1)], rows, stage)
    report = await g.run()
    assert [e.payload for e in out.events] == [
        {"id": "a", "tier": "GOLD", "order": 1, "customer": "a"}
    ]
    assert dead.events == []
    accounted(report)


async def test_race_a_row_arriving_after_its_order_is_dead_lettered_without_wait() -> None:
    seen = anyio.Event()
    stage = ti.join_latest(
        table="customers", key=watched_key(seen), table_key=lambda p: p["id"],
        missing="dead_letter",
    )
    g, out, dead = graph_join(
        [order(1, "a", 1)], _rows_after(seen, [customer("a", "gold", 5)]), stage
    )
    report = await g.run()
    assert out.events == []
    assert [d.payload.event.id for d in dead.events] == ["o1"]
    assert "no row for key 'a' in table 'customers'" in dead.events[0].payload.error
    assert report.nodes["enrich"].filtered == 1  # the row still went into the table
    assert stage.live_rows == 1
    accounted(report)
