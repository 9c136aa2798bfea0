"""`braze-consumer dlq replay`: re-process dead-lettered events through the same pipeline.

A dead-letter record carries the original key, value and headers plus `dlq.*` headers; replay
rebuilds the original message from them and sends it again for the one rule that failed (the
event's other rules succeeded the first time, so re-running them would message users twice).
Events that fail again are dead-lettered again, past the end this run reads to.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from consumer.app import Loaded, build_parts, configure_logging, install_signal_handlers, load_all
from consumer.deadletter import unescape_header
from consumer.events import KafkaMeta, RawMessage
from consumer.kafka_io import KafkaFatalError, TopicReader
from consumer.pipeline import HaltError, Pipeline
from consumer.reasons import Reason
from consumer.settings import Settings, SettingsError, kafka_consumer_config, load_settings

# Reasons older versions wrote: their dead letters are still on the topic, and replayable.
LEGACY_REASONS = ("retries_exhausted",)
KNOWN_REASONS = (*(reason.value for reason in Reason), *LEGACY_REASONS)
TIME_EXAMPLE = "2026-01-01T00:00:00Z"


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """A dead-letter message taken apart: where it sits, why it failed, the original message."""

    position: tuple[tuple[str, int], int]  # ((dlq topic, partition), offset)
    reason: str
    rule_id: str
    error: str
    failed_at: str
    original: RawMessage


def parse_record(raw: RawMessage) -> DeadLetterRecord | None:
    """None when the message lacks the `dlq.source.*` headers (not written by this service)."""
    ours = {
        n: (v or b"").decode("utf-8", "replace") for n, v in raw.meta.headers if n[:4] == "dlq."
    }
    try:
        source = KafkaMeta(
            topic=ours["dlq.source.topic"],
            partition=int(ours["dlq.source.partition"]),
            offset=int(ours["dlq.source.offset"]),
            key=raw.meta.key,
            # Not among product.md's headers: a record without it is still replayable.
            timestamp_ms=int(ours.get("dlq.source.timestamp") or 0) or None,
            headers=tuple((unescape_header(n), v) for n, v in raw.meta.headers if n[:4] != "dlq."),
        )
    except (KeyError, ValueError):
        return None
    return DeadLetterRecord(
        position=((raw.meta.topic, raw.meta.partition), raw.meta.offset),
        reason=ours.get("dlq.reason", ""),
        rule_id=ours.get("dlq.rule_id", "-"),
        error=ours.get("dlq.error", ""),
        failed_at=ours.get("dlq.failed_at", ""),
        original=RawMessage(source, raw.value),
    )


@dataclass(frozen=True)
class ReplayFilter:
    reasons: frozenset[str] = frozenset()
    rules: frozenset[str] = frozenset()
    source_topics: frozenset[str] = frozenset()
    failed_after: datetime | None = None
    failed_before: datetime | None = None

    def accepts(self, record: DeadLetterRecord) -> bool:
        if self.reasons and record.reason not in self.reasons:
            return False
        if self.rules and record.rule_id not in self.rules:
            return False
        if self.source_topics and record.original.meta.topic not in self.source_topics:
            return False
        return self._in_window(record.failed_at)

    def _in_window(self, failed_at: str) -> bool:
        if self.failed_after is None and self.failed_before is None:
            return True
        try:
            moment = datetime.fromisoformat(failed_at)
        except ValueError:
            return False
        if moment.tzinfo is None:  # dlq.failed_at is UTC; comparing naive to aware would raise
            moment = moment.replace(tzinfo=UTC)
        after_ok = self.failed_after is None or moment >= self.failed_after
        return after_ok and (self.failed_before is None or moment < self.failed_before)


def register(subparsers: Any) -> None:
    dlq = subparsers.add_parser("dlq", help="dead-letter topic tools")
    commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="COMMAND")
    parser = commands.add_parser("replay", help="re-process dead-lettered events")
    parser.add_argument("--config", type=Path, default=Path("config/consumer.yaml"))
    parser.add_argument(
        "--reason",
        action="append",
        default=[],
        type=_known_reason,
        help=f"only this dlq.reason ({', '.join(KNOWN_REASONS)})",
    )
    parser.add_argument("--rule", action="append", default=[], help="only this dlq.rule_id")
    parser.add_argument("--source-topic", action="append", default=[])
    parser.add_argument(
        "--failed-after", type=_aware, metavar="TIME", help=f"ISO 8601, e.g. {TIME_EXAMPLE}"
    )
    parser.add_argument(
        "--failed-before", type=_aware, metavar="TIME", help=f"ISO 8601, e.g. {TIME_EXAMPLE}"
    )
    parser.add_argument("--from-offset", type=int, default=0, help="first dead-letter offset")
    parser.add_argument("--limit", type=int, help="replay at most this many records")
    parser.add_argument(
        "--dry-run", action="store_true", help="list what would be replayed (needs no API key)"
    )
    parser.add_argument("--log-level", default="WARNING")
    parser.set_defaults(handler=_replay)


def _aware(text: str) -> datetime:
    """An ISO 8601 time with a UTC offset; argparse prints the error as the option's."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time; give one with a UTC offset, e.g. {TIME_EXAMPLE}"
        ) from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} has no UTC offset; add one, e.g. {TIME_EXAMPLE}"
        )
    return moment


