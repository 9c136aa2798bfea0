"""bench/suite/stats.py: the steady part of a run, latencies, percentiles, /proc CPU readings."""

from __future__ import annotations

import math

import pytest

from bench.suite.stats import (
    Recorded,
    cpu_at,
    latencies_ms,
    percentile,
    proc_stat_cpu_s,
    sent_ms_of,
    span,
    steady_part,
    vm_hwm_kb,
)


def req(time_s: float, recipients: int = 50, accepted: bool = True) -> Recorded:
    return Recorded(time_s, recipients, accepted)


@pytest.mark.parametrize(
    ("records", "first", "last", "after_first", "requests"),
    [
        pytest.param([req(0), req(1), req(2)], 0, 2, 100, 3, id="all full"),
        pytest.param([req(0), req(1), req(2), req(2.5, 7)], 0, 2, 100, 3, id="partial tail cut"),
        pytest.param([req(2), req(0), req(1)], 0, 2, 100, 3, id="sorted by time"),
        pytest.param([req(0), req(1, accepted=False), req(2)], 0, 2, 50, 2, id="429s left out"),
        pytest.param([req(0, 10), req(1, 20)], 0, 1, 20, 2, id="none full: the whole span"),
    ],
)
def test_steady_part(
    records: list[Recorded], first: float, last: float, after_first: int, requests: int
) -> None:
    steady = steady_part(records, full=50)
    assert steady is not None
    assert (steady.first_s, steady.last_s) == (first, last)
    assert steady.recipients_after_first == after_first
    assert steady.requests == requests
    assert steady.recipients_per_s == after_first / (last - first)


def test_steady_part_needs_two_accepted_requests() -> None:
    assert steady_part([req(0), req(1, accepted=False)]) is None
    assert span([]) is None


def test_steady_recipients_per_request_counts_both_ends() -> None:
    steady = span([req(0, 40), req(1, 50), req(2, 48)])
    assert steady is not None
    assert steady.recipients_per_request == pytest.approx(46.0)


def test_latencies_from_kafka_timestamp_to_receipt() -> None:
    records = [
        Recorded(10.0, 2, True, (9_800, 9_900)),
        Recorded(11.0, 1, True, (8_000,)),  # before `since`: warm-up
        Recorded(12.0, 1, False, (11_900,)),  # refused: not received as a send
    ]
    assert latencies_ms(records, since_ms=9_000) == [200.0, 100.0]


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        pytest.param([5.0], 99, 5.0, id="one value"),
        pytest.param([1.0, 2.0, 3.0, 4.0], 50, 2.5, id="median between ranks"),
        pytest.param(list(map(float, range(1, 101))), 99, 99.01, id="p99 of 1..100"),
        pytest.param([3.0, 1.0, 2.0], 100, 3.0, id="max, unsorted input"),
        pytest.param([3.0, 1.0, 2.0], 0, 1.0, id="min"),
    ],
)
def test_percentile(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == pytest.approx(expected)


def test_percentile_of_nothing_is_nan() -> None:
    assert math.isnan(percentile([], 50))


def test_proc_stat_reads_utime_and_stime_after_an_awkward_name() -> None:
    fields = ["S", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "250", "50", "0", "0"]
    line = "4242 (python) x (y)) " + " ".join(fields) + " 20 0 7 0\n"
    assert proc_stat_cpu_s(line, ticks_per_s=100) == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("at_s", "expected"),
    [
        pytest.param(-1.0, 1.0, id="before the first sample"),
        pytest.param(0.5, 1.5, id="between samples"),
        pytest.param(1.0, 2.0, id="on a sample"),
        pytest.param(5.0, 4.0, id="after the last sample"),
    ],
)
def test_cpu_at_interpolates(at_s: float, expected: float) -> None:
    samples = [(0.0, 1.0), (1.0, 2.0), (2.0, 4.0)]
    assert cpu_at(samples, at_s) == pytest.approx(expected)


def test_cpu_at_without_samples_is_nan() -> None:
    assert math.isnan(cpu_at([], 1.0))


def test_sent_ms_of_canvas_and_campaign_bodies() -> None:
    body = {
        "canvas_id": "c",
        "recipients": [
            {"external_user_id": "u-1", "context": {"sent_ms": 1, "x": 2}},
            {"external_user_id": "u-2", "trigger_properties": {"sent_ms": 3}},
            {"external_user_id": "u-3", "context": {"sent_ms": "4"}},  # not a number: left out
            {"external_user_id": "u-4", "context": {"sent_ms": True}},
            {"external_user_id": "u-5"},
            "not a recipient",
        ],
    }
    assert sent_ms_of(body) == (1, 3)


@pytest.mark.parametrize("body", ["cut text", None, {"recipients": "x"}, {}])
def test_sent_ms_of_unreadable_bodies(body: object) -> None:
    assert sent_ms_of(body) == ()


def test_vm_hwm_from_proc_status() -> None:
    status = "Name:\tpython\nVmPeak:\t  900 kB\nVmHWM:\t   81234 kB\nVmRSS:\t 70000 kB\n"
    assert vm_hwm_kb(status) == 81234
    assert vm_hwm_kb("Name:\tzombie\nState:\tZ (zombie)\n") is None
