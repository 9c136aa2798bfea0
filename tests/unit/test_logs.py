"""Logging: the JSON lines, the repeat filter, librdkafka's lines and the level/format choice."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError

from consumer import logs
from consumer.cli import build_parser
from consumer.kafka_io import KafkaSource, RebalanceHandlers
from consumer.logs import (
    JsonFormatter,
    RepeatFilter,
    configure_logging,
    librdkafka_logger,
    said_by_librdkafka,
)
from consumer.settings import LoggingSettings, SettingsError, load_settings

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
FAIL = "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused"


def record(
    msg: str,
    *args: object,
    name: str = "consumer.test",
    level: int = logging.WARNING,
    exc_info: Any = None,
    **extra: object,
) -> logging.LogRecord:
    made = logging.LogRecord(name, level, __file__, 1, msg, args or None, exc_info)
    made.__dict__.update(extra)
    return made


def as_json(line: str) -> dict[str, Any]:
    assert "\n" not in line
    parsed = json.loads(line)
    assert isinstance(parsed, dict)
    return parsed


# -- the JSON format --------------------------------------------------------------------------


def test_a_line_has_time_level_logger_and_message() -> None:
    out = as_json(JsonFormatter().format(record("%d rules over %s", 5, "shop.orders")))
    assert set(out) == {"time", "level", "logger", "message"}
    assert TIME.match(out["time"]), out["time"]
    assert out["level"] == "WARNING"
    assert out["logger"] == "consumer.test"
    assert out["message"] == "5 rules over shop.orders"


def test_the_time_is_utc_with_milliseconds() -> None:
    made = record("x")
    made.created = 1_767_225_600.0456  # 2026-01-01T00:00:00.045Z
    made.msecs = 45.6
    assert as_json(JsonFormatter().format(made))["time"] == "2026-01-01T00:00:00.045Z"


def test_the_event_coordinates_and_rule_are_fields() -> None:
    made = record(
        "dead letter",
        topic="shop.orders",
        partition=3,
        offset=1234,
        rule_id="welcome",
        reason="invalid_json",
        http_status=400,
        cause="braze_5xx",
        other="not written",
    )
    out = as_json(JsonFormatter().format(made))
    assert out["topic"] == "shop.orders"
    assert out["partition"] == 3
    assert out["offset"] == 1234
    assert out["rule_id"] == "welcome"
    assert out["reason"] == "invalid_json"
    assert out["http_status"] == 400
    assert out["cause"] == "braze_5xx"
    assert "other" not in out


def test_absent_or_odd_fields_still_give_strict_json() -> None:
    made = record("x", http_status=None, offset=float("nan"), reason=object())
    out = as_json(JsonFormatter().format(made))
    assert "http_status" not in out
    assert out["offset"] == "nan"
    assert out["reason"].startswith("<object object")


def test_an_exception_stays_on_one_line() -> None:
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        made = record("send failed", exc_info=sys.exc_info())
    line = JsonFormatter().format(made)
    out = as_json(line)
    assert out["message"] == "send failed"
    assert out["exc"].startswith("Traceback (most recent call last):")
    assert "ValueError: bad\nvalue" in out["exc"]


@pytest.mark.parametrize(
    "text", ["Zoë 👋 ünïcode", "lone \udc80 surrogate", "\ud83d half a pair", "nul \x00 and \u2028"]
)
def test_any_text_gives_one_ascii_json_line(text: str) -> None:
    line = JsonFormatter().format(record("%s", text, topic=text))
    assert line.isascii()
    out = as_json(line)
    assert out["message"] == text
    assert out["topic"] == text


def test_a_message_whose_arguments_do_not_fit_is_still_written() -> None:
    out = as_json(JsonFormatter().format(record("%d events", "many", "extra")))
    assert out["message"] == "'%d events' % ('many', 'extra')"


# -- configure_logging ------------------------------------------------------------------------


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """configure_logging on a clean slate; its handler removed and the level restored after."""
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    monkeypatch.setattr(logs, "_current", None)
    yield
    for handler in root.handlers:
        if handler not in before:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.mark.usefixtures("installed")
def test_json_lines_on_the_configured_stream() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    log = logging.getLogger("consumer.pipeline")
    log.debug("not at INFO")
    log.info("dead letter", extra={"topic": "t", "partition": 0, "offset": 7, "rule_id": "r"})
    try:
        raise KeyError("missing")
    except KeyError:
        log.exception("unexpected")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (as_json(line) for line in lines)
    assert first["offset"] == 7
    assert first["rule_id"] == "r"
    assert second["level"] == "ERROR"
    assert "KeyError" in second["exc"]


@pytest.mark.usefixtures("installed")
def test_configuring_again_replaces_the_handler_and_writes_held_counts() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("INFO", "text", stream=first)
    log = logging.getLogger("consumer.kafka_io")
    for n in range(5):
        log.warning("kafka client error: attempt %d", n)
    configure_logging("INFO", "text", stream=first)  # nothing changed: nothing happens
    configure_logging("WARNING", "json", stream=second)
    log.info("below WARNING now")
    log.warning("after")
    text = first.getvalue().splitlines()
    assert len(text) == 2
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING consumer.kafka_io: ", text[0])
    assert text[1].endswith("kafka client error: attempt 4 (repeated 4 times in the last 0 s)")
    assert [as_json(line)["message"] for line in second.getvalue().splitlines()] == ["after"]
    assert logging.getLogger().level == logging.WARNING
    streams = [getattr(h, "stream", None) for h in logging.getLogger().handlers]
    assert streams.count(second) == 1
    assert first not in streams


# -- the repeat filter ------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def repeat_filter(interval_s: float = 60.0) -> tuple[RepeatFilter, FakeClock, list[str]]:
    clock = FakeClock()
    summaries: list[str] = []
    keep = RepeatFilter(interval_s, sink=lambda r: summaries.append(r.getMessage()), clock=clock)
    return keep, clock, summaries


def test_the_first_passes_and_repeats_are_counted_once_per_interval() -> None:
    keep, clock, summaries = repeat_filter()
    assert keep.filter(record("%s failed after %dms", FAIL, 3))
    passed = 0
    for n in range(100):
        clock.now += 0.5  # 50 s
        passed += keep.filter(record("%s failed after %dms", FAIL, n))
    assert passed == 0
    assert summaries == []
    clock.now += 10.0  # the minute is over: the next one passes, after the count
    assert keep.filter(record("%s failed after %dms", FAIL, 1))
    assert summaries == [f"{FAIL} failed after 99ms (repeated 100 times in the last 60 s)"]
    assert not keep.filter(record("%s failed after %dms", FAIL, 2))


def test_the_count_comes_at_the_next_line_of_any_kind() -> None:
    keep, clock, summaries = repeat_filter()
    keep.filter(record("broker down"))
    keep.filter(record("broker down"))
    clock.now += 61
    assert keep.filter(record("something else"))
    assert summaries == ["broker down (repeated 1 time in the last 60 s)"]


def test_a_kind_seen_once_leaves_no_count() -> None:
    keep, clock, summaries = repeat_filter()
    keep.filter(record("once"))
    clock.now += 120
    keep.filter(record("later"))
    keep.flush()
    assert summaries == []


def test_kinds_are_logger_level_and_text_without_numbers() -> None:
    keep, _clock, _summaries = repeat_filter()
    assert keep.filter(record("retry 1 of 3"))
    assert not keep.filter(record("retry 2 of 3"))
    assert keep.filter(record("retry 1 of 3", name="other.logger"))
    assert keep.filter(record("retry 1 of 3", level=logging.ERROR))
    assert keep.filter(record("retry one of three"))


def test_lines_about_one_event_and_info_lines_are_never_held() -> None:
    keep, _clock, _summaries = repeat_filter()
    for offset in range(5):
        assert keep.filter(record("dead letter", level=logging.ERROR, topic="t", offset=offset))
        assert keep.filter(record("progress: consumed %d", offset, level=logging.INFO))
        assert keep.filter(record("detail", level=logging.DEBUG, name="librdkafka"))


def test_librdkafka_info_lines_are_held() -> None:
    keep, _clock, _summaries = repeat_filter()
    disconnected = "FAIL [rdkafka#consumer-1] b:9092/1: Disconnected (after %dms in state UP)"
    assert keep.filter(record(disconnected, 5, name="librdkafka", level=logging.INFO))
    assert not keep.filter(record(disconnected, 6, name="librdkafka", level=logging.INFO))


def test_flush_writes_what_is_held_with_the_time_so_far() -> None:
    keep, clock, summaries = repeat_filter()
    for _ in range(4):
        keep.filter(record("poll failed", level=logging.ERROR))
        clock.now += 2
    keep.flush()
    keep.flush()
    assert summaries == ["poll failed (repeated 3 times in the last 8 s)"]


def test_the_count_keeps_the_logger_and_level_and_passes_its_own_filter() -> None:
    clock = FakeClock()
    out: list[logging.LogRecord] = []
    keep = RepeatFilter(60, sink=out.append, clock=clock)
    keep.filter(record("x %d", 1, name="librdkafka", level=logging.ERROR))
    keep.filter(record("x %d", 2, name="librdkafka", level=logging.ERROR))
    keep.flush()
    [summary] = out
    assert (summary.name, summary.levelno) == ("librdkafka", logging.ERROR)
    assert summary.getMessage() == "x 2 (repeated 1 time in the last 0 s)"
    assert abs(summary.created - time.time()) < 5
    assert keep.filter(summary)


def test_a_flood_of_one_line_per_50_ms_is_two_lines_a_minute() -> None:
    keep, clock, summaries = repeat_filter()
    passed = 0
    for n in range(10 * 60 * 20):  # ten minutes
        passed += keep.filter(record("%s (after %dms in state CONNECT)", FAIL, n % 7))
        clock.now += 0.05
    assert passed == 10
    assert len(summaries) == 9


# -- librdkafka's lines and error_cb ----------------------------------------------------------


def test_librdkafka_lines_are_remembered_for_error_cb() -> None:
    buf = f"[thrd:127.0.0.1:1/bootstrap]: {FAIL} (after 0ms in state CONNECT)"
    librdkafka_logger().log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#consumer-9", buf)
    assert said_by_librdkafka(f"{FAIL} (after 0ms in state CONNECT)")
    assert not said_by_librdkafka("1/1 brokers are down")
    assert not said_by_librdkafka("")


def test_a_real_client_logs_through_python_and_error_cb_does_not_repeat_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No broker: librdkafka's FAIL lines arrive as `librdkafka` records; error_cb says the
    same failure only at DEBUG, and what librdkafka did not log (all brokers down) as WARNING."""
    caplog.set_level(logging.DEBUG)
    noop = RebalanceHandlers(lambda _: None, lambda _: None, lambda _: None)
    source = KafkaSource(
        {"bootstrap.servers": "127.0.0.1:1", "group.id": "g", "reconnect.backoff.ms": 100},
        noop,
    )
    try:
        source.subscribe(["t"])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
            r.name == "librdkafka" for r in caplog.records
        ):
            source.consume(10, 0.2)
        source.consume(10, 0.5)
    finally:
        source.close()
    fails = [r for r in caplog.records if r.name == "librdkafka" and "FAIL" in r.getMessage()]
    assert fails
    assert all(r.levelno == logging.ERROR for r in fails)
    errors = [r for r in caplog.records if r.name == "consumer.kafka_io"]
    said = [r for r in errors if "Connect to" in r.getMessage()]
    assert said
    assert all(r.levelno == logging.DEBUG for r in said)
    assert [r.levelno for r in errors if "brokers are down" in r.getMessage()][:1] == [
        logging.WARNING
    ]


