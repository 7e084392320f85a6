"""Helpers for testing pipelines: fault-injecting sinks and accounting checks.

They are real sinks (they wrap another sink and call it), meant for your own
tests, demos and chaos runs::

    flaky = ti.testing.FlakySink(ti.sinks.Memory(), failure_rate=0.3, seed=1)
"""

from ._faults import FlakySink as FlakySink
from ._faults import HangingSink as HangingSink
from ._faults import PoisonSink as PoisonSink
from ._faults import assert_accounted as assert_accounted

__all__ = ("FlakySink", "HangingSink", "PoisonSink", "assert_accounted")
