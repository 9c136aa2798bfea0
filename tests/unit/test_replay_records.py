"""dlq replay, pure parts: a dead-letter record back to the original message, filters, progress."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from consumer.deadletter import DeadLetter, Reason
from consumer.events import KafkaMeta, RawMessage
from consumer.replay import (
    KNOWN_REASONS,
    LEGACY_REASONS,
    DeadLetterRecord,
    Progress,
    ReplayFilter,
    parse_record,
)

ORIGINAL = RawMessage(
    KafkaMeta(
        "shop.orders",
        7,
        123_456,
        key=b"order-9",
        timestamp_ms=1_714_558_000_000,
        headers=(("x-source", b"web"), ("trace", b"\x00\xff"), ("null", None)),
    ),
    b'{"type": "order.shipped"}',
)
FAILED_AT = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def dead_letter_record(
    letter: DeadLetter, dlq_offset: int = 55, extra: tuple[tuple[str, bytes | None], ...] = ()
) -> RawMessage:
    """The message the dead-letter producer writes for `letter`, as read back from the topic."""
    headers = tuple(letter.headers()) + extra
    meta = KafkaMeta("braze-consumer.dlq", 2, dlq_offset, key=letter.raw.meta.key, headers=headers)
    return RawMessage(meta, letter.raw.value)


def letter(raw: RawMessage = ORIGINAL) -> DeadLetter:
    return DeadLetter(
        raw,
        Reason.BRAZE_REJECTED,
        "Invalid external_user_id",
        rule_id="order-shipped",
        http_status=400,
        attempts=2,
        failed_at=FAILED_AT,
    )


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(ORIGINAL, id="key, headers with a null value, timestamp"),
        pytest.param(RawMessage(KafkaMeta("t", 0, 0), b"{}"), id="bare: no key, headers, time"),
        pytest.param(RawMessage(KafkaMeta("t", 1, 9, key=b"k"), None), id="tombstone"),
        pytest.param(
            RawMessage(KafkaMeta("t.with.dots", 0, 2**40, headers=(("h", b""),)), b"x"),
            id="large offset, empty header",
        ),
        pytest.param(
            RawMessage(
                KafkaMeta(
                    "t",
                    0,
                    3,
                    headers=(
                        ("dlq.reason", b"forged"),
                        ("orig.dlq.reason", b"forged too"),
                        ("orig.x", b"y"),
                        ("dlq.rule_id", None),
                    ),
                ),
                b"{}",
            ),
            id="the source's own dlq.* and orig.* headers",
        ),
    ],
)
def test_round_trip_gives_back_the_original_message(raw: RawMessage) -> None:
    record = parse_record(dead_letter_record(letter(raw)))
    assert record is not None
    assert record.original == raw


def test_record_fields() -> None:
    record = parse_record(dead_letter_record(letter(), dlq_offset=77))
    assert record == DeadLetterRecord(
        position=(("braze-consumer.dlq", 2), 77),
        reason="braze_rejected",
        rule_id="order-shipped",
        error="Invalid external_user_id",
        failed_at="2024-05-01T10:00:00.000Z",
        original=ORIGINAL,
    )


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param((), id="no headers"),
        pytest.param((("x-source", b"web"),), id="only foreign headers"),
        pytest.param((("dlq.reason", b"invalid_json"),), id="dlq.reason but no source"),
        pytest.param(
            (("dlq.source.topic", b"t"), ("dlq.source.partition", b"0")), id="no source offset"
        ),
        pytest.param(
            (
                ("dlq.source.topic", b"t"),
                ("dlq.source.partition", b"zero"),
                ("dlq.source.offset", b"1"),
                ("dlq.source.timestamp", b""),
            ),
            id="partition not a number",
        ),
        pytest.param(
            (
                ("dlq.source.topic", b"t"),
                ("dlq.source.partition", b"0"),
                ("dlq.source.offset", None),
                ("dlq.source.timestamp", b""),
            ),
            id="null offset",
        ),
    ],
)
def test_record_without_dlq_source_headers_is_none(
    headers: tuple[tuple[str, bytes | None], ...],
) -> None:
    raw = RawMessage(KafkaMeta("braze-consumer.dlq", 0, 1, headers=headers), b"{}")
    assert parse_record(raw) is None


def test_record_with_only_the_documented_headers_parses() -> None:
    """product.md lists the dlq.* headers; `dlq.source.timestamp` is an addition of ours."""
    headers = tuple(
        (name, value) for name, value in letter().headers() if name != "dlq.source.timestamp"
    )
    record = parse_record(RawMessage(KafkaMeta("dlq", 0, 1, key=b"order-9", headers=headers), b""))
    assert record is not None
    assert record.original.meta == replace(ORIGINAL.meta, timestamp_ms=None)


# -- filters ----------------------------------------------------------------------------------


def parsed(raw: RawMessage = ORIGINAL) -> DeadLetterRecord:
    record = parse_record(dead_letter_record(letter(raw)))
    assert record is not None
    return record


ORDERS = parsed()
SIGNUP = replace(
    parsed(RawMessage(replace(ORIGINAL.meta, topic="shop.signups"), b"{}")),
    reason="mapping_error",
    rule_id="signup-welcome",
)
T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("wanted", "record", "accepted"),
    [
        pytest.param(ReplayFilter(), ORDERS, True, id="no filter takes all"),
        pytest.param(
            ReplayFilter(reasons=frozenset({"braze_rejected"})), ORDERS, True, id="reason"
        ),
        pytest.param(
            ReplayFilter(reasons=frozenset({"braze_rejected"})), SIGNUP, False, id="other reason"
        ),
        pytest.param(
            ReplayFilter(reasons=frozenset({"braze_rejected", "mapping_error"})),
            SIGNUP,
            True,
            id="any of several reasons",
        ),
        pytest.param(ReplayFilter(rules=frozenset({"order-shipped"})), ORDERS, True, id="rule"),
        pytest.param(ReplayFilter(rules=frozenset({"order-shipped"})), SIGNUP, False, id="rule no"),
        pytest.param(
            ReplayFilter(source_topics=frozenset({"shop.signups"})), SIGNUP, True, id="topic"
        ),
        pytest.param(
            ReplayFilter(source_topics=frozenset({"shop.signups"})), ORDERS, False, id="topic no"
        ),
        pytest.param(
            ReplayFilter(reasons=frozenset({"braze_rejected"}), rules=frozenset({"x"})),
            ORDERS,
            False,
            id="all filters must hold",
        ),
        pytest.param(ReplayFilter(failed_after=T0), ORDERS, True, id="after: bound included"),
        pytest.param(
            ReplayFilter(failed_after=T0 + timedelta(milliseconds=1)), ORDERS, False, id="after no"
        ),
        pytest.param(ReplayFilter(failed_before=T0), ORDERS, False, id="before: bound excluded"),
        pytest.param(
            ReplayFilter(failed_before=T0 + timedelta(milliseconds=1)), ORDERS, True, id="before"
        ),
        pytest.param(
            ReplayFilter(
                failed_after=datetime(2024, 5, 1, 11, 0, tzinfo=timezone(timedelta(hours=2)))
            ),
            ORDERS,
            True,
            id="after 11:00+02:00 is 09:00Z",
        ),
        pytest.param(
            ReplayFilter(failed_after=T0 - timedelta(days=1), failed_before=T0 + timedelta(days=1)),
            ORDERS,
            True,
            id="inside a window",
        ),
        pytest.param(
            ReplayFilter(failed_after=T0 - timedelta(days=1)),
            replace(ORDERS, failed_at=""),
            False,
            id="time filter, no failed_at",
        ),
        pytest.param(
            ReplayFilter(), replace(ORDERS, failed_at="garbage"), True, id="no time filter"
        ),
        pytest.param(
            ReplayFilter(failed_after=T0 - timedelta(hours=1)),
            replace(ORDERS, failed_at="2024-05-01T10:00:00"),
            True,
            id="failed_at without offset read as UTC",
        ),
        pytest.param(
            ReplayFilter(failed_before=T0),
            replace(ORDERS, failed_at="2024-05-01T12:00:00+02:00"),
            False,
            id="failed_at with an offset",
        ),
    ],
)
def test_filter(wanted: ReplayFilter, record: DeadLetterRecord, accepted: bool) -> None:
    assert wanted.accepts(record) is accepted


def test_known_reasons_are_todays_and_those_old_dead_letters_carry() -> None:
    assert (*Reason, "retries_exhausted") == KNOWN_REASONS
    assert LEGACY_REASONS == ("retries_exhausted",)


def test_a_legacy_reason_selects_old_dead_letters() -> None:
    old = replace(ORDERS, reason="retries_exhausted")
    assert ReplayFilter(reasons=frozenset({"retries_exhausted"})).accepts(old)
    assert not ReplayFilter(reasons=frozenset({"retries_exhausted"})).accepts(ORDERS)


# -- progress ---------------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("total", "updates", "expected"),
    [
        pytest.param(
            10,
            range(11),
            "".join(f"replay {n * 10}% ({n}/10)\n" for n in range(11)),
            id="a line every tenth",
        ),
        pytest.param(
            1000,
            [0, 5, 99, 100, 101, 250, 999, 1000],
            "replay 0% (0/1000)\nreplay 10% (100/1000)\nreplay 25% (250/1000)\n"
            "replay 100% (999/1000)\nreplay 100% (1000/1000)\n",
            id="no line until the next tenth",
        ),
        pytest.param(0, [0, 3], "replay 100% (0/0)\n", id="nothing to read is done"),
        pytest.param(4, [8], "replay 100% (8/4)\n", id="more than the total stays at 100%"),
    ],
)
def test_progress_lines_when_not_a_terminal(total: int, updates: list[int], expected: str) -> None:
    stream = io.StringIO()
    progress = Progress(stream, total)
    for done in updates:
        progress.update(done)
    progress.close()
    assert stream.getvalue() == expected


def test_progress_bar_on_a_terminal() -> None:
    stream = Terminal()
    progress = Progress(stream, 10)
    progress.update(5)
    progress.update(10)
    progress.close()
    assert stream.getvalue() == (
        f"\rreplay [{'#' * 15}{' ' * 15}]  50% 5/10\rreplay [{'#' * 30}] 100% 10/10\n"
    )


def test_a_source_dlq_header_cannot_pass_for_ours() -> None:
    forged = RawMessage(
        KafkaMeta("t", 0, 3, headers=(("dlq.reason", b"forged"), ("dlq.source.offset", b"0"))),
        b"{}",
    )
    headers = letter(forged).headers()
    first: dict[str, bytes | None] = {}
    for name, value in headers:
        first.setdefault(name, value)
    assert first["dlq.reason"] == b"braze_rejected"
    assert first["dlq.source.offset"] == b"3"
    assert [n for n, _ in headers if n.startswith("orig.")] == [
        "orig.dlq.reason",
        "orig.dlq.source.offset",
    ]
    assert sum(n == "dlq.reason" for n, _ in headers) == 1
