"""Scenario 8, overload: a source ten times faster than its sink, for a sustained run.

Each run is a subprocess (``_programs.py overload``) that first measures how
fast its source alone goes, then makes the sink ten times slower. With
bounded edges the producer must wait (backpressure, reported as blocked
seconds) and memory must not grow with the length of the run: the peak RSS
of a run ten times longer stays within a few percent of the short one's, and
the growth over the process's own baseline stays within a small multiple of
``memory_bound()`` events.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

PROGRAM = Path(__file__).with_name("_programs.py")
PAYLOAD = 512
# Per-event cost in the pipeline's hands: the payload string plus the Event, the
# payload dict and list slots (generous: measured ~0.8 KB).
PER_EVENT_BYTES = PAYLOAD + 1_024


def overload_run(events: int, *, capacity: int = 1_000, batch: int = 64) -> dict[str, Any]:
    """Run the overload program once; return its figures (peak RSS from the kernel too)."""
    process = subprocess.Popen(
        [
            sys.executable, str(PROGRAM), "overload", "--events", str(events),
            "--payload", str(PAYLOAD), "--capacity", str(capacity), "--batch", str(batch),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    assert process.returncode == 0, err[-2000:]
    return dict(json.loads(out.strip().splitlines()[-1]))


def check_overload(figures: dict[str, Any]) -> None:
    """One run's promises: everything delivered, backpressure seen, memory within the bound."""
    assert figures["delivered"] == figures["events"] == figures["received"]
    assert figures["balanced"] and figures["completed"]
    assert figures["peak_depth"] <= figures["capacity"]
    assert figures["blocked_seconds"] > 0, "the producer never waited: no backpressure"
    growth_kb = figures["peak_rss_kb"] - figures["rss_before_run_kb"]
    allowed_kb = figures["memory_bound"] * PER_EVENT_BYTES * 3 // 1024 + 8_192
    assert growth_kb <= allowed_kb, (growth_kb, allowed_kb, figures)


def run_overload(small: int = 4_000, factor: int = 10) -> dict[str, Any]:
    """A run and one ``factor`` times longer: both bounded, peaks within 15%."""
    short = overload_run(small)
    long = overload_run(small * factor)
    check_overload(short)
    check_overload(long)
    ratio = long["peak_rss_kb"] / short["peak_rss_kb"]
    assert ratio <= 1.15, f"peak RSS grew {ratio:.2f}x for a {factor}x longer run"
    return {
        "events": [short["events"], long["events"]],
        "peak_rss_kb": [short["peak_rss_kb"], long["peak_rss_kb"]],
        "rss_ratio": ratio,
        "memory_bound_events": long["memory_bound"],
        "source_rate": [short["source_rate"], long["source_rate"]],
        "sink_rate": [short["sink_rate"], long["sink_rate"]],
        "blocked_seconds": [short["blocked_seconds"], long["blocked_seconds"]],
        "elapsed": [short["elapsed"], long["elapsed"]],
    }


def test_a_source_ten_times_faster_than_the_sink_stays_within_the_memory_bound() -> None:
    # small enough for CI (the long run takes a few seconds: the sink is slow on purpose)
    figures = run_overload(int(os.environ.get("RELIABILITY_OVERLOAD_EVENTS", "3000")))
    assert figures["blocked_seconds"][1] > figures["blocked_seconds"][0]
