"""The suite's table, its targets and bench/results.md (pure: rows in, text out)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

HEADERS = (
    "run",
    "events/s",
    "ratio to (a)",
    "CPU s/1000 events",
    "peak RSS MB",
    "recipients/request",
    "stand-in CPU s (share of a core)",
    "run's own figure",
)
RSS_LIMIT_MB = 120.0
MIN_RECIPIENTS_PER_REQUEST = 48.0
SERVICE_RUNS = ("b", "c", "d", "e")
BACKLOG_RUNS = ("b", "c", "d")


@dataclass(frozen=True, slots=True)
class Row:
    """One run's figures; None where the run does not have (or did not get) one."""

    key: str  # "a" .. "e"
    label: str
    events_per_s: float | None = None
    cpu_s_per_1000: float | None = None
    peak_rss_mb: float | None = None
    recipients_per_request: float | None = None  # over the backlog part
    standin_cpu_s: float | None = None
    standin_core_share: float | None = None
    figure: str = ""  # what only this run measures, in a few words
    detail: str = ""  # how much, how long, and what else was seen
    delivered_share: float | None = None  # (d): recipients/s over the budget's 70 x 50
    p50_ms: float | None = None  # (e)
    p99_ms: float | None = None  # (e)
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    held: bool | None  # None: not measured
    figure: str


def number(value: float | None, digits: int = 0) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:,.{digits}f}"


def table_lines(rows: Sequence[Row]) -> list[str]:
    """A Markdown table, padded so it also reads as plain text."""
    ceiling = next((r.events_per_s for r in rows if r.key == "a"), None)
    cells = [list(HEADERS)] + [_cells(row, ceiling) for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(HEADERS))]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return [line(cells[0]), rule, *(line(values) for values in cells[1:])]


def _cells(row: Row, ceiling: float | None) -> list[str]:
    label = f"({row.key}) {row.label}"
    if row.error is not None:
        return [label, "FAILED", "", "", "", "", "", _one_line(row.error)]
    # (d) and (e) are paced by the budget and the producer: a ratio to (a) says nothing there.
    ratio = 1.0 if row.key == "a" else None
    if row.key in ("b", "c"):
        ratio = _ratio(row.events_per_s, ceiling)
    standin = ""
    if row.standin_cpu_s is not None:
        standin = f"{row.standin_cpu_s:.2f} s ({number(100 * (row.standin_core_share or 0))}%)"
    return [
        label,
        number(row.events_per_s),
        number(ratio, 2),
        number(row.cpu_s_per_1000, 4),
        number(row.peak_rss_mb),
        number(row.recipients_per_request, 1),
        standin,
        row.figure,
    ]


def _ratio(value: float | None, ceiling: float | None) -> float | None:
    if value is None or not ceiling:
        return None
    return value / ceiling


def _one_line(text: str) -> str:
    line = " ".join(text.split()).replace("|", "/")
    return line if len(line) <= 160 else line[:157] + "..."


def targets(rows: Mapping[str, Row], max_wait_ms: float) -> list[Target]:
    """Every target of the issue with held/missed and the figure behind it."""
    ok = {key: row for key, row in rows.items() if row.error is None}
    ceiling = ok["a"].events_per_s if "a" in ok else None
    found = [
        *_speed_targets(ok, ceiling, "b", 0.35, 0.035),
        *_speed_targets(ok, ceiling, "c", 0.65, 0.015),
        _rss_target(ok),
        _batch_target(ok),
    ]
    share = ok["d"].delivered_share if "d" in ok else None
    found.append(
        _check("(d) >= 97% of 70 x 50 recipients/s delivered", share, lambda v: v >= 0.97, "%")
    )
    p99 = ok["e"].p99_ms if "e" in ok else None
    limit = max_wait_ms + 50
    name = f"(e) p99 latency <= max_wait_ms + 50 = {limit:.0f} ms"
    found.append(_check(name, p99, lambda v: v <= limit, "ms"))
    return found


def _speed_targets(
    ok: Mapping[str, Row], ceiling: float | None, key: str, ratio: float, cpu: float
) -> list[Target]:
    row = ok.get(key)
    share = _ratio(row.events_per_s if row else None, ceiling)
    per_1000 = row.cpu_s_per_1000 if row else None
    return [
        _check(f"({key}) >= {ratio} of the ceiling (a)", share, lambda v: v >= ratio, "x"),
        _check(f"({key}) <= {cpu} CPU s per 1,000 events", per_1000, lambda v: v <= cpu, "s"),
    ]


def _rss_target(ok: Mapping[str, Row]) -> Target:
    name = f"peak RSS <= {RSS_LIMIT_MB:.0f} MB (every service run)"
    values = {k: ok[k].peak_rss_mb for k in SERVICE_RUNS if k in ok}
    measured = {k: v for k, v in values.items() if v is not None}
    if not measured:
        return Target(name, None, "not measured")
    figure = ", ".join(f"({k}) {v:.1f} MB" for k, v in measured.items())
    return Target(name, all(v <= RSS_LIMIT_MB for v in measured.values()), figure)


def _batch_target(ok: Mapping[str, Row]) -> Target:
    name = ">= 48 recipients per request with a backlog (b, c, d)"
    values = {k: ok[k].recipients_per_request for k in BACKLOG_RUNS if k in ok}
    measured = {k: v for k, v in values.items() if v is not None}
    if not measured:
        return Target(name, None, "not measured")
    figure = ", ".join(f"({k}) {v:.1f}" for k, v in measured.items())
    return Target(name, all(v >= MIN_RECIPIENTS_PER_REQUEST for v in measured.values()), figure)


def _check(name: str, value: float | None, test: Callable[[float], bool], unit: str) -> Target:
    if value is None or math.isnan(value):
        return Target(name, None, "not measured (run failed or skipped)")
    figure = {
        "%": f"{100 * value:.2f}%",
        "x": f"{value:.2f}",
        "s": f"{value:.4f}",
        "ms": f"{value:.0f} ms",
    }[unit]
    return Target(name, bool(test(value)), figure)


def detail_lines(rows: Sequence[Row]) -> list[str]:
    return [f"- ({row.key}) {row.error or row.detail}" for row in rows]


def target_lines(found: Sequence[Target]) -> list[str]:
    verdicts = {True: "held  ", False: "MISSED", None: "n/a   "}
    return [f"- {verdicts[t.held]} {t.name}: {t.figure}" for t in found]


def results_markdown(
    machine: Sequence[tuple[str, str]],
    settings: Sequence[str],
    table: Sequence[str],
    details: Sequence[str],
    found: Sequence[Target],
    notes: Sequence[str],
) -> str:
    """bench/results.md: the machine, the settings, the table, the targets, how it measured."""
    out = ["# Benchmark results (`make bench`)", "", "Generated by `bench/suite`; do not edit.", ""]
    out += ["## Machine", ""] + [f"- {name}: {value}" for name, value in machine] + [""]
    out += ["## Settings", ""] + [f"- {line}" for line in settings] + [""]
    out += ["## Results", "", *table, "", *details, ""]
    out += ["## Targets", "", *target_lines(found), ""]
    out += ["## How it measures", ""] + [f"- {line}" for line in notes]
    return "\n".join(out) + "\n"
