"""The custom stage protocol: an object with a name and async run(inbox, outbox)."""

from __future__ import annotations

import attrs
import pytest

import trio_ingest as ti
from trio_ingest.testing import assert_accounted

pytestmark = pytest.mark.anyio


class Deduplicate:
    name = "dedupe"

    def __init__(self) -> None:
        self.seen: set[str] = set()

    async def run(self, inbox: ti.stages.Inbox, outbox: ti.stages.Outbox) -> None:
        async for events in inbox:
            fresh, repeats = [], []
            for e in events:
                (repeats if e.id in self.seen else fresh).append(e)
                self.seen.add(e.id)
            outbox.drop(repeats)
            await outbox.send(fresh)


async def test_docstring_example_dedupes() -> None:
    items = [ti.Event(id=str(i % 7), payload=i) for i in range(50)]
    sink = ti.sinks.Memory()
    report = await ti.Pipeline(ti.sources.from_iterable(items), Deduplicate(), sink=sink).run()
    assert sorted(e.id for e in sink.events) == [str(i) for i in range(7)]
    assert report.filtered == 43
    assert_accounted(report)
    assert report.committed["source"] == 50


class Splitter:
    name = "split"

    async def run(self, inbox: ti.stages.Inbox, outbox: ti.stages.Outbox) -> None:
        async for events in inbox:
            for e in events:
                if e.payload == "bad":
                    await outbox.dead_letter(e, ValueError("bad word"))
                    continue
                words = e.payload.split()
                children = [ti.Event(id=f"{e.id}/{w}", payload=w) for w in words]
                await outbox.send(children, parent=e)


async def test_children_dead_letters_and_empty_parents_are_accounted() -> None:
    sink, dead = ti.sinks.Memory(), ti.sinks.Memory()
    report = await ti.Pipeline(
        ti.sources.from_iterable(["a b c", "", "bad", "d"]), Splitter(), sink=sink, dead_letter=dead
    ).run()
    assert sink.payloads == ["a", "b", "c", "d"]
    assert [e.payload.error for e in dead.events] == ["bad word"]
    assert report.filtered == 1 and report.expanded == 2 and report.dead_lettered == 1
    assert_accounted(report)


class Evolver:
    name = "evolve"

    async def run(self, inbox: ti.stages.Inbox, outbox: ti.stages.Outbox) -> None:
        async for events in inbox:
            await outbox.send([attrs.evolve(e, payload=e.payload + 1) for e in events])


async def test_changed_events_keep_their_acknowledgement_by_id() -> None:
    sink = ti.sinks.Memory()
    report = await ti.Pipeline(ti.sources.from_iterable([1, 2, 3]), Evolver(), sink=sink).run()
    assert sink.payloads == [2, 3, 4] and report.completed


class Forgetful:
    name = "forgetful"

    async def run(self, inbox: ti.stages.Inbox, outbox: ti.stages.Outbox) -> None:
        async for events in inbox:
            await outbox.send(events[1:])


async def test_a_stage_that_loses_events_fails_loudly() -> None:
    with pytest.raises(ti.IngestError, match="returned holding 1 event"):
        await ti.Pipeline(
            ti.sources.from_iterable([1, 2]), Forgetful(), sink=ti.sinks.Memory()
        ).run()


class Inventor:
    name = "inventor"

    async def run(self, inbox: ti.stages.Inbox, outbox: ti.stages.Outbox) -> None:
        async for _events in inbox:
            await outbox.send([ti.Event(id="made-up")])


async def test_sending_an_event_not_received_is_an_error() -> None:
    with pytest.raises(ti.IngestError, match="emitted event 'made-up' that it does not hold"):
        await ti.Pipeline(ti.sources.from_iterable([1]), Inventor(), sink=ti.sinks.Memory()).run()


def test_objects_without_the_protocol_are_refused() -> None:
    class NotAStage:
        name = "x"

        def run(self) -> None: ...

    with pytest.raises(ti.ConfigError, match="add_stage\\(\\) needs a stage"):
        ti.Pipeline(ti.sources.from_iterable([1]), NotAStage(), sink=ti.sinks.Memory())  # type: ignore[arg-type]
