"""The suite's five runs, each on its own topic (6 partitions), each service run against a
fresh emulator process:

(a) the ceiling: a plain consumer reading and decoding the backlog;
(b) and (c) `braze-consumer run` over a backlog, every event / one in ten matching a rule;
(d) the service at the budget: 70 requests/s, Braze answering in 150 ms;
(e) a steady 200 events/s: latency from each event's Kafka timestamp to the emulator.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import uuid
from typing import Any

from bench.suite import kafka_ops
from bench.suite.harness import IDLE_S, UNLIMITED_PER_HOUR, Bench, Measured, Setup
from bench.suite.procs import Child, Exit, Sampler, wait_until_quiet
from bench.suite.report import Row
from bench.suite.stats import cpu_at, latencies_ms, percentile, span, steady_part
from bench.suite.workload import Mix, expected_matches, match_share

BUDGET_PER_S = 70
BUDGET_LATENCY_MS = 150
FULL_BATCH = 50
WARM_UP_EVENTS = 20


def ceiling(bench: Bench, label: str, count: int) -> Row:
    """(a): events/s from the end of the first batch read to the end of the last, once with the
    service's consumer settings exactly and once tuned (kafka_ops says why); the row is the
    tuned one, the exact one is in its figure."""
    topic = _backlog_topic(bench, "a", count, Mix.ALL)
    exact_per_s, _, _ = _ceiling_pass(bench, topic, count, tuned=False)
    tuned_per_s, done, peak_mb = _ceiling_pass(bench, topic, count, tuned=True)
    if kafka_ops.service_sets_fetch_backoff():  # fixed in the service: the passes are alike
        figure = f"2nd pass: {exact_per_s:,.0f}/s"
        detail = f"{count:,} events, read twice: {tuned_per_s:,.0f}/s and {exact_per_s:,.0f}/s"
    else:
        backoff = kafka_ops.TUNED_FETCH_QUEUE_BACKOFF_MS
        figure = f"service's settings: {exact_per_s:,.0f}/s"
        detail = (
            f"{count:,} events; {tuned_per_s:,.0f}/s with fetch.queue.backoff.ms {backoff} (the "
            f"table's ceiling), {exact_per_s:,.0f}/s with the service's consumer settings "
            "exactly (librdkafka's 1,000 ms backoff once the 16 MiB prefetch queue is full)"
        )
    return Row(
        "a",
        label,
        events_per_s=tuned_per_s,
        cpu_s_per_1000=done.cpu_s / count * 1000,
        peak_rss_mb=peak_mb,
        figure=figure,
        detail=detail,
    )


def _ceiling_pass(
    bench: Bench, topic: str, count: int, *, tuned: bool
) -> tuple[float, Exit, float | None]:
    args = [sys.executable, "-m", "bench.suite.kafka_ops", "--bootstrap", bench.bootstrap]
    args += ["--topic", topic, "--events", str(count)] + (["--tuned"] if tuned else [])
    log = bench.workdir / f"a-{'tuned' if tuned else 'exact'}.log"
    child = Child(args, cpu=bench.service_cpu, log_path=log, env=dict(os.environ))
    try:
        with Sampler({"ceiling": child.pid}) as sampler:
            done = child.wait(120 + count / 1000)
    finally:
        child.stop()  # nothing to do once it exited; stops it when the bench is interrupted
    if done.code != 0:
        raise RuntimeError(f"exit {done.code}: {child.log_tail()}")
    lines = log.read_text().splitlines()
    result = json.loads(next(line for line in reversed(lines) if line.startswith("{")))
    per_s = result["counted"] / (result["last_s"] - result["first_s"])
    return per_s, done, sampler.peak_rss_mb("ceiling")


def backlog(bench: Bench, key: str, label: str, count: int, mix: Mix) -> Row:
    """(b) and (c): the whole backlog, Braze answering at once, the budget out of the way."""
    topic = _backlog_topic(bench, key, count, mix)
    with Setup(bench, key, topic, {bench.budget_key: UNLIMITED_PER_HOUR}) as setup:
        got = setup.run_service(timeout_s=120 + count / 200)
    _check_consumed(got, count)
    per_1000 = got.exit.cpu_s / count * 1000
    steady = steady_part(got.records, FULL_BATCH)
    if steady is None or not got.complete:  # fall back on the process's wall time
        wall_s = got.exit.ended_s - got.exit.started_s - IDLE_S
        return Row(
            key,
            label,
            events_per_s=count / wall_s,
            cpu_s_per_1000=per_1000,
            peak_rss_mb=got.peak_rss_mb,
            figure="events/s from wall time",
            detail="events/s from start-up to exit: the emulator's record was incomplete",
        )
    share = match_share(mix)
    steady_events = steady.recipients_after_first / share
    start_cpu = cpu_at(got.service_samples, steady.first_s)  # start-up and group join
    steady_per_1000 = got.service_cpu_s(steady) / steady_events * 1000
    return Row(
        key,
        label,
        events_per_s=steady.recipients_per_s / share,
        cpu_s_per_1000=per_1000,
        peak_rss_mb=got.peak_rss_mb,
        recipients_per_request=steady.recipients_per_request,
        standin_cpu_s=got.standin_cpu_s(steady),
        standin_core_share=got.standin_cpu_s(steady) / steady.duration_s,
        figure=f"steady part: {steady_per_1000:.4f} CPU s/1000",
        detail=(
            f"{count:,} events, {expected_matches(count, mix):,} recipients in "
            f"{len(got.records):,} requests; steady part {steady.duration_s:.1f} s at "
            f"{steady_per_1000:.4f} CPU s per 1,000 events; start-up and group join "
            f"{start_cpu:.2f} CPU s; whole process {got.exit.cpu_s:.2f} CPU s"
            f"{_losses(got, expected_matches(count, mix))}"
        ),
    )


def budget(bench: Bench, label: str, seconds: float) -> Row:
    """(d): recipients delivered per second against 70 requests/s x 50 recipients."""
    count = round(BUDGET_PER_S * FULL_BATCH * seconds)
    topic = _backlog_topic(bench, "d", count, Mix.ALL)
    braze: dict[str, Any] = {
        bench.budget_key: BUDGET_PER_S * 3600,
        "max_in_flight": bench.in_flight,
    }
    limits = {"per_second": BUDGET_PER_S, "latency_ms": BUDGET_LATENCY_MS}
    with Setup(bench, "d", topic, braze, **limits) as setup:
        got = setup.run_service(timeout_s=120 + seconds * 3)
    _check_consumed(got, count)
    steady = steady_part(got.records, FULL_BATCH)
    if steady is None:
        raise RuntimeError("fewer than two accepted requests")
    ceiling_per_s = BUDGET_PER_S * FULL_BATCH
    share = steady.recipients_per_s / ceiling_per_s
    refused = sum(1 for r in got.records if not r.accepted)
    return Row(
        "d",
        label,
        events_per_s=steady.recipients_per_s,
        cpu_s_per_1000=got.service_cpu_s(steady) / steady.recipients_after_first * 1000,
        peak_rss_mb=got.peak_rss_mb,
        recipients_per_request=steady.recipients_per_request,
        standin_cpu_s=got.standin_cpu_s(steady),
        standin_core_share=got.standin_cpu_s(steady) / steady.duration_s,
        delivered_share=share,
        figure=f"{share:.1%} of {ceiling_per_s:,} recipients/s",
        detail=(
            f"{steady.recipients_per_s:,.0f} recipients/s = {share:.1%} of {ceiling_per_s:,}/s "
            f"over {steady.duration_s:.1f} s ({count:,} events, {len(got.records):,} requests, "
            f"{refused} refused); CPU per 1,000 over the steady part{_losses(got, count)}"
        ),
    )


def latency(bench: Bench, label: str, rate_per_s: float, seconds: float, max_wait_ms: float) -> Row:
    """(e): a steady producer; each event's Kafka timestamp to the emulator receiving it."""
    topic = f"suite-e-{uuid.uuid4().hex[:8]}"
    kafka_ops.create_topic(bench.bootstrap, topic)
    with (
        Setup(bench, "e", topic, {bench.budget_key: UNLIMITED_PER_HOUR}) as setup,
        kafka_ops.DeliveryProbe(bench.bootstrap, topic) as probe,
    ):
        child = setup.start_service(exit_when_idle=False)
        with Sampler({"service": child.pid, "emulator": setup.emulator.child.pid}) as sampler:
            # Warm-up: the service has joined its group and sent once before the clock starts.
            kafka_ops.produce_paced(bench.bootstrap, topic, 100, WARM_UP_EVENTS / 100)
            setup.wait_for_recipients(WARM_UP_EVENTS, 90.0)
            since_ms = math.floor(time.time() * 1000)  # CreateTime is whole milliseconds
            sent = kafka_ops.produce_paced(
                bench.bootstrap, topic, rate_per_s, seconds, WARM_UP_EVENTS
            )
            setup.wait_for_recipients(WARM_UP_EVENTS + sent, max_wait_ms / 1000 + 15)
            done = child.stop()
        got = setup.measured(done, sampler)
    kafka_alone = [got_ms - ts for ts, got_ms in probe.arrivals if ts >= since_ms]
    values = latencies_ms(got.records, since_ms)
    p50, p99 = percentile(values, 50), percentile(values, 99)
    timed = span(r for r in got.records if any(s >= since_ms for s in r.sent_ms))
    if timed is None:
        raise RuntimeError("fewer than two requests carried timed events")
    return Row(
        "e",
        label,
        events_per_s=sent / seconds,
        cpu_s_per_1000=got.service_cpu_s(timed) / sent * 1000,
        peak_rss_mb=got.peak_rss_mb,
        recipients_per_request=timed.recipients_per_request,
        standin_cpu_s=got.standin_cpu_s(timed),
        standin_core_share=got.standin_cpu_s(timed) / timed.duration_s,
        p50_ms=p50,
        p99_ms=p99,
        figure=f"latency p50 {p50:.0f} ms, p99 {p99:.0f} ms",
        detail=(
            f"latency p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {max(values, default=0):.0f} ms "
            f"over {len(values):,} of {sent:,} events (max_wait_ms {max_wait_ms:.0f}); Kafka "
            f"alone (a plain consumer of the topic): p50 {percentile(kafka_alone, 50):.0f} ms, "
            f"p99 {percentile(kafka_alone, 99):.0f} ms; CPU per 1,000 over the timed part"
        ),
    )


def _backlog_topic(bench: Bench, key: str, count: int, mix: Mix) -> str:
    topic = f"suite-{key}-{uuid.uuid4().hex[:8]}"
    kafka_ops.create_topic(bench.bootstrap, topic)
    kafka_ops.produce_backlog(bench.bootstrap, topic, count, mix)
    wait_until_quiet()
    return topic


def _check_consumed(got: Measured, count: int) -> None:
    consumed = got.summary.get("consumed")
    if consumed is not None and consumed < count:
        raise RuntimeError(f"the service stopped after {consumed:,} of {count:,} events")


def _losses(got: Measured, expected: int) -> str:
    """What would make the figures wrong: recipients missing, events dead-lettered."""
    delivered = sum(r.recipients for r in got.records if r.accepted)
    dead = got.summary.get("dead_lettered", 0)
    found = []
    if delivered != expected:
        found.append(f"{delivered:,} of {expected:,} recipients delivered")
    if dead:
        found.append(f"{dead:,} events dead-lettered")
    return f"; CHECK: {', '.join(found)}" if found else ""
