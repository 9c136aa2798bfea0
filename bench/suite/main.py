"""`make bench`: the service's throughput, cost, memory, budget use and latency in one run.

    python -m bench.suite [--events 100000] [--budget-seconds 20] [--latency-seconds 20]
                          [--runs abcde] [--quick] [--results bench/results.md]
                          [--profile DIR]

Uses KAFKA_BOOTSTRAP_SERVERS when set, else starts (and stops) scripts/kafka-local on --port.
Prints one table and writes it, with the machine's details, to bench/results.md (a --quick run
writes only where --results says). Shared machines are noisy: compare rows within one run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.local_broker import local_broker
from bench.suite import kafka_ops, runs
from bench.suite.harness import UNLIMITED_PER_HOUR, Bench
from bench.suite.machine import machine_facts
from bench.suite.procs import cpu_plan, emulator_module
from bench.suite.report import (
    Row,
    detail_lines,
    results_markdown,
    table_lines,
    target_lines,
    targets,
)
from bench.suite.workload import RULES, USERS, Mix, events
from consumer.settings import BatchingSettings, BrazeSettings

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results.md"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="backlog of (a), (b), (c)")
    parser.add_argument("--budget-seconds", type=float, default=20.0, help="length of (d)")
    parser.add_argument("--latency-seconds", type=float, default=20.0, help="length of (e)")
    parser.add_argument("--latency-rate", type=float, default=200.0, help="events/s of (e)")
    parser.add_argument("--runs", default="abcde", help="which runs, e.g. 'ab'")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (10,000 events)")
    parser.add_argument("--results", type=Path, help=f"default {RESULTS} (not with --quick)")
    parser.add_argument("--port", type=int, default=29196, help="the local broker's port")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="record each service run with py-spy (--gil --format raw) into DIR/<run>.txt",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.events = min(args.events, 10_000)
        args.budget_seconds = min(args.budget_seconds, 5.0)
        args.latency_seconds = min(args.latency_seconds, 5.0)
    if args.results is None and not args.quick:
        args.results = RESULTS
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    defaults = _defaults()
    machine = machine_facts()
    started = time.monotonic()
    compile_bytecode()
    service_cpu, emulator_cpu = cpu_plan()
    with (
        local_broker(args.port, "kafka-bench-suite") as bootstrap,
        tempfile.TemporaryDirectory(prefix="bench-suite-") as tmp,
    ):
        bench = Bench(
            bootstrap,
            Path(tmp),
            service_cpu,
            emulator_cpu,
            defaults.budget_key,
            defaults.in_flight,
            args.profile,
        )
        plan, names = _plan(args, bench, defaults.max_wait_ms), labels(args)
        rows = [_run(key, names[key], plan[key]) for key in args.runs if key in plan]
    machine.append(("load average (1 min) at the end", f"{os.getloadavg()[0]:.1f}"))
    table = table_lines(rows)
    found = targets({row.key: row for row in rows}, defaults.max_wait_ms)
    details = detail_lines(rows)
    print("\n" + "\n".join([*table, "", *details, "", "Targets", *target_lines(found)]))
    print(f"\nwhole suite: {time.monotonic() - started:.0f} s")
    if args.results is not None:
        settings = _settings_lines(args, defaults, service_cpu, emulator_cpu)
        text = results_markdown(machine, settings, table, details, found, NOTES)
        args.results.write_text(text, encoding="utf-8")
        print(f"written to {args.results}")
    return 1 if any(row.error for row in rows) else 0


def compile_bytecode() -> None:
    """Compile the service's and the bench's modules once, as the image's `pip install` does:
    where PYTHONDONTWRITEBYTECODE is set, every start would compile them again, and that start-up
    CPU (0.2 s here) would count against the runs as if a deployment paid it."""
    for package in ("consumer", "bench"):
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", str(REPO / package)],
            check=True,
            env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
        )


def labels(args: argparse.Namespace) -> dict[str, str]:
    return {
        "a": "ceiling: plain consumer + json.loads",
        "b": "service, every event matches",
        "c": "service, 10% of events match",
        "d": f"budget: {runs.BUDGET_PER_S} req/s, Braze {runs.BUDGET_LATENCY_MS} ms",
        "e": f"steady {args.latency_rate:.0f} events/s, Braze 0 ms",
    }


def _plan(
    args: argparse.Namespace, bench: Bench, max_wait_ms: float
) -> dict[str, Callable[[str], Row]]:
    """Each run, given its label."""
    latency_s = args.latency_seconds
    return {
        "a": lambda label: runs.ceiling(bench, label, args.events),
        "b": lambda label: runs.backlog(bench, "b", label, args.events, Mix.ALL),
        "c": lambda label: runs.backlog(bench, "c", label, args.events, Mix.TENTH),
        "d": lambda label: runs.budget(bench, label, args.budget_seconds),
        "e": lambda label: runs.latency(bench, label, args.latency_rate, latency_s, max_wait_ms),
    }


def _run(key: str, label: str, run: Callable[[str], Row]) -> Row:
    """One run; its failure becomes a failed row (with the error) instead of ending the suite."""
    print(f"({key}) {label} ...", flush=True)
    started = time.monotonic()
    try:
        row = run(label)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        row = Row(key, label, error=f"{type(exc).__name__}: {exc}")
    print(f"    {time.monotonic() - started:.0f} s: {row.error or row.detail}", flush=True)
    return row


@dataclass(frozen=True, slots=True)
class Defaults:
    """What the service does by default, read from its settings models (never hard-coded)."""

    budget_key: str  # braze.<key>: the request budget per hour
    in_flight_default: int
    in_flight: int  # for (d): 150 ms x 70/s needs at least 11 in flight; 16 leaves headroom
    max_wait_ms: float


def _defaults() -> Defaults:
    braze = BrazeSettings()
    budget_key = "requests_per_hour"  # the whole deployment's budget (consumer/budget_share.py)
    max_wait_ms = BatchingSettings().max_wait_s * 1000
    return Defaults(budget_key, braze.max_in_flight, max(braze.max_in_flight, 16), max_wait_ms)


def _settings_lines(
    args: argparse.Namespace, defaults: Defaults, service_cpu: int | None, emulator_cpu: int | None
) -> list[str]:
    sizes = [len(value) for _, value in events(2_000, Mix.ALL)]
    canvases = sum(1 for rule in RULES if rule.target == "canvas")
    key = f"braze.{defaults.budget_key}"
    in_flight_same = defaults.in_flight == defaults.in_flight_default
    pinning = (
        f"the measured process on CPU {service_cpu}, the emulator on CPU {emulator_cpu}"
        if service_cpu is not None
        else "none (one CPU)"
    )
    return [
        f"backlogs (a)-(c): {args.events:,} events each, (d): "
        f"{round(runs.BUDGET_PER_S * runs.FULL_BATCH * args.budget_seconds):,} events; "
        f"each run on its own topic of {kafka_ops.PARTITIONS} partitions, produced "
        "before the timed consumer starts",
        f"events: JSON, {sum(sizes) / len(sizes):.0f} bytes on average "
        f"({min(sizes)}-{max(sizes)}), keyed by one of {USERS:,} users",
        f"rules: {len(RULES)} event types with a rule each, {canvases} Canvas and "
        f"{len(RULES) - canvases} campaign rules, 5-6 properties from the event and 2-3 "
        "conditions each; (c) sends one event in ten (the rest: types without a rule, or a "
        "currency no rule accepts)",
        "service: `braze-consumer run` with its defaults except the bootstrap, a fresh group, the "
        "emulator's URL, the rules, metrics port 0 and the budget; `--exit-when-idle 1` for "
        "(b)-(d), SIGTERM once every event arrived for (e)",
        f"{key}: {UNLIMITED_PER_HOUR:,} for (b), (c), (e) (so the budget does not limit "
        f"them), {runs.BUDGET_PER_S * 3600:,} for (d); braze.max_in_flight "
        f"{defaults.in_flight_default} (default)"
        + ("" if in_flight_same else f", {defaults.in_flight} for (d) (it needs >= 16)")
        + f"; batching.max_wait_ms {defaults.max_wait_ms:.0f} (default)",
        f"emulator: its own process (`python -m {' '.join(emulator_module())} --port 0 "
        f"--requests-per-hour {UNLIMITED_PER_HOUR}`), fresh for each run, answering at once; "
        f"(d): --requests-per-second {runs.BUDGET_PER_S} and {runs.BUDGET_LATENCY_MS} ms latency",
        f"(e): {args.latency_rate:.0f} events/s for {args.latency_seconds:.0f} s (Kafka "
        f"CreateTime), after {runs.WARM_UP_EVENTS} warm-up events",
        f"pinning: {pinning}",
        "bytecode: the service's modules compiled before the runs (`compileall`), as the image's "
        "`pip install` compiles them",
    ]


NOTES = (
    "after producing each backlog the suite waits, up to 20 s, until the machine's CPUs are "
    "under 10% busy: for a few seconds after a large produce the broker flushes and collects, "
    "and on a 2-CPU machine that slows whatever is measured next (the same service run cost "
    "0.0183 CPU s per 1,000 events right after (b) and 0.0141 on its own).",
    "(a) reads the backlog twice, as fresh groups, with the service's own librdkafka consumer "
    "settings (consumer.settings.kafka_consumer_config: manual commits, cooperative-sticky, the "
    "16 MiB prefetch bound): once exactly, once with fetch.queue.backoff.ms 10 unless the "
    "service sets it. librdkafka's default backoff (1,000 ms, whenever the prefetch queue is "
    "full) idles a consumer that empties 16 MiB in under a second, so the exact pass says more "
    "about that setting than about Kafka; the table's ceiling is the second pass.",
    "events/s (a): events read after the first batch, over the time from the end of the first "
    "batch to the end of the last.",
    "events/s (b), (c): recipients the emulator received after the first request up to the last "
    "full (50-recipient) one, over that interval by the emulator's receive times, divided by "
    "the share of events that match (1 and 0.1). The partial batches that max_wait flushes "
    "once the backlog is gone are left out.",
    "CPU s/1000 events (a)-(c): user + system CPU of the whole process (all threads, start-up "
    "and group join included) from os.wait4's rusage, per event of the backlog. (d), (e): the "
    "service's CPU over the interval of their steady part (from /proc/<pid>/stat, sampled "
    "every 50 ms), per recipient delivered in it.",
    "peak RSS: the process's own VmHWM (/proc/<pid>/status, sampled every 50 ms). Not "
    "ru_maxrss: Linux carries the spawning process's high-water mark into a child's ru_maxrss "
    "at exec, so it would report the bench's own memory.",
    "recipients/request: accepted recipients over accepted requests, from the first request "
    "to the last full one ((e): all its requests).",
    "stand-in CPU: the emulator's CPU seconds over the same interval (from /proc samples), and "
    "its share of one core over it: well below 100% means Braze's stand-in was not the limit.",
    "(d): recipients delivered per second over the steady part, as a share of 70 x 50 = 3,500/s.",
    "(e): per recipient, the emulator's receive time minus the event's Kafka CreateTime "
    "(carried in the request as the `sent_ms` property); one machine, one clock.",
)
