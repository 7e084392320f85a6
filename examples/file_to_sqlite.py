"""A JSON Lines file into SQLite: checkpointed, idempotent, bad lines dead-lettered.

Run: ``python examples/file_to_sqlite.py [WORKDIR]`` (default: a new temporary folder).
Run it twice: the second run resumes from the checkpoint and stores nothing twice.
"""

import json
import sqlite3
import sys
import tempfile
from pathlib import Path

import trio

import trio_ingest as ti


def write_input(path: Path, lines: int = 1_000) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(lines):
            if i % 250 == 7:
                f.write('{"id": "broken", \n')  # malformed: dead-lettered with its reason
            else:
                f.write(json.dumps({"id": f"order-{i}", "amount": i % 97}) + "\n")


def build(workdir: Path) -> ti.Pipeline:
    return ti.Pipeline(
        ti.sources.JsonLines(workdir / "orders.jsonl", checkpoint=workdir / "orders.checkpoint"),
        ti.filter(lambda order: order["amount"] > 0),  # filtered events are accounted too
        ti.map(lambda order: {**order, "cents": order["amount"] * 100}),
        sink=ti.sinks.SQLite(workdir / "orders.sqlite", "orders"),
        dead_letter=ti.sinks.JsonLines(workdir / "dead-letters.jsonl"),
    )


def main() -> None:
    workdir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    workdir.mkdir(parents=True, exist_ok=True)
    if not (workdir / "orders.jsonl").exists():
        write_input(workdir / "orders.jsonl")
    report = trio.run(build(workdir).run)
    rows = sqlite3.connect(workdir / "orders.sqlite").execute("SELECT count(*) FROM orders")
    print(
        f"received={report.received} delivered={report.delivered} "
        f"filtered={report.filtered} dead_lettered={report.dead_lettered} "
        f"rows={rows.fetchone()[0]} balanced={report.balanced}"
    )


if __name__ == "__main__":
    main()
