"""Testing your own pipeline under faults with ``trio_ingest.testing``.

The pipeline under test is ``build()``: it validates orders and loads them. The
tests feed it a source that sends duplicates, out-of-order and malformed
records; a sink that is down for ten minutes, then fails its first writes
(virtual minutes: ``MockClock`` makes them instant); and they kill it with
SIGKILL mid-run. Each time, the oracle checks that nothing was lost, doubled or
invented.

Run: ``python examples/testing_under_faults.py`` (it runs pytest on itself), or
``pytest examples/testing_under_faults.py``.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import trio_ingest as ti
from trio_ingest.testing import (
    FaultySource,
    FlakySink,
    Oracle,
    OutageSink,
    crash_until_done,
    dead_letter_ids,
    memory_ids,
    run_with_mock_clock,
    sqlite_ids,
)


class InvalidOrder(ti.PermanentError):
    pass


def validate(order):
    if not isinstance(order, dict) or "amount" not in order:
        raise InvalidOrder(f"not an order: {order!r:.40}")
    return {**order, "cents": order["amount"] * 100}


def build(source: ti.Source, sink: ti.Sink, dead: ti.Sink) -> ti.Pipeline:
    """The pipeline under test (yours would come from your package)."""
    return ti.Pipeline(
        source,
        ti.map(validate),
        sink=sink,
        dead_letter=dead,
        retry=ti.RetryPolicy(
            max_attempts=1_000, backoff=ti.ExponentialBackoff(initial=0.1, max_delay=30.0)
        ),
    )


ORDERS = [ti.Event(f"order-{i}", {"amount": i}) for i in range(1_000)]


def test_duplicates_disorder_and_malformed_records(ti_store, ti_dead_letters):
    source = FaultySource(ORDERS, duplicates=0.05, out_of_order=10, malformed=0.02, seed=7)
    report = run_with_mock_clock(build(source, ti_store, ti_dead_letters))
    verdict = Oracle(e.id for e in ORDERS).verdict(
        memory_ids(ti_store), memory_ids(ti_dead_letters), report
    )
    verdict.assert_ok()  # nothing lost, no duplicate rows, nothing invented, balanced
    assert set(memory_ids(ti_dead_letters)) == set(source.malformed_served)


def test_a_flaky_sink_then_a_ten_minute_outage(ti_store, ti_dead_letters, ti_clock):
    # down for the first ten minutes; then its first five writes fail too
    flaky = FlakySink(ti_store, fail_first=5)
    sink = OutageSink(flaky, start=0.0, duration=600.0)
    source = ti.sources.from_iterable(ORDERS)
    report = run_with_mock_clock(build(source, sink, ti_dead_letters), clock=ti_clock)
    verdict = Oracle(e.id for e in ORDERS).verdict(
        memory_ids(ti_store), memory_ids(ti_dead_letters), report
    )
    verdict.assert_ok()
    assert ti_clock.current_time() > 600  # the outage was outlasted, in no real time
    assert sink.failures > 0 and flaky.failures == 5 and report.dead_lettered == 0


JOB = """
import os
import trio_ingest as ti
from testing_under_faults import build

def job():
    source = ti.sources.JsonLines(os.environ["ORDERS"], checkpoint=os.environ["CHECKPOINT"],
                                  commit_interval=0.01)
    return build(source, ti.sinks.SQLite(os.environ["DB"], "orders", max_batch=20),
                 ti.sinks.JsonLines(os.environ["DEAD"]))
"""


def test_killed_three_times_and_restarted(tmp_path: Path):
    (tmp_path / "job.py").write_text(textwrap.dedent(JOB))
    orders = tmp_path / "orders.jsonl"
    orders.write_text("".join(
        json.dumps({"id": f"o{i}", "amount": i, "pad": "x" * 300}) + "\n" for i in range(3_000)
    ))
    env = {**os.environ, "ORDERS": str(orders), "CHECKPOINT": str(tmp_path / "ckpt"),
           "DB": str(tmp_path / "out.db"), "DEAD": str(tmp_path / "dead.jsonl"),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(tmp_path)])}
    result = crash_until_done(
        "job:job", inputs=[f"o{i}" for i in range(3_000)], env=env, kills=3, seed=2,
        rows=lambda: sqlite_ids(tmp_path / "out.db", "orders"),
        dead=lambda: dead_letter_ids(tmp_path / "dead.jsonl"),
    )
    result.verdict.assert_ok()
    assert result.kills == 3


if __name__ == "__main__":
    # a fresh interpreter: pytest must import the modules it rewrites itself
    sys.exit(subprocess.call([sys.executable, "-m", "pytest", __file__, "-q",
                              "-p", "no:cacheprovider"]))
