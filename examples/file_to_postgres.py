"""The same file into PostgreSQL: COPY into a staging table, ``ON CONFLICT DO NOTHING``.

Run: ``python examples/file_to_postgres.py DSN TABLE [WORKDIR]``
(e.g. ``postgresql://postgres@127.0.0.1:5432/test orders``); needs
``pip install 'trio-ingest[postgres]'``.
"""

import json
import sys
import tempfile
from pathlib import Path

import trio

import trio_ingest as ti


def build(dsn: str, table: str, workdir: Path) -> ti.Pipeline:
    return ti.Pipeline(
        ti.sources.JsonLines(workdir / "orders.jsonl", checkpoint=workdir / "orders.checkpoint"),
        ti.map(lambda order: {**order, "cents": order["amount"] * 100}),
        sink=ti.sinks.Postgres(dsn, table),  # creates the table when it is missing
        dead_letter=ti.sinks.JsonLines(workdir / "dead-letters.jsonl"),
    )


def main() -> None:
    dsn, table = sys.argv[1], sys.argv[2]
    workdir = Path(sys.argv[3]) if len(sys.argv) > 3 else Path(tempfile.mkdtemp())
    with open(workdir / "orders.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"id": f"order-{i}", "amount": i}) + "\n" for i in range(500))
    report = trio.run(build(dsn, table, workdir).run)
    print(f"delivered={report.delivered} dead_lettered={report.dead_lettered}")


if __name__ == "__main__":
    main()
