"""Write a suite run's figures: results.json, results.md and PNG charts (matplotlib, Agg)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import platform
import sys
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import attrs

from ._scenarios import ScenarioResult

PACKAGES = (
    "trio-ingest",
    "trio",
    "anyio",
    "attrs",
    "slurry",
    "aiostream",
    "bytewax",
    "matplotlib",
    "psutil",
)


def environment() -> dict[str, Any]:
    """The machine, Python and package versions the figures were measured with."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    machine: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "processor": _cpu_model() or platform.processor(),
        "platform": platform.platform(),
    }
    try:
        import psutil  # type: ignore[import-untyped]
    except ImportError:
        pass
    else:
        machine["physical_cores"] = psutil.cpu_count(logical=False)
        machine["memory_gb"] = round(psutil.virtual_memory().total / 1024**3, 1)
    return {
        "machine": machine,
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "packages": versions,
    }


def _cpu_model() -> str | None:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return None
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return None


def write_all(out: Path, meta: dict[str, Any], results: list[ScenarioResult]) -> list[Path]:
    """Write results.json, results.md and the charts into ``out``; return the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    by_name = {result.name: result for result in results}
    charts = write_charts(out, by_name)
    if importlib.util.find_spec("matplotlib") is None:
        meta = {
            **meta,
            "notes": [*meta.get("notes", []), "No charts: matplotlib is not installed."],
        }
    json_path = out / "results.json"
    document = {
        "meta": meta,
        "scenarios": {result.name: attrs.asdict(result) for result in results},
        "charts": [path.name for path in charts],
    }
    json_path.write_text(json.dumps(_clean(document), indent=2) + "\n")
    md_path = out / "results.md"
    md_path.write_text(markdown(meta, results, charts))
    return [json_path, md_path, *charts]


def _clean(value: Any) -> Any:
    """Replace NaN/inf (not JSON) with None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(item) for item in value]
    return value


# --------------------------------------------------------------------------- markdown


def markdown(meta: dict[str, Any], results: list[ScenarioResult], charts: list[Path]) -> str:
    """The Markdown report: run facts, then one table per scenario with its command on top."""
    machine = meta["machine"]
    python = meta["python"]
    load = meta.get("load_average", {})
    packages = ", ".join(
        f"{name} {version}" for name, version in meta["packages"].items() if version
    )
    missing = ", ".join(name for name, version in meta["packages"].items() if not version)
    lines = [
        "# trio_ingest benchmarks",
        "",
        "```",
        meta["command"],
        "```",
        "",
        f"- mode: **{meta['mode']}** ({meta['repeat']} timed run(s) per figure after a "
        "warm-up run, medians; every contender in a fresh subprocess)",
        f"- started {meta['started']}, took {meta['duration_s']:.0f} s; 1-minute load average "
        f"{load.get('start')} at start, {load.get('end')} at end (on {machine['cpu_count']} "
        "CPUs; above about 1 other work competed with the benchmarks)",
        f"- machine: {machine['cpu_count']} CPUs ({machine['processor']}), "
        f"{machine.get('memory_gb', '?')} GB RAM, {machine['platform']}",
        f"- Python {python['version']} ({python['implementation']})",
        f"- packages: {packages}" + (f"; not installed: {missing}" if missing else ""),
        "- Timings on a shared 2-core machine are noisy: compare ratios measured in the same "
        "run, not absolute figures across runs. Nothing here asserts a speed.",
        "",
    ]
    lines += [f"- {note}" for note in meta.get("notes", [])]
    if meta.get("notes"):
        lines.append("")
    if meta.get("errors"):
        lines += ["**Errors in this run:**", ""]
        lines += [f"- {error}" for error in meta["errors"]]
        lines.append("")
    chart_names = {path.stem: path.name for path in charts}
    for result in results:
        lines += [f"## {result.title}", "", "```", result.command, "```", ""]
        lines += [result.measures, ""]
        lines += _table(result.columns, result.rows)
        lines.append("")
        lines += [f"- {note}" for note in result.notes]
        if result.notes:
            lines.append("")
        chart = chart_names.get(result.name)
        if chart:
            lines += [f"![{result.title}]({chart})", ""]
    return "\n".join(lines)


def _table(columns: list[tuple[str, str]], rows: Iterable[dict[str, Any]]) -> list[str]:
    rows = list(rows)
    header = "| " + " | ".join(title for _, title in columns) + " |"
    rule = "|" + "|".join("--:" if _numeric(key, rows) else "---" for key, _ in columns) + "|"
    body = [
        "| " + " | ".join(_cell(key, row.get(key)) for key, _ in columns) + " |" for row in rows
    ]
    return [header, rule, *body]


def _numeric(key: str, rows: list[dict[str, Any]]) -> bool:
    """Whether a column holds numbers (right-aligned) rather than text."""
    values = [row[key] for row in rows if row.get(key) is not None]
    return bool(values) and all(
        isinstance(value, int | float) and not isinstance(value, bool) for value in values
    )


