"""bench/suite/report.py: the table, the targets and results.md of `make bench`."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from bench.suite.report import (
    HEADERS,
    Row,
    Target,
    detail_lines,
    results_markdown,
    table_lines,
    target_lines,
    targets,
)

CEILING = Row("a", "ceiling", events_per_s=100_000.0, cpu_s_per_1000=0.01, peak_rss_mb=40.0)


def good_rows() -> dict[str, Row]:
    service: dict[str, Any] = {"peak_rss_mb": 80.0, "recipients_per_request": 50.0}
    return {
        "a": CEILING,
        "b": Row("b", "all", events_per_s=40_000.0, cpu_s_per_1000=0.03, **service),
        "c": Row("c", "tenth", events_per_s=70_000.0, cpu_s_per_1000=0.01, **service),
        "d": Row("d", "budget", delivered_share=0.98, **service),
        "e": Row("e", "latency", p50_ms=250.0, p99_ms=540.0, peak_rss_mb=70.0),
    }


def verdicts(rows: dict[str, Row]) -> dict[str, bool | None]:
    return {t.name: t.held for t in targets(rows, max_wait_ms=500)}


def test_every_target_holds_on_good_figures() -> None:
    found = targets(good_rows(), max_wait_ms=500)
    assert len(found) == 8
    assert all(t.held for t in found), found


@pytest.mark.parametrize(
    ("key", "change", "missed"),
    [
        pytest.param(
            "b", {"events_per_s": 30_000.0}, "(b) >= 0.35 of the ceiling (a)", id="b slow"
        ),
        pytest.param(
            "b", {"cpu_s_per_1000": 0.04}, "(b) <= 0.035 CPU s per 1,000 events", id="b cpu"
        ),
        pytest.param(
            "c", {"events_per_s": 60_000.0}, "(c) >= 0.65 of the ceiling (a)", id="c slow"
        ),
        pytest.param(
            "c", {"cpu_s_per_1000": 0.02}, "(c) <= 0.015 CPU s per 1,000 events", id="c cpu"
        ),
        pytest.param(
            "e", {"peak_rss_mb": 121.0}, "peak RSS <= 120 MB (every service run)", id="rss"
        ),
        pytest.param(
            "d",
            {"recipients_per_request": 47.9},
            ">= 48 recipients per request with a backlog (b, c, d)",
            id="batches",
        ),
        pytest.param(
            "d", {"delivered_share": 0.969}, "(d) >= 97% of 70 x 50 recipients/s delivered", id="d"
        ),
        pytest.param(
            "e", {"p99_ms": 551.0}, "(e) p99 latency <= max_wait_ms + 50 = 550 ms", id="latency"
        ),
    ],
)
def test_one_figure_off_misses_its_target_only(
    key: str, change: dict[str, Any], missed: str
) -> None:
    rows = good_rows()
    rows[key] = replace(rows[key], **change)
    found = verdicts(rows)
    assert found[missed] is False
    assert [name for name, held in found.items() if not held] == [missed]


def test_a_failed_run_leaves_its_targets_unmeasured() -> None:
    rows = good_rows()
    rows["a"] = Row("a", "ceiling", error="RuntimeError: broker gone")
    rows["e"] = Row("e", "latency", error="TimeoutError")
    found = verdicts(rows)
    assert found["(b) >= 0.35 of the ceiling (a)"] is None
    assert found["(c) >= 0.65 of the ceiling (a)"] is None
    assert found["(e) p99 latency <= max_wait_ms + 50 = 550 ms"] is None
    assert found["(b) <= 0.035 CPU s per 1,000 events"] is True


def test_table_has_the_columns_and_a_line_per_run() -> None:
    rows = list(good_rows().values())
    lines = table_lines(rows)
    assert len(lines) == 2 + len(rows)
    assert all(h in lines[0] for h in HEADERS)
    assert len({len(line) for line in lines}) == 1  # padded: reads as plain text too
    b_line = lines[3]
    assert "40,000" in b_line
    assert "0.40" in b_line  # ratio to (a)
    assert "0.0300" in b_line


def test_a_failed_row_says_failed_with_its_error_on_one_line() -> None:
    rows = [CEILING, Row("b", "all", error="RuntimeError: exit 1\nTraceback | more")]
    line = table_lines(rows)[3]
    assert "FAILED" in line
    assert "RuntimeError: exit 1 Traceback / more" in line
    assert detail_lines(rows)[1].startswith("- (b) RuntimeError")


def test_ratio_is_empty_without_a_ceiling() -> None:
    line = table_lines([Row("b", "all", events_per_s=5.0)])[2]
    assert "| -" in line


def test_target_lines_say_held_missed_or_not_applicable() -> None:
    lines = target_lines([Target("x", True, "1"), Target("y", False, "2"), Target("z", None, "-")])
    assert [line.split()[1] for line in lines] == ["held", "MISSED", "n/a"]


def test_results_markdown_has_machine_settings_table_and_targets() -> None:
    text = results_markdown(
        [("CPU", "AMD EPYC x 2"), ("git commit", "abc123")],
        ["rules: 10"],
        table_lines([CEILING]),
        ["- (a) 10 events"],
        [Target("x", True, "1")],
        ["how"],
    )
    for part in ("## Machine", "- CPU: AMD EPYC x 2", "## Settings", "## Results", "## Targets"):
        assert part in text
    assert text.endswith("- how\n")


def test_only_b_and_c_have_a_ratio_to_the_ceiling() -> None:
    rows = [CEILING, Row("d", "budget", events_per_s=3_000.0), Row("e", "x", events_per_s=200.0)]
    lines = table_lines(rows)
    assert lines[2].split("|")[3].strip() == "1.00"
    assert lines[3].split("|")[3].strip() == "-"
    assert lines[4].split("|")[3].strip() == "-"