def test_error_cb_levels(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="consumer.kafka_io")
    noop = RebalanceHandlers(lambda _: None, lambda _: None, lambda _: None)
    source = KafkaSource({"bootstrap.servers": "127.0.0.1:1", "group.id": "g"}, noop)
    try:
        source._on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "test: 7/7 brokers are down"))
        source._on_error(KafkaError(KafkaError._FATAL, "test: fenced", fatal=True))
    finally:
        source.close()
    # (close() may serve the client's own connection errors too: only ours are looked at)
    levels = [(r.levelno, r.getMessage()) for r in caplog.records if "test: " in r.getMessage()]
    assert levels == [
        (logging.WARNING, "kafka client error: test: 7/7 brokers are down"),
        (logging.ERROR, "kafka client error: test: fenced"),
    ]


# -- flags over environment over file ---------------------------------------------------------


def settings_file(tmp_path: Path, text: str = "logging:\n  level: ERROR\n  format: json\n") -> Path:
    path = tmp_path / "consumer.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_file_alone(tmp_path: Path) -> None:
    found = load_settings(settings_file(tmp_path), {}).logging
    assert logs.resolve(found, None, None) == ("ERROR", "json")


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    env = {"BRAZE_CONSUMER_LOGGING__LEVEL": "debug", "BRAZE_CONSUMER_LOGGING__FORMAT": "Text"}
    found = load_settings(settings_file(tmp_path), env).logging
    assert logs.resolve(found, None, None) == ("DEBUG", "text")


