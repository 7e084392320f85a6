"""``python -m benchmarks.soak [--scenario NAME[,NAME]] [--size N]``: the reliability suite, large.

Runs the scenarios of ``tests/reliability`` (the same engines the CI tests run
small) at soak sizes: many more events, kills, seeds and fuzz runs. Each
scenario runs in a child process of its own, so its peak RSS (VmHWM) is its
own; scenarios that drive ``trio-ingest`` subprocesses also report the peak
RSS of those. Figures (events, kills, lost, duplicates, peak RSS, ...) are
merged into ``benchmarks/results/soak.json``: running one scenario keeps the
others' last figures. Exit status 1 when any scenario broke a promise.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "soak.json"

Runner = Callable[[int, Path], dict[str, Any]]


def _kill9(size: int, workdir: Path) -> dict[str, Any]:
    from tests.reliability.test_kill9 import run_kill9

    seeds = [
        run_kill9(workdir / f"run{seed}", lines=size, kills=5, seed=seed, batch=200,
                  capacity=2_000)
        for seed in (1, 2, 3)
    ]
    seeds.append(run_kill9(workdir / "ingest", lines=size, kills=3, seed=9, batch=500,
                           command="ingest"))
    return {
        "events": sum(s["events"] for s in seeds),
        "kills": sum(s["kills"] for s in seeds),
        "lost": sum(s["lost"] for s in seeds),
        "duplicate_rows": sum(s["duplicate_rows"] for s in seeds),
        "duplicates_delivered": sum(s.get("duplicates_delivered", 0) for s in seeds),
        "max_window": max(s.get("max_window", 0) for s in seeds),
        "dead_letter_repeats": sum(s["dead_letter_repeats"] for s in seeds),
        "pipeline_peak_rss_kb": max(s["peak_rss_kb"] for s in seeds),
        "runs": seeds,
    }


def _torn(size: int, workdir: Path) -> dict[str, Any]:
    from tests.reliability.test_torn_checkpoint import run_torn_by_kill, run_torn_in_process

    runs = [
        run_torn_in_process(workdir / f"{where}{n}", where=where, from_write=n, lines=size)
        for where in ("fsync", "replace")
        for n in (2, 30)
    ]
    runs += [
        run_torn_by_kill(workdir / f"kill-{where}{n}", where=where, kill_at=n, lines=size)
        for where in ("replace", "write")
        for n in (3, 40)
    ]
    return {
        "events": sum(r["events"] for r in runs),
        "kills": sum(1 for r in runs if "kill_at_write" in r),
        "failed_checkpoint_writes": sum(1 for r in runs if "failed_from_write" in r),
        "lost": sum(r["lost"] for r in runs),
        "duplicate_rows": sum(r["duplicate_rows"] for r in runs),
        "redelivered": sum(r.get("redelivered", r.get("duplicates_delivered", 0)) for r in runs),
        "runs": runs,
    }


def _out_of_order(size: int, workdir: Path) -> dict[str, Any]:
    from tests.reliability.test_out_of_order import run_out_of_order, run_out_of_order_file

    runs = [run_out_of_order(size, seed=seed) for seed in range(5)]
    file_run = run_out_of_order_file(workdir, lines=max(1_000, size // 10))
    return {
        "events": sum(r["events"] for r in runs) + file_run["events"],
        "crashes": len(runs) + 1,
        "lost": sum(r["lost"] for r in runs) + file_run["lost"],
        "duplicate_rows": file_run["duplicate_rows"],
        "unfinished_at_crash": sum(r["unfinished_at_crash"] for r in runs),
        "duplicates_delivered": sum(r["duplicates_delivered"] for r in runs),
        "inversions": sum(r["inversions"] for r in runs),
        "runs": [*runs, file_run],
    }


def _flaky(size: int, workdir: Path) -> dict[str, Any]:
    from tests.reliability.test_flaky_sink import run_flaky_sink

    runs = [run_flaky_sink(size, seed=seed, flaky_for=120.0) for seed in range(3)]
    return {
        "events": sum(r["inputs"] for r in runs),
        "lost": sum(r["lost"] for r in runs),
        "dead_letters": sum(r["dead_letters"] for r in runs),
        "failed_writes": sum(r["failed_writes"] for r in runs),
        "retries": sum(r["retries"] for r in runs),
        "runs": runs,
    }


def _outage(size: int, workdir: Path) -> dict[str, Any]:
    from tests.reliability.test_sink_outage import run_sink_outage

    return run_sink_outage(size, outage=3_600.0, capacity=1_000, max_batch=100)


def _poison(size: int, workdir: Path) -> dict[str, Any]:
    from tests.reliability.test_poison import run_poison

    stage = run_poison(size, where="stage", seed=1)
    sink = run_poison(size, where="sink", seed=2, poison_rate=0.05)
    return {"events": stage["inputs"] + sink["inputs"], "lost": stage["lost"] + sink["lost"],
            "poison": stage["poison"] + sink["poison"],
            "dead_letters": stage["dead_letters"] + sink["dead_letters"],
            "runs": {"stage": stage, "sink": sink}}


def _bad_input(size: int, workdir: Path) -> dict[str, Any]:
    from tests.reliability.test_bad_input import run_bad_input

    return run_bad_input(size, seed=3, workdir=workdir)


def _overload(size: int, workdir: Path) -> dict[str, Any]:
    from tests.reliability.test_overload import run_overload

    return run_overload(max(3_000, size // 10), factor=10)


def _graceful(size: int, workdir: Path) -> dict[str, Any]:
    from tests.reliability.test_graceful_stop import run_graceful_healthy, run_graceful_hung

    healthy = [
        run_graceful_healthy(workdir / f"healthy{i}", lines=size, rate=size / 10,
                             after=size // 4 * (i + 1) // 3)
        for i in range(3)
    ]
    hung = [run_graceful_hung(workdir / f"hung{i}", lines=size, shutdown=2.0 + i)
            for i in range(3)]
    return {
        "events": sum(r["events"] for r in [*healthy, *hung]),
        "signals": len(healthy) + len(hung),
        "lost": sum(r["lost"] for r in [*healthy, *hung]),
        "duplicates_after_graceful_stop": sum(r["duplicates_delivered"] for r in healthy),
        "max_stop_seconds_healthy": max(r["stop_seconds"] for r in healthy),
        "stop_seconds_hung_vs_timeout": [(r["stop_seconds"], r["shutdown_timeout"])
                                         for r in hung],
        "pipeline_peak_rss_kb": max(r["peak_rss_kb"] for r in [*healthy, *hung]),
        "runs": {"healthy": healthy, "hung": hung},
    }


def _cancel_fuzz(size: int, workdir: Path) -> dict[str, Any]:
    from tests.reliability.test_cancellation_fuzz import run_cancellation_fuzz

    trio_runs = run_cancellation_fuzz(size, first_seed=10_000)
    asyncio_runs = run_cancellation_fuzz(max(10, size // 20), first_seed=50_000,
                                         backend="asyncio")
    return {"runs": trio_runs["runs"] + asyncio_runs["runs"],
            "events": trio_runs["events"] + asyncio_runs["events"],
            "lost": 0, "redelivered": trio_runs["redelivered"] + asyncio_runs["redelivered"],
            "by_mode_runs_cut": trio_runs["by_mode"], "asyncio": asyncio_runs}


def _disk_full(size: int, workdir: Path) -> dict[str, Any]:
    from tests.reliability.test_disk_full import run_disk_full

    runs = {fault: run_disk_full(workdir / fault, fault=fault, lines=size)
            for fault in ("sink_enospc", "sink_eio", "sqlite_full", "checkpoint_enospc",
                          "dead_letter_enospc")}
    return {"events": sum(r["inputs"] for r in runs.values()),
            "lost": sum(r["lost"] for r in runs.values()),
            "duplicate_rows": sum(r["duplicate_rows"] for r in runs.values()),
            "runs": runs}


def _property(size: int, workdir: Path) -> dict[str, Any]:
    from hypothesis import HealthCheck, settings
    from hypothesis.stateful import run_state_machine_as_test

    from tests.reliability.test_property_model import PipelineModel

    run_state_machine_as_test(
        PipelineModel,
        settings=settings(max_examples=size, stateful_step_count=60, deadline=None,
                          suppress_health_check=list(HealthCheck), database=None),
    )
    return {"examples": size, "steps_per_example": 60, "lost": 0}


#: name -> (what it proves, default soak size, runner)
SCENARIOS: dict[str, tuple[str, int, Runner]] = {
    "kill9": ("SIGKILL mid-load, restart: lines per seed", 100_000, _kill9),
    "torn_checkpoint": ("failures and kills inside checkpoint writes: lines per run", 30_000,
                        _torn),
    "out_of_order": ("shuffled completion, crash, restart: events per seed", 50_000,
                     _out_of_order),
    "flaky_sink": ("30% failing writes, then recovery: events per seed", 100_000, _flaky),
    "sink_outage": ("an hour-long outage (virtual): events", 100_000, _outage),
    "poison": ("poison events in a stage and a sink: events per run", 200_000, _poison),
    "bad_input": ("hostile lines into SQLite + DLQ file: lines", 200_000, _bad_input),
    "overload": ("source 10x faster than the sink: events of the long run", 500_000,
                 _overload),
    "graceful_stop": ("SIGTERM with healthy and hung sinks: lines per run", 50_000, _graceful),
    "cancellation_fuzz": ("seeded runs cancelled anywhere: runs", 1_000, _cancel_fuzz),
    "disk_full": ("ENOSPC/EIO under sink, checkpoint, DLQ: lines per fault", 50_000,
                  _disk_full),
    "property_model": ("state machine examples", 300, _property),
}


def _peak_rss_kb() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _child(name: str, size: int, out: Path) -> int:
    """Run one scenario in this process; write its result to ``out``."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import logging

    logging.disable(logging.WARNING)  # retries and dead letters are the point, not news
    started = time.perf_counter()
    result: dict[str, Any] = {"scenario": name, "size": size}
    with tempfile.TemporaryDirectory(prefix=f"soak-{name}-") as tmp:
        try:
            result["figures"] = SCENARIOS[name][2](size, Path(tmp))
            result["ok"] = True
        except BaseException as exc:  # noqa: BLE001 -- a broken promise is a result too
            result["ok"] = False
            result["error"] = f"{type(exc).__name__}: {exc}"[:2_000]
            result["traceback"] = traceback.format_exc()[-4_000:]
    result["seconds"] = time.perf_counter() - started
    result["peak_rss_kb"] = _peak_rss_kb()
    out.write_text(json.dumps(result, indent=2, default=str))
    return 0 if result["ok"] else 1