def _known_reason(text: str) -> str:
    """A dlq.reason this service writes or once wrote: a typo would silently select nothing."""
    if text in KNOWN_REASONS:
        return text
    close = difflib.get_close_matches(text, KNOWN_REASONS, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise argparse.ArgumentTypeError(
        f"unknown reason {text!r} ({hint}known: {', '.join(Reason)};"
        f" from older versions: {', '.join(LEGACY_REASONS)})"
    )


def _replay(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    # A dry run only reads the dead-letter topic: it needs the settings, not the rules or the key.
    loaded = _settings_only(args.config) if args.dry_run else load_all(args.config)
    if isinstance(loaded, int):
        return loaded
    wanted = ReplayFilter(
        frozenset(args.reason),
        frozenset(args.rule),
        frozenset(args.source_topic),
        args.failed_after,
        args.failed_before,
    )
    try:
        return _replayer(loaded, wanted, args.limit).run(args.from_offset)
    except (HaltError, KafkaFatalError) as exc:
        print(f"replay stopped: {exc}", file=sys.stderr)
        return 1


def _settings_only(config: Path) -> Settings | int:
    """The settings, or exit code 2 after printing every problem (as `load_all` does)."""
    try:
        return load_settings(config)
    except SettingsError as exc:
        print("invalid settings:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2


def _replayer(loaded: Loaded | Settings, wanted: ReplayFilter, limit: int | None) -> Replay:
    """A dry run from the settings alone; a real replay from everything `load_all` loaded."""
    if isinstance(loaded, Settings):
        return Replay(loaded, None, wanted, limit)
    return Replay(loaded.settings, loaded, wanted, limit)


class Replay:
    """Reads the dead-letter topic once; `loaded` None is a dry run (lists, sends nothing)."""

    def __init__(
        self, settings: Settings, loaded: Loaded | None, wanted: ReplayFilter, limit: int | None
    ) -> None:
        self._settings = settings
        self._loaded = loaded
        self._wanted = wanted
        self._limit = limit
        self._stop = False
        self.seen = self.selected = self.foreign = 0

    def run(self, from_offset: int) -> int:
        settings = self._settings
        config = kafka_consumer_config(settings)
        config["group.id"] = f"{settings.kafka.group_id}.dlq-replay"  # never committed
        reader = TopicReader(config, settings.kafka.dead_letter_topic, from_offset)
        total = sum(max(0, end - reader.starts[tp]) for tp, end in reader.ends.items())
        progress = Progress(sys.stderr, total)
        parts = None if self._loaded is None else build_parts(self._loaded)
        install_signal_handlers(self._request_stop)
        try:
            self._read(reader, parts.pipeline if parts else None, progress)
            if parts is not None:
                self._finish(parts.pipeline, settings.shutdown.drain_timeout_s)
        finally:
            progress.close()
            reader.close()
            if parts is not None:
                parts.close()
        self._print_summary(parts.pipeline if parts else None)
        return 0

    def _request_stop(self) -> None:
        self._stop = True

    def _read(self, reader: TopicReader, pipeline: Pipeline | None, progress: Progress) -> None:
        if pipeline is not None:
            pipeline.assign(list(reader.ends))
        while not (reader.done or self._stop or self._limit_reached()):
            for raw in reader.read(200, 0.2):
                self.seen += 1
                self._one(raw, pipeline)
                if self._limit_reached():
                    break
            if pipeline is not None:
                pipeline.tick()
            progress.update(self.seen)

    def _one(self, raw: RawMessage, pipeline: Pipeline | None) -> None:
        record = parse_record(raw)
        if record is None:
            self.foreign += 1
            return
        if not self._wanted.accepts(record):
            return
        self.selected += 1
        if pipeline is None:
            print(json.dumps(_describe(record)), flush=True)
            return
        only = None if record.rule_id == "-" else record.rule_id
        pipeline.handle(record.original, record.position, only)

    def _limit_reached(self) -> bool:
        return self._limit is not None and self.selected >= self._limit

    def _finish(self, pipeline: Pipeline, timeout_s: float) -> None:
        pipeline.flush()
        pipeline.settle(timeout_s)

    def _print_summary(self, pipeline: Pipeline | None) -> None:
        line = f"dead letters read {self.seen}, selected {self.selected}"
        if self.foreign:
            line += f", without dlq headers {self.foreign}"
        if pipeline is not None:
            stats = pipeline.stats
            line += (
                f"; recipients sent {stats.recipients_sent}, skipped {stats.skipped}, "
                f"dead-lettered again {sum(pipeline.dead_lettered.values())}, "
                f"unsettled {pipeline.unsettled()}"
            )
        print(line, file=sys.stderr)


def _describe(record: DeadLetterRecord) -> dict[str, object]:
    (topic, partition), offset = record.position
    meta = record.original.meta
    return {
        "dlq": f"{topic}[{partition}]@{offset}",
        "source": f"{meta.topic}[{meta.partition}]@{meta.offset}",
        "reason": record.reason,
        "rule_id": record.rule_id,
        "failed_at": record.failed_at,
        "error": record.error,
    }


class Progress:
    """A one-line progress bar on a terminal; a line every 10% otherwise."""

    def __init__(self, stream: TextIO, total: int) -> None:
        self._stream = stream
        self._total = total
        self._tty = stream.isatty()
        self._last_tenth = -1

    def update(self, done: int) -> None:
        share = 1.0 if self._total == 0 else min(1.0, done / self._total)
        if self._tty:
            bar = "#" * int(share * 30)
            self._stream.write(f"\rreplay [{bar:<30}] {share:4.0%} {done}/{self._total}")
        elif int(share * 10) > self._last_tenth:
            self._last_tenth = int(share * 10)
            self._stream.write(f"replay {share:.0%} ({done}/{self._total})\n")
        self._stream.flush()

    def close(self) -> None:
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()
