"""Wiring: settings -> rules, metrics, Braze client, dead-letter producer, pipeline, consumer loop.

Also the `braze-consumer run` command.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from consumer import logs
from consumer.batching import Batcher
from consumer.braze.client import BrazeClient
from consumer.budget_share import BudgetSplit
from consumer.clock import Clock, SystemClock
from consumer.kafka_io import (
    DeadLetterProducer,
    KafkaConfigError,
    KafkaFatalError,
    KafkaSource,
    RebalanceHandlers,
)
from consumer.metrics import Metrics, MetricsServer
from consumer.offsets import OffsetTracker
from consumer.pipeline import HaltError, Pipeline, PipelineSettings, Ticket
from consumer.reload import RulesWatcher, VersionedRules, load_versioned
from consumer.rules import RulesError, RulesTable
from consumer.service import ConsumerService, LoopSettings
from consumer.settings import (
    Settings,
    SettingsError,
    kafka_consumer_config,
    kafka_producer_config,
    load_api_key,
    load_settings,
)

if TYPE_CHECKING:
    from consumer.schemas.decoder import WireDecoder

log = logging.getLogger("consumer")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("run", help="run the service")
    parser.add_argument("--config", type=Path, default=Path("config/consumer.yaml"))
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="wins over logging.level (default INFO)",
    )
    parser.add_argument(
        "--log-format",
        type=str.lower,
        choices=["text", "json"],
        help="wins over logging.format (default text); json: one object per line",
    )
    parser.add_argument(
        "--exit-when-idle",
        type=float,
        metavar="SECONDS",
        help="stop once all assigned partitions are caught up and settled for SECONDS",
    )
    parser.add_argument("--summary-json", type=Path, help="write counts to this file on exit")
    parser.set_defaults(handler=_run)


def configure_logging(level: str, fmt: str = "text") -> None:
    """Lines on stderr as `text` or `json` (consumer/logs.py); may be called again."""
    logs.configure_logging(level, fmt)


@dataclass(frozen=True)
class Loaded:
    settings: Settings
    rules: RulesTable
    api_key: str
    rules_version: str = ""


def load_all(config: Path) -> Loaded | int:
    """Settings, rules and key, or exit code 2 after printing every problem."""
    try:
        settings = load_settings(config)
        versioned = load_versioned(settings.rules, settings.rules_max_bytes)
        rules = versioned.table
        api_key = load_api_key(settings).get_secret_value()
    except SettingsError as exc:
        _print_problems("invalid settings", exc.problems)
        return 2
    except RulesError as exc:
        _print_problems("invalid rules", [str(p) for p in exc.problems])
        return 2
    except OSError as exc:  # e.g. a rules folder that cannot be listed
        _print_problems("invalid rules", [f"{exc.filename or '-'}: cannot read: {exc.strerror}"])
        return 2
    log.info(
        "rules version %s: %d rules over topics %s",
        versioned.version,
        len(rules.rule_ids),
        ", ".join(sorted(rules.topics)),
    )
    return Loaded(settings, rules, api_key, versioned.version)


def _run(args: argparse.Namespace) -> int:
    # Flags win over BRAZE_CONSUMER_LOGGING__*, which win over the file. The file is peeked at
    # first so load_all's own lines come out in the chosen format; settings problems are printed.
    configure_logging(*logs.resolve(logs.peek(args.config), args.log_level, args.log_format))
    loaded = load_all(args.config)
    if isinstance(loaded, int):
        return loaded
    configure_logging(*logs.resolve(loaded.settings.logging, args.log_level, args.log_format))
    return run_service(loaded, args.exit_when_idle, args.summary_json)


@dataclass
class Parts:
    """What the pipeline runs on; `close()` releases the I/O in a safe order."""

    metrics: Metrics
    client: BrazeClient
    producer: DeadLetterProducer
    pipeline: Pipeline
    clock: Clock
    wire: WireDecoder | None = None

    def close(self, summary_path: Path | None = None) -> None:
        left = self.producer.flush(10.0)
        if left:
            log.error(
                "%d dead letters unacknowledged at exit (their events stay uncommitted)", left
            )
        self.client.close()
        self.pipeline.close()  # its send workers end (the service closes it first; replay not)
        _report(self.pipeline, summary_path)


def build_parts(loaded: Loaded, clock: Clock | None = None) -> Parts:
    settings = loaded.settings
    clock = clock or SystemClock()
    metrics = Metrics()
    metrics.rules_loaded(loaded.rules_version)
    client = BrazeClient(
        settings.braze.client_config(),
        loaded.api_key,
        observer=metrics,
        key_source=_key_source(settings),
    )
    producer = DeadLetterProducer(kafka_producer_config(settings), settings.kafka.dead_letter_topic)
    wire = wire_decoder(settings)
    pipeline = Pipeline(
        rules=loaded.rules,
        rules_version=loaded.rules_version,
        batcher=Batcher[Ticket](
            settings.batching.max_recipients, round(settings.batching.max_wait_s * 1000)
        ),
        tracker=OffsetTracker(),
        sender=client,
        dead_letters=producer,
        metrics=metrics,
        clock=clock,
        settings=pipeline_settings(settings),
        wire=wire,
    )
    return Parts(metrics, client, producer, pipeline, clock, wire)


def check_rules_against_registry(rules: Path, max_bytes: int, wire: WireDecoder) -> None:
    """`rules check --schema-registry` at start: each problem is a warning (the rules are valid;
    a schema may lag behind or run ahead of them), never a reason not to start."""
    from consumer.rules import schema_check  # noqa: PLC0415  # only with a registry
    from consumer.schemas.registry import RegistryUnavailableError  # noqa: PLC0415

    def latest(subject: str) -> schema_check.SubjectSchema | None:
        return schema_check.subject_shape(wire.registry, subject)

    try:
        problems = schema_check.check_rules_against_schemas([rules], latest, max_bytes=max_bytes)
    except (RegistryUnavailableError, schema_check.SchemaCheckError) as exc:
        log.warning("rules not checked against the schema registry: %s", exc)
        return
    for problem in problems:
        log.warning("rules against the schema registry: %s", problem)
    log.info("rules checked against the schema registry: %d problem(s)", len(problems))


def wire_decoder(settings: Settings) -> WireDecoder | None:
    """The Schema Registry decoder when `kafka.schema_registry.url` is set (its client is made
    here; nothing is fetched until a record needs a schema). Raises ValueError on a bad setting
    (an unreadable password file)."""
    registry = settings.kafka.schema_registry
    if registry.url is None:
        return None
    from consumer.schemas.decoder import WireDecoder  # noqa: PLC0415  # only with a registry
    from consumer.schemas.registry import Registry  # noqa: PLC0415

    return WireDecoder(Registry.from_settings(registry))


def _key_source(settings: Settings) -> Callable[[], str] | None:
    """Re-reads the key file after an auth failure (a rotated Secret); None for an env key."""
    if settings.braze.api_key_file is None:
        return None
    return lambda: load_api_key(settings).get_secret_value()


def pipeline_settings(settings: Settings) -> PipelineSettings:
    braze, dead = settings.braze, settings.dead_letter
    return PipelineSettings(
        max_in_flight=braze.max_in_flight,
        max_event_bytes=settings.kafka.max_event_bytes,
        hold=braze.hold_policy(),
        guard=dead.guard_policy(),
        rejected_target_cooldown_s=braze.rejected_target_cooldown_s,
        schema_retry_initial_s=settings.kafka.schema_registry.retry_initial_interval_s,
        schema_retry_max_s=settings.kafka.schema_registry.retry_max_interval_s,
    )


def run_service(
    loaded: Loaded, exit_when_idle_s: float | None = None, summary_path: Path | None = None
) -> int:
    """The service until it stops: 0 after a drain, 1 when it had to stop, 2 when it could not
    start (one line on stderr: librdkafka settings, the metrics port, ...)."""
    settings = loaded.settings
    try:
        parts = build_parts(loaded)
    except ValueError as exc:  # KafkaConfigError is one
        return _cannot_start(str(exc))
    server = MetricsServer(parts.metrics, settings.metrics.host, settings.metrics.port)
    try:
        server.start()
        service = ConsumerService(
            parts.pipeline,
            lambda svc: KafkaSource(
                kafka_consumer_config(settings),
                RebalanceHandlers(svc.on_assign, svc.on_revoke, svc.on_lost),
            ),
            parts.metrics,
            server,
            loop_settings(settings, exit_when_idle_s),
            clock=parts.clock,
            watcher=RulesWatcher(
                settings.rules,
                settings.rules_max_bytes,
                VersionedRules(loaded.rules, loaded.rules_version),
                parts.metrics,
            ),
            budget=BudgetSplit(parts.client, parts.metrics, settings.braze.requests_per_hour),
        )
    except (KafkaConfigError, OSError) as exc:
        server.stop()
        parts.pipeline.close()
        parts.client.close()
        if isinstance(exc, OSError):
            return _cannot_start(f"metrics port {settings.metrics.port}: {exc.strerror or exc}")
        return _cannot_start(str(exc))
    parts.pipeline.on_wait = service.publish_gauges
    if parts.wire is not None:
        check_rules_against_registry(settings.rules, settings.rules_max_bytes, parts.wire)
    install_signal_handlers(service.stop)
    settle_garbage_collector()
    code = 1
    try:
        code = service.run(loaded.rules.topics)
    except (HaltError, KafkaFatalError) as exc:
        log.critical("stopping: %s", exc)
    finally:
        parts.close(summary_path)
        server.stop()
    return code


def loop_settings(settings: Settings, exit_when_idle_s: float | None) -> LoopSettings:
    return LoopSettings(
        max_buffered_events=settings.batching.max_buffered_events,
        max_buffered_bytes=settings.batching.max_buffered_bytes,
        commit_interval_s=settings.kafka.commit_interval_s,
        drain_timeout_s=settings.shutdown.drain_timeout_s,
        revoke_timeout_s=settings.shutdown.revoke_timeout_s,
        exit_when_idle_s=exit_when_idle_s,
    )


# Container allocations between two young-generation collections (CPython's default is 700).
GC_YOUNG_THRESHOLD = 10_000


def settle_garbage_collector() -> None:
    """Once set up: what start-up made (modules, settings models, the rules) is frozen out of
    every later collection, and young collections run every GC_YOUNG_THRESHOLD allocations.

    The hot path makes a score of short-lived containers per event and no reference cycles, so
    at CPython's defaults the collector ran about ten times a second per thousand events/s and
    found nothing to free: 0.44 of 3.8 CPU s of make bench's every-event-matching run (977
    collections, 7 of them full walks over everything alive). Settled: 0.05 s, most of it
    before this call. Garbage in a cycle still goes, a few thousand allocations later.
    """
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def install_signal_handlers(stop: Callable[[], None]) -> None:
    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s: draining", signal.Signals(signum).name)
        stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def _report(pipeline: Pipeline, path: Path | None) -> None:
    stats = dataclasses.asdict(pipeline.stats)
    stats["dead_lettered"] = pipeline.dead_lettered
    stats["requests"] = pipeline.requests
    log.info("summary %s", json.dumps(stats, sort_keys=True))
    if path is not None:
        path.write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _cannot_start(why: str) -> int:
    print(f"cannot start: {why}", file=sys.stderr)
    return 2


def _print_problems(title: str, problems: list[str]) -> None:
    print(f"{title}:", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