def test_flags_win_over_the_environment(tmp_path: Path) -> None:
    env = {"BRAZE_CONSUMER_LOGGING__LEVEL": "DEBUG", "BRAZE_CONSUMER_LOGGING__FORMAT": "text"}
    found = load_settings(settings_file(tmp_path), env).logging
    assert logs.resolve(found, "WARNING", "json") == ("WARNING", "json")
    assert logs.resolve(found, None, "json") == ("DEBUG", "json")


def test_the_defaults(tmp_path: Path) -> None:
    found = load_settings(settings_file(tmp_path, "{}\n"), {}).logging
    assert found == LoggingSettings()
    assert logs.resolve(found, None, None) == ("INFO", "text")


def test_peek_reads_file_and_environment_and_falls_back_to_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRAZE_CONSUMER_LOGGING__LEVEL", "WARNING")
    assert logs.peek(settings_file(tmp_path)) == LoggingSettings(level="WARNING", format="json")
    assert logs.peek(tmp_path / "missing.yaml") == LoggingSettings()
    bad = settings_file(tmp_path, "logging:\n  format: json\nkafka:\n  nope: 1\n")
    assert logs.peek(bad) == LoggingSettings()


def test_a_wrong_value_names_its_source(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(settings_file(tmp_path, "logging:\n  format: xml\n"), {})
    assert caught.value.problems == [
        f"{tmp_path / 'consumer.yaml'}:2: logging.format: Input should be 'text' or 'json'"
    ]
    with pytest.raises(SettingsError) as caught:
        load_settings(settings_file(tmp_path), {"BRAZE_CONSUMER_LOGGING__LEVEL": "TRACE"})
    assert caught.value.problems[0].startswith("BRAZE_CONSUMER_LOGGING__LEVEL: logging.level: ")


def test_the_run_command_takes_the_flags_in_any_case() -> None:
    args = build_parser().parse_args(["run", "--log-level", "debug", "--log-format", "JSON"])
    assert (args.log_level, args.log_format) == ("DEBUG", "json")
    args = build_parser().parse_args(["run"])
    assert (args.log_level, args.log_format) == (None, None)


def test_kinds_beyond_the_limit_pass_uncounted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "MAX_KINDS", 3)
    keep, _clock, _summaries = repeat_filter()
    for word in ("a", "b", "c"):
        assert keep.filter(record(word))
        assert not keep.filter(record(word))
    assert keep.filter(record("d"))
    assert keep.filter(record("d"))
