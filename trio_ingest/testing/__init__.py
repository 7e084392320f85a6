"""The test kit: test your own pipelines the way trio_ingest tests itself.

Four parts, all real (the fault parts wrap real sinks and call them):

* virtual time: :func:`run_with_mock_clock` runs a pipeline or an async function
  under ``trio.testing.MockClock(autojump_threshold=0)``, so retries, batching
  windows and shutdown deadlines take no real time;
* faults: :class:`FaultySource` (duplicates, disorder, malformed records),
  :class:`FlakySink` (fails the first k calls, a share of calls, or until a
  time), :class:`PoisonSink` (fails permanently for chosen ids),
  :class:`HangingSink`, :class:`SlowSink`, :class:`OutageSink` (down for a
  stretch of loop-clock time);
* accounting: :class:`Oracle` (input ids against what the sinks and the
  dead-letter sink hold: lost, duplicated, unexpected), :func:`assert_accounted`
  (the report's identity) and readers for what came out;
* crashes: :func:`crash_until_done` runs a pipeline factory in a subprocess,
  SIGKILLs it at chosen or random points, reruns until done, and returns the
  oracle's verdict.

The pytest plugin (``trio_ingest.testing.pytest_plugin``, loaded by its entry
point) adds fixtures: ``ti_clock``, ``ti_mock_clock_backend``, ``ti_store``,
``ti_dead_letters``, ``ti_oracle``. ::

    report = ti.testing.run_with_mock_clock(
        ti.Pipeline(source, sink=ti.testing.FlakySink(store, fail_first=3), dead_letter=dead)
    )
    ti.testing.assert_accounted(report)

In the import rule, ``testing`` sits above the runtime and the builders, next to
``observe``: it may import anything but ``cli``.
"""

from ._clock import run_with_mock_clock as run_with_mock_clock
from ._crash import CrashReport as CrashReport
from ._crash import crash_until_done as crash_until_done
from ._faults import MALFORMED as MALFORMED
from ._faults import FaultySource as FaultySource
from ._faults import FlakySink as FlakySink
from ._faults import HangingSink as HangingSink
from ._faults import OutageSink as OutageSink
from ._faults import PoisonSink as PoisonSink
from ._faults import SlowSink as SlowSink
from ._faults import assert_accounted as assert_accounted
from ._oracle import Oracle as Oracle
from ._oracle import Verdict as Verdict
from ._oracle import check as check
from ._oracle import check_accounting as check_accounting
from ._oracle import dead_letter_ids as dead_letter_ids
from ._oracle import dead_letter_records as dead_letter_records
from ._oracle import memory_dead_letters as memory_dead_letters
from ._oracle import memory_ids as memory_ids
from ._oracle import sqlite_ids as sqlite_ids
from ._oracle import torn_dead_letter_lines as torn_dead_letter_lines

__all__ = (
    "MALFORMED",
    "CrashReport",
    "FaultySource",
    "FlakySink",
    "HangingSink",
    "Oracle",
    "OutageSink",
    "PoisonSink",
    "SlowSink",
    "Verdict",
    "assert_accounted",
    "check",
    "check_accounting",
    "crash_until_done",
    "dead_letter_ids",
    "dead_letter_records",
    "memory_dead_letters",
    "memory_ids",
    "run_with_mock_clock",
    "sqlite_ids",
    "torn_dead_letter_lines",
)
