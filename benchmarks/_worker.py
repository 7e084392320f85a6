"""Subprocess entry: run one contender in a fresh interpreter and write its figures.

``python -m benchmarks._worker CONTENDER --n N [--kwargs JSON] [--repeat R]
[--warmup W] --result FILE``

A fresh process per contender keeps one contender's heap, caches and imports out
of another's figures, and makes ``ru_maxrss`` (peak RSS) belong to one run alone.
The result file holds ``{"runs": [...], "peak_rss": ..., "baseline_rss": ...}``,
or ``{"skipped": reason}``; any other failure exits non-zero with its traceback.
"""

from __future__ import annotations

import argparse
import gc
import json
from pathlib import Path

from ._contenders import CONTENDERS
from ._measure import Skip, current_rss_bytes, peak_rss_bytes


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run the contender, write the result file."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks._worker")
    parser.add_argument("contender", choices=sorted(CONTENDERS))
    parser.add_argument("--n", type=int, required=True, help="events per timed run")
    parser.add_argument("--kwargs", default="{}", help="JSON object of keyword arguments")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs")
    parser.add_argument("--warmup", type=int, default=0, help="events in an untimed first run")
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(argv)

    run = CONTENDERS[args.contender]
    kwargs = json.loads(args.kwargs)
    baseline = current_rss_bytes()
    try:
        if args.warmup > 0:
            run(args.warmup, **kwargs)
        runs = []
        for _ in range(args.repeat):
            gc.collect()
            runs.append(run(args.n, **kwargs))
    except Skip as skip:
        args.result.write_text(json.dumps({"skipped": skip.reason}))
        return 0
    result = {"runs": runs, "peak_rss": peak_rss_bytes(), "baseline_rss": baseline}
    args.result.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
