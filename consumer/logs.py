"""Logging: text or JSON lines on stderr, librdkafka's own lines among them, repeats rate-limited.

`configure_logging(level, fmt)` installs one stderr handler on the root logger:
- `text`: `2026-01-01 00:00:00,000 INFO consumer: message` (as before);
- `json`: one JSON object per line: time (UTC, ms, `Z`), level, logger, message, the event's
  coordinates and rule when the call passed them (`extra={"topic": ..., "offset": ...}`), and an
  exception as one `exc` string. The output is ASCII (other characters are `\\u` escapes), so no
  message, not even one with a lone surrogate, can break a line or the stream's encoding.

Warnings, errors and librdkafka's lines go through a `RepeatFilter`: the first line of a kind
(same logger, level and text once numbers are ignored) passes, repeats within `REPEAT_INTERVAL_S`
are counted, then one line says how many there were. (Our INFO lines, such as the minutely
`progress:`, are never held back.) librdkafka logs through `librdkafka_logger()` (confluent-kafka's
`logger` setting) instead of writing `%3|...` lines to stderr itself.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TextIO

from consumer.deadletter import iso_utc
from consumer.settings import LoggingSettings, SettingsError, load_settings

TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The fields a call may pass with `extra=` that the JSON format writes (when not None).
EVENT_FIELDS: Final = ("topic", "partition", "offset", "rule_id", "reason", "http_status", "cause")
REPEAT_INTERVAL_S: Final = 60.0
MAX_KINDS: Final = 10_000  # kinds counted at once; beyond that a new kind passes uncounted
LIBRDKAFKA_LOGGER: Final = "librdkafka"

_NUMBERS = re.compile(r"\d+")
_SUMMARY_MARK = "_repeat_summary"
_Kind = tuple[str, int, str]  # logger, level, message without its numbers


def configure_logging(level: str, fmt: str = "text", stream: TextIO | None = None) -> None:
    """One handler on the root logger, to `stream` (stderr); calling it again replaces it (after
    writing the counts of repeats it held back), or does nothing when nothing changed."""
    global _current  # noqa: PLW0603  # the one installed handler, replaced as a whole
    out = sys.stderr if stream is None else stream
    root = logging.getLogger()
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is too much
    with _lock:
        if _current is not None and (_current.fmt, _current.stream) == (fmt, out):
            return
        old, _current = _current, None
    if old is not None:
        root.removeHandler(old.handler)
        old.repeats.flush()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    repeats = RepeatFilter(REPEAT_INTERVAL_S, sink=handler.handle)
    handler.addFilter(repeats)
    root.addHandler(handler)
    with _lock:
        _current = _Installed(fmt, out, handler, repeats)


def resolve(
    file: LoggingSettings, level_flag: str | None, format_flag: str | None
) -> tuple[str, str]:
    """(level, format): a command-line flag wins over the settings (where the environment
    already won over the file)."""
    return level_flag or file.level, format_flag or file.format


def peek(config: Path) -> LoggingSettings:
    """The logging section of the settings file with its environment overrides, or the defaults
    when the settings do not load (their problems are printed, not logged, later)."""
    try:
        return load_settings(config).logging
    except SettingsError:
        return LoggingSettings()


class JsonFormatter(logging.Formatter):
    """One JSON object per line, ASCII only; never raises for a message that cannot be
    formatted (that would print a traceback over several lines instead)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _iso_utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": _message(record),
        }
        for name in EVENT_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                out[name] = _plain(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=True, allow_nan=False)


@dataclass
class _Window:
    start_s: float
    repeats: int = 0
    last: logging.LogRecord | None = None


