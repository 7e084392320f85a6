"""A graph: two sources merged (fan-in), routed by region, and archived (broadcast).

Run: ``python examples/fan_out_routing.py``
"""

import trio

import trio_ingest as ti


def normalise(payload: dict) -> dict:
    return {**payload, "region": payload["region"].lower()}


def build() -> tuple[ti.Graph, dict[str, ti.sinks.Memory]]:
    orders = [ti.Event(f"o{i}", {"region": "EU" if i % 3 else "US", "kind": "order"})
              for i in range(300)]
    refunds = [ti.Event(f"r{i}", {"region": "us" if i % 2 else "eu", "kind": "refund"})
               for i in range(100)]
    sinks = {name: ti.sinks.Memory(name=name) for name in ("eu", "us", "archive")}
    g = ti.Graph(dead_letter=ti.sinks.Memory(name="dead"))
    g.add_source(ti.sources.from_iterable(orders), name="orders")
    g.add_source(ti.sources.from_iterable(refunds), name="refunds")
    g.add_stage(ti.map(normalise), inputs=["orders", "refunds"], name="normalise")  # fan-in
    g.add_stage(ti.route(lambda p: p["region"], ports=["eu", "us"]), inputs="normalise",
                name="region")
    g.add_sink(sinks["eu"], inputs=[("region", "eu")])
    g.add_sink(sinks["us"], inputs=[("region", "us")])
    g.add_sink(sinks["archive"], inputs="normalise")  # a second consumer: broadcast
    return g, sinks


def main() -> None:
    graph, sinks = build()
    report = trio.run(graph.run)
    counts = " ".join(f"{name}={len(sink.events)}" for name, sink in sinks.items())
    print(f"{counts} received={report.received} balanced={report.balanced}")


if __name__ == "__main__":
    main()