def _run(name: str, size: int) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.soak", "--child", os.fspath(out),
             "--scenario", name, "--size", str(size)],
            cwd=ROOT, capture_output=True, text=True,
        )
        if out.stat().st_size == 0:
            return {"scenario": name, "size": size, "ok": False,
                    "error": f"the scenario process died (exit {done.returncode}): "
                             f"{done.stderr[-2_000:]}"}
        return dict(json.loads(out.read_text()))
    finally:
        out.unlink(missing_ok=True)


def _names(value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown scenario(s) {', '.join(unknown) or value!r}; choose from "
            + ", ".join(SCENARIOS)
        )
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--scenario", type=_names, default=list(SCENARIOS),
                        help="comma-separated scenario names (default: all)")
    parser.add_argument("--size", type=int, default=None,
                        help="the scenario's main size (events, lines, runs...; "
                             "default: its soak size)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file (JSON)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.size is not None and args.size < 1:
        parser.error(f"--size must be >= 1: {args.size}")
    if args.child is not None:
        name = args.scenario[0]
        return _child(name, args.size or SCENARIOS[name][1], args.child)
    results: dict[str, Any] = {}
    if args.out.exists():
        results = json.loads(args.out.read_text()).get("scenarios", {})
    failed = []
    for name in args.scenario:
        size = args.size or SCENARIOS[name][1]
        print(f"{name}: {SCENARIOS[name][0]} = {size} ...", flush=True)
        result = _run(name, size)
        result["date"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        results[name] = result
        status = "ok" if result.get("ok") else f"FAILED: {result.get('error')}"
        headline = {k: v for k, v in result.get("figures", {}).items()
                    if not isinstance(v, dict | list)}
        print(f"  {status} in {result.get('seconds', 0):.1f}s, peak RSS "
              f"{result.get('peak_rss_kb', 0) / 1024:.1f} MB; {headline}", flush=True)
        if not result.get("ok"):
            failed.append(name)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(
            {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                         "platform": platform.platform()},
             "scenarios": results}, indent=2, default=str) + "\n")
    print(f"figures in {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
