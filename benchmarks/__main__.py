"""``python -m benchmarks [--quick] [--out DIR] [--only NAME[,NAME]] [--repeat R] [--rounds K]``.

Writes results.json, results.md and PNG charts into DIR (default
``benchmarks/results/``). ``--quick`` is the smoke mode CI runs: small sizes, one
timed run each; it checks that every scenario works and asserts no speed. The
exit status is 1 when any contender failed (a skipped peer is not a failure).
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys
import time
from pathlib import Path

import attrs

from ._report import environment, write_all
from ._runner import Runner
from ._scenarios import SCENARIOS, Config

DEFAULT_OUT = Path(__file__).resolve().parent / "results"

PEER_NOTES = [
    "Peers: slurry pins trio<0.22, so it is installed with `pip install --no-deps slurry` "
    "(plus its dependency async_generator, which --no-deps skips) and runs on the trio above; "
    "aiostream and bytewax install normally. A peer that is not importable is skipped, "
    "with the reason in its row.",
]


def _scenario_names(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown scenario(s) {', '.join(unknown) or value!r}; "
            f"choose from {', '.join(SCENARIOS)}"
        )
    return names


def _load_average() -> float | None:
    """The 1-minute load average: other work on the machine skews the timings."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _progress(line: str) -> None:
    print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen scenarios and write the report; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="trio_ingest benchmark suite: throughput, latency, memory, backpressure, "
        "flaky sinks, SQLite and backends, against a plain loop, raw Trio/asyncio and peers.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke mode: small sizes, 1 run (CI; < 2 min)"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--only",
        type=_scenario_names,
        metavar="NAME[,NAME]",
        help=f"run only these scenarios: {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--repeat", type=int, help="timed runs per figure (default: 5, quick 1)")
    parser.add_argument(
        "--rounds",
        type=int,
        help="processes per contender, taking turns, in sink_feed (default: 9, quick 1)",
    )
    args = parser.parse_args(argv)

    cfg = Config.smoke() if args.quick else Config.full()
    for option in ("repeat", "rounds"):
        value = getattr(args, option)
        if value is not None:
            if value < 1:
                parser.error(f"--{option} must be >= 1: {value}")
            cfg = attrs.evolve(cfg, **{option: value})
    names = args.only or list(SCENARIOS)
    runner = Runner(timeout=cfg.timeout, progress=_progress)
    command = shlex.join(["python", "-m", "benchmarks", *(sys.argv[1:] if argv is None else argv)])
    started = datetime.datetime.now(datetime.UTC)
    clock = time.perf_counter()
    _progress(
        f"{command}: {'quick' if cfg.quick else 'full'} mode, {cfg.repeat} run(s) per "
        f"figure, scenarios: {', '.join(names)}"
    )
    load_start = _load_average()
    results = []
    for name in names:
        _progress(f"[{name}]")
        results.append(SCENARIOS[name](cfg, runner))
    meta = {
        "command": command,
        "mode": "quick" if cfg.quick else "full",
        "repeat": cfg.repeat,
        "config": attrs.asdict(cfg),
        "started": started.isoformat(timespec="seconds"),
        "duration_s": time.perf_counter() - clock,
        "load_average": {"start": load_start, "end": _load_average()},
        **environment(),
        "notes": PEER_NOTES,
        "errors": runner.errors,
    }
    for path in write_all(args.out, meta, results):
        _progress(f"wrote {path}")
    if runner.errors:
        _progress(f"{len(runner.errors)} error(s):")
        for error in runner.errors:
            _progress(f"  {error}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