class RepeatFilter(logging.Filter):
    """Lets the first record of a kind through and counts its repeats for `interval_s`; once
    the interval is over (noticed at the next record, or at `flush()`) hands `sink` one record
    "<last repeat> (repeated N times in the last S s)". A kind is (logger, level, message with
    every number left out). Only records at `min_level` or above are counted, and those of the
    `noisy` loggers from INFO up; records about one event (passed an `offset`) never are."""

    def __init__(
        self,
        interval_s: float = REPEAT_INTERVAL_S,
        sink: Callable[[logging.LogRecord], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
        min_level: int = logging.WARNING,
        noisy: tuple[str, ...] = (LIBRDKAFKA_LOGGER,),
    ) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.sink = sink
        self.clock = clock
        self.min_level = min_level
        self.noisy = noisy
        self._windows: dict[_Kind, _Window] = {}
        self._lock = threading.Lock()
        self._next_sweep_s = -math.inf

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._counted(record):
            return True
        key = (record.name, record.levelno, _NUMBERS.sub("#", _message(record)))
        with self._lock:
            now = self.clock()
            due = self._sweep(now) if now >= self._next_sweep_s else []
            window = self._windows.get(key)
            if window is not None and now - window.start_s >= self.interval_s:
                due += self._close(key, window, now)
                window = None
            if window is None:
                if len(self._windows) < MAX_KINDS:
                    self._windows[key] = _Window(now)
                passes = True
            else:
                window.repeats += 1
                window.last = record
                passes = False
        self._emit(due)
        return passes

    def _counted(self, record: logging.LogRecord) -> bool:
        if getattr(record, _SUMMARY_MARK, False) or getattr(record, "offset", None) is not None:
            return False
        floor = logging.INFO if record.name in self.noisy else self.min_level
        return record.levelno >= floor

    def flush(self) -> None:
        """Hand over the counts of every window now, expired or not (at exit)."""
        with self._lock:
            now = self.clock()
            due = [s for k, w in list(self._windows.items()) for s in self._close(k, w, now)]
        self._emit(due)

    def _sweep(self, now: float) -> list[logging.LogRecord]:
        self._next_sweep_s = now + min(1.0, self.interval_s)
        expired = [(k, w) for k, w in self._windows.items() if now - w.start_s >= self.interval_s]
        return [s for k, w in expired for s in self._close(k, w, now)]

    def _close(self, key: _Kind, window: _Window, now: float) -> list[logging.LogRecord]:
        del self._windows[key]
        if window.last is None:
            return []
        span = min(now - window.start_s, self.interval_s)
        times = "time" if window.repeats == 1 else "times"
        count = f"repeated {window.repeats} {times}"
        text = f"{_message(window.last)} ({count} in the last {span:.0f} s)"
        summary = logging.makeLogRecord(
            {
                **window.last.__dict__,
                "msg": text,
                "args": None,
                "exc_info": None,
                "exc_text": None,
                "stack_info": None,
                _SUMMARY_MARK: True,
            }
        )
        summary.created = time.time()
        summary.msecs = (summary.created - int(summary.created)) * 1000
        return [summary]

    def _emit(self, records: list[logging.LogRecord]) -> None:
        if self.sink is not None:
            for record in records:
                self.sink(record)


def librdkafka_logger() -> logging.Logger:
    """The logger to pass as confluent-kafka's `logger` setting: librdkafka's lines (served by
    poll/consume) become records of `librdkafka`, e.g. "FAIL [rdkafka#consumer-1] ..."."""
    return _librdkafka


def said_by_librdkafka(text: str) -> bool:
    """Whether one of librdkafka's recent lines ends with `text`: librdkafka logs a broker
    failure and then hands the same text to `error_cb`, which need not say it again."""
    return _recent.said(text)


class _RecentLines(logging.Filter):
    def __init__(self, size: int = 64) -> None:
        super().__init__()
        self._lines: deque[str] = deque(maxlen=size)

    def filter(self, record: logging.LogRecord) -> bool:
        self._lines.append(_message(record))
        return True

    def said(self, text: str) -> bool:
        return bool(text) and any(line.endswith(text) for line in list(self._lines))


@dataclass(frozen=True)
class _Installed:
    fmt: str
    stream: TextIO
    handler: logging.Handler
    repeats: RepeatFilter


_lock = threading.Lock()
_current: _Installed | None = None
_librdkafka = logging.getLogger(LIBRDKAFKA_LOGGER)
_recent = _RecentLines()
_librdkafka.addFilter(_recent)


@atexit.register
def _flush_at_exit() -> None:  # registered after logging's own shutdown hook, so it runs first
    installed = _current
    if installed is not None:
        installed.repeats.flush()


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # a call whose arguments do not fit its format string
        return f"{record.msg!r} % {record.args!r}"


def _plain(value: object) -> object:
    """A JSON value for an `extra=` field: numbers and strings as they are, the rest as text."""
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return str(value)


def _iso_utc(created: float) -> str:
    return iso_utc(datetime.fromtimestamp(created, UTC))