def _cell(key: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value.replace("|", "\\|")
    if key in ("ratio", "vs_256", "vs_plain"):
        return f"{value:.2f}x"
    if key == "blocked_share":
        return f"{value:.0%}"
    if key.endswith("_ms"):
        return f"{value:.3g}" if value < 10 else f"{value:,.0f}"
    if key in ("median_s", "elapsed", "run_s", "blocked_seconds"):
        return f"{value:.3f}" if value < 10 else f"{value:,.1f}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


# --------------------------------------------------------------------------- charts


def write_charts(out: Path, results: dict[str, ScenarioResult]) -> list[Path]:
    """Draw one PNG per scenario that has a chart; return the files written."""
    try:
        import matplotlib
    except ImportError:
        return []

    matplotlib.use("Agg")
    drawers = {
        "throughput": _throughput_chart,
        "batch_size": _batch_chart,
        "latency": _latency_chart,
        "memory": _memory_chart,
    }
    written = []
    for name, draw in drawers.items():
        result = results.get(name)
        if result is None:
            continue
        path = out / f"{name}.png"
        if draw(result, path):
            written.append(path)
    return written


def _throughput_chart(result: ScenarioResult, path: Path) -> bool:
    import matplotlib.pyplot as plt

    rows = [row for row in result.rows if row.get("ratio") is not None]
    if not rows:
        return False
    rows.sort(key=lambda row: row["ratio"])
    figure, axes = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.4))
    colors = [_color(row["contender"]) for row in rows]
    bars = axes.barh([row["label"] for row in rows], [row["ratio"] for row in rows], color=colors)
    for bar, row in zip(bars, rows, strict=True):
        capped = " (capped n)" if row["n"] < max(r["n"] for r in rows) else ""
        axes.text(
            bar.get_width(),
            bar.get_y() + bar.get_height() / 2,
            f" {row['events_per_s']:,.0f}/s{capped}",
            va="center",
            fontsize=8,
        )
    axes.axvline(1.0, color="grey", linestyle=":", linewidth=1)
    axes.set_xlabel("throughput / plain-loop ceiling (higher is better)")
    axes.set_xlim(0, max(row["ratio"] for row in rows) * 1.45)
    axes.set_title(result.title, fontsize=10)
    return _save(figure, path)


def _batch_chart(result: ScenarioResult, path: Path) -> bool:
    import matplotlib.pyplot as plt

    rows = [row for row in result.rows if row.get("events_per_s")]
    if not rows:
        return False
    batches = [row["max_batch"] for row in rows]
    figure, left = plt.subplots(figsize=(7, 4))
    left.plot(
        batches, [row["events_per_s"] for row in rows], "o-", color="tab:blue", label="throughput"
    )
    left.set_xscale("log", base=2)
    left.set_xticks(batches, [str(b) for b in batches])
    left.set_xlabel("max_batch (events)")
    left.set_ylabel("events/s", color="tab:blue")
    left.set_ylim(bottom=0)
    left.yaxis.set_major_formatter(_count_formatter())
    right = left.twinx()
    right.plot(batches, [row["p99_ms"] for row in rows], "s--", color="tab:red", label="p99")
    right.set_ylabel("p99 end-to-end latency (ms)", color="tab:red")
    right.set_ylim(bottom=0)
    left.set_title(result.title + " (saturated source)", fontsize=10)
    return _save(figure, path)


def _latency_chart(result: ScenarioResult, path: Path) -> bool:
    import matplotlib.pyplot as plt

    rows = [row for row in result.rows if row.get("p99_ms") is not None]
    if not rows:
        return False
    # Offered load in increasing order; the saturated run (no target rate) last.
    rows.sort(key=lambda row: (row.get("target_rate") is None, row.get("target_rate") or 0))
    figure, axes = plt.subplots(figsize=(7, 4))
    width = 0.25
    for offset, key in enumerate(("p50_ms", "p95_ms", "p99_ms")):
        axes.bar(
            [i + (offset - 1) * width for i in range(len(rows))],
            [row[key] for row in rows],
            width,
            label=key.removesuffix("_ms"),
        )
    axes.set_xticks(range(len(rows)), [row["load"] for row in rows])
    axes.set_yscale("log")
    axes.set_xlabel("offered load (fraction of measured maximum)")
    axes.set_ylabel("end-to-end latency (ms, log)")
    axes.legend()
    axes.set_title(result.title, fontsize=10)
    return _save(figure, path)


def _memory_chart(result: ScenarioResult, path: Path) -> bool:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    figure, axes = plt.subplots(figsize=(7, 4))
    drawn = False
    for label in dict.fromkeys(row["label"] for row in result.rows):
        points = [
            (row["n"], row["peak_rss_mb"])
            for row in result.rows
            if row["label"] == label and row.get("peak_rss_mb") is not None
        ]
        if not points:
            continue
        drawn = True
        axes.plot(
            [n for n, _ in points],
            [mb for _, mb in points],
            "o-",
            label=label,
            color=_color("trio_ingest" if label.startswith("trio") else "tutorial"),
        )
        for n, mb in points:
            axes.annotate(
                f"{mb:,.0f} MB", (n, mb), textcoords="offset points", xytext=(4, 4), fontsize=8
            )
    if not drawn:
        plt.close(figure)
        return False
    axes.set_xscale("log")
    axes.set_yscale("log")
    sizes = sorted({row["n"] for row in result.rows if row.get("peak_rss_mb") is not None})
    axes.set_xticks(sizes, [_count_formatter()(n, None) for n in sizes])
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.yaxis.set_major_formatter(_count_formatter())
    axes.yaxis.set_minor_formatter(_count_formatter())
    axes.set_xlabel("events (log)")
    axes.set_ylabel("peak RSS (MB, log)")
    axes.legend()
    axes.set_title(result.title, fontsize=10)
    return _save(figure, path)


def _count_formatter() -> Any:
    """Tick labels like 20k, 1.5M instead of scientific notation."""
    from matplotlib.ticker import FuncFormatter

    def label(value: float, _position: object) -> str:
        for size, suffix in ((1e6, "M"), (1e3, "k")):
            if abs(value) >= size:
                return f"{value / size:g}{suffix}"
        return f"{value:g}"

    return FuncFormatter(label)


def _color(contender: str) -> str:
    if contender.startswith("trio_ingest"):
        return "tab:green"
    if contender == "ceiling":
        return "tab:grey"
    if contender.startswith("tutorial"):
        return "tab:red"
    return "tab:blue"


def _save(figure: Any, path: Path) -> bool:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
