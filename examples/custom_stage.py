"""A custom stage: any object with a ``name`` and ``async run(inbox, outbox)``.

This one looks each order's customer up; it passes known ones on enriched,
drops test orders (counted as filtered) and dead-letters unknown customers with
the reason. Whatever it does not send, drop or dead-letter would fail the run:
nothing vanishes.

Run: ``python examples/custom_stage.py``
"""

import trio

import trio_ingest as ti

CUSTOMERS = {"c1": "Ada", "c2": "Grace"}


class UnknownCustomer(Exception):
    pass


class LookupCustomer:
    name = "lookup_customer"

    async def run(self, inbox, outbox) -> None:
        async for events in inbox:  # lists of Events, as they arrive
            known, tests = [], []
            for e in events:
                if e.payload.get("test"):
                    tests.append(e)
                elif e.payload["customer"] in CUSTOMERS:
                    name = CUSTOMERS[e.payload["customer"]]
                    known.append(e.evolve(payload={**e.payload, "name": name}))
                else:
                    await outbox.dead_letter(e, UnknownCustomer(e.payload["customer"]))
            outbox.drop(tests)
            await outbox.send(known)


def main() -> None:
    orders = [
        {"customer": f"c{i % 4}", "test": i % 10 == 0, "total": i} for i in range(100)
    ]
    store, dead = ti.sinks.Memory(), ti.sinks.Memory()
    pipeline = ti.Pipeline(
        ti.sources.from_iterable(orders), LookupCustomer(), sink=store, dead_letter=dead
    )
    report = trio.run(pipeline.run)
    reasons = {letter.payload.error_type for letter in dead.events}
    print(
        f"delivered={report.delivered} filtered={report.filtered} "
        f"dead_lettered={report.dead_lettered} reasons={sorted(reasons)} "
        f"balanced={report.balanced}"
    )


if __name__ == "__main__":
    main()
