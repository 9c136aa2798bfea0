"""The suite's arithmetic (pure): CPU readings, percentiles and the steady part of a run.

A run's rate is measured between Braze requests, as the emulator recorded them: from the first
request to the last full one (`full` recipients). Requests after that carry the partial batches
that `max_wait` flushes once the backlog is gone; counting them would charge the run for waiting.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise


@dataclass(frozen=True, slots=True)
class Recorded:
    """One request as the emulator saw it."""

    time_s: float  # epoch seconds when the emulator received it (decided its answer)
    recipients: int
    accepted: bool  # answered 2xx
    sent_ms: tuple[int, ...] = ()  # the recipients' `sent_ms` property (their Kafka timestamps)


@dataclass(frozen=True, slots=True)
class Steady:
    """The backlog part of a run: from the first accepted request to the last full one."""

    first_s: float
    last_s: float
    requests: int  # accepted requests in the part, both ends included
    recipients: int  # their recipients
    recipients_after_first: int  # delivered after `first_s`: the numerator of the rate

    @property
    def duration_s(self) -> float:
        return self.last_s - self.first_s

    @property
    def recipients_per_s(self) -> float:
        return self.recipients_after_first / self.duration_s if self.duration_s > 0 else math.nan

    @property
    def recipients_per_request(self) -> float:
        return self.recipients / self.requests


def steady_part(records: Iterable[Recorded], full: int = 50) -> Steady | None:
    """From the first accepted request to the last full one (to the last one when none after
    the first is full); None when fewer than two requests were accepted."""
    accepted = sorted((r for r in records if r.accepted), key=lambda r: r.time_s)
    last_full = max((i for i, r in enumerate(accepted) if r.recipients >= full), default=0)
    return span(accepted[: last_full + 1] if last_full > 0 else accepted)


def span(records: Iterable[Recorded]) -> Steady | None:
    """From the first accepted request to the last; None when fewer than two were accepted."""
    part = sorted((r for r in records if r.accepted), key=lambda r: r.time_s)
    if len(part) < 2:
        return None
    return Steady(
        first_s=part[0].time_s,
        last_s=part[-1].time_s,
        requests=len(part),
        recipients=sum(r.recipients for r in part),
        recipients_after_first=sum(r.recipients for r in part[1:]),
    )


def sent_ms_of(body: object) -> tuple[int, ...]:
    """The `sent_ms` property of each recipient of a recorded request body (Canvas `context` or
    campaign `trigger_properties`); recipients without one are left out."""
    recipients = body.get("recipients") if isinstance(body, dict) else None
    if not isinstance(recipients, list):
        return ()
    found: list[int] = []
    for recipient in recipients:
        if not isinstance(recipient, dict):
            continue
        for field in ("context", "trigger_properties"):
            properties = recipient.get(field)
            value = properties.get("sent_ms") if isinstance(properties, dict) else None
            if isinstance(value, int) and not isinstance(value, bool):
                found.append(value)
                break
    return tuple(found)


def latencies_ms(records: Iterable[Recorded], since_ms: float = 0.0) -> list[float]:
    """Per recipient, from its Kafka timestamp to the emulator receiving it, for events whose
    timestamp is at or after `since_ms` (the warm-up before it is left out)."""
    return [
        r.time_s * 1000.0 - sent
        for r in records
        if r.accepted
        for sent in r.sent_ms
        if sent >= since_ms
    ]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between the closest ranks; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def proc_stat_cpu_s(stat_text: str, ticks_per_s: int) -> float:
    """utime + stime of all the process's threads from a /proc/<pid>/stat line, in seconds."""
    # The command name (field 2) is in parentheses and may hold spaces or ')': split after it.
    fields = stat_text.rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / ticks_per_s


def vm_hwm_kb(status_text: str) -> int | None:
    """Peak RSS in KiB (`VmHWM`) from /proc/<pid>/status; None when absent (a zombie)."""
    for line in status_text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def cpu_at(samples: Sequence[tuple[float, float]], at_s: float) -> float:
    """CPU seconds at `at_s`, linear between (time_s, cpu_s) samples taken in time order."""
    if not samples:
        return math.nan
    if at_s <= samples[0][0]:
        return samples[0][1]
    for (t0, c0), (t1, c1) in pairwise(samples):
        if at_s <= t1:
            return c0 + (c1 - c0) * (at_s - t0) / (t1 - t0) if t1 > t0 else c1
    return samples[-1][1]
