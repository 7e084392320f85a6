"""Checkpoint cost: events/s of file -> tumbling window -> Null/SQLite, with and without state=.

The same JSON Lines file (1,000 users, or 100,000 for the many-keys rows; event
times 1 ms apart with up to 2 s of disorder) is read by
``ti.sources.JsonLines(time_field="ts")``, summed per user in 10 s tumbling
windows (``max_delay=2``) and written to a Null sink or a fresh SQLite table;
once without a state store (windows hold their events' acks, the baseline) and
once with ``state=ti.state.SQLite(path)`` at several checkpoint intervals.
Prints events/s, the ratio to the stateless run with the same sink, and the
checkpoints taken; writes them to ``benchmarks/results/state.json``.
Run: ``python -m benchmarks.bench_state [--events 300000]``; the suite runs it as
``python -m benchmarks --only checkpoint``.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

SIZE = 10.0
DELAY = 2.0


def write_input(path: Path, n: int, seed: int = 1, users: int = 1000) -> None:
    """``n`` JSON lines: id, user, amount, ts (1 ms apart, up to 2 s late)."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for i in range(n):
            ts = round(i * 0.001 - rng.random() * DELAY, 4)
            f.write(f'{{"id":{i},"user":"u{rng.randrange(users)}","amount":{rng.randrange(100)},'
                    f'"ts":{ts}}}\n')


def run_checkpoint(
    n: int, sink: str = "null", state: bool = False, interval: float = 5.0, users: int = 1000
) -> dict[str, Any]:
    """One run over ``n`` events: seconds, windows written, checkpoints taken."""
    import trio

    import trio_ingest as ti

    with tempfile.TemporaryDirectory(prefix="bench-state-") as directory:
        root = Path(directory)
        write_input(root / "in.jsonl", n, users=users)
        win = ti.windows.tumbling(
            SIZE, key=lambda p: p["user"], reduce=lambda acc, p: acc + p["amount"],
            initial=0.0, max_delay=DELAY, name="spend",
        )
        out = ti.sinks.SQLite(root / "out.db", "spend") if sink == "sqlite" else ti.sinks.Null()
        options: dict[str, Any] = {}
        if state:
            options = {"state": ti.state.SQLite(root / "state.db"),
                       "checkpoint_interval": interval}
        pipeline = ti.Pipeline(ti.sources.JsonLines(root / "in.jsonl", time_field="ts"), win,
                               sink=out, dead_letter=ti.sinks.Null(), **options)
        start = time.perf_counter()
        report = trio.run(pipeline.run)
        elapsed = time.perf_counter() - start
        if report.received != n or report.in_flight or not report.balanced:
            raise AssertionError(f"lost events: {report.summary()}")
        epochs = 0
        if state:
            with sqlite3.connect(root / "state.db") as db:
                (epochs,) = db.execute("SELECT epoch FROM ti_epoch").fetchone()
    # no "count": what the sink got is windows, not events (the suite's rate is n / elapsed)
    return {"elapsed": elapsed, "windows": report.delivered, "late": report.nodes["spend"].late,
            "checkpoints": epochs}


#: (label, sink, state, checkpoint interval, users); a variant without state is the baseline
#: of the ones after it
VARIANTS: tuple[tuple[str, str, bool, float, int], ...] = (
    ("Null, no state", "null", False, 0.0, 1000),
    ("Null, state=SQLite, every 5 s", "null", True, 5.0, 1000),
    ("Null, state=SQLite, every 0.5 s", "null", True, 0.5, 1000),
    ("Null, state=SQLite, every 0.1 s", "null", True, 0.1, 1000),
    ("SQLite, no state", "sqlite", False, 0.0, 1000),
    ("SQLite, state=SQLite, every 5 s", "sqlite", True, 5.0, 1000),
    ("SQLite, state=SQLite, every 0.5 s", "sqlite", True, 0.5, 1000),
    # many keys: ~100,000 open windows in every checkpoint
    ("Null, 100k users, no state", "null", False, 0.0, 100_000),
    ("Null, 100k users, state every 0.5 s", "null", True, 0.5, 100_000),
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant (median kept)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    figures: dict[str, Any] = {"events": args.events, "variants": {}}
    base: dict[str, float] = {}
    for label, sink, state, interval, users in VARIANTS:
        runs = sorted(
            (run_checkpoint(args.events, sink, state, interval, users)
             for _ in range(args.repeat)),
            key=lambda r: r["elapsed"],
        )
        run = runs[len(runs) // 2]
        rate = args.events / run["elapsed"]
        if not state:
            base[sink] = rate
        row = {**run, "users": users, "events_per_s": rate, "vs_no_state": rate / base[sink]}
        figures["variants"][label] = row
        print(f"{label:<36} {rate:>10,.0f} events/s  {row['vs_no_state']:5.2f}x no state  "
              f"{run['checkpoints']:>3} checkpoints  ({run['windows']:,} windows)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "state.json").write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
