"""DeadLetter.headers: the original headers unchanged, then the dlq.* headers of product.md."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.deadletter import MAX_ERROR_BYTES, DeadLetter, Reason, cut, iso_utc
from consumer.events import KafkaMeta, RawMessage

ORIGINAL: tuple[tuple[str, bytes | None], ...] = (
    ("x-source", b"web"),
    ("trace", b"\x00\xffbinary"),
    ("x-source", b"again"),  # Kafka allows a name twice; both travel
    ("empty", b""),
    ("null", None),
)
RAW = RawMessage(
    KafkaMeta("shop.orders", 4, 1234, key=b"k", timestamp_ms=1_714_558_000_000, headers=ORIGINAL),
    b'{"a": 1}',
)
FIRST = datetime(2024, 5, 1, 10, 0, 0, 123_456, tzinfo=UTC)
LAST = datetime(2024, 5, 1, 12, 30, 0, tzinfo=timezone(timedelta(hours=2)))
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def dlq_headers(headers: list[tuple[str, bytes | None]]) -> dict[str, str]:
    ours = headers[len(ORIGINAL) :]
    assert all(name.startswith("dlq.") for name, _ in ours)
    assert len({name for name, _ in ours}) == len(ours), "a dlq header written twice"
    values = {}
    for name, value in ours:
        assert isinstance(value, bytes)
        values[name] = value.decode("utf-8")
    return values


@pytest.mark.parametrize(
    ("letter", "expected"),
    [
        pytest.param(
            DeadLetter(
                RAW,
                Reason.BRAZE_REJECTED,
                '{"message": "Invalid external_user_id"}',
                rule_id="order-shipped",
                http_status=400,
                attempts=3,
                first_failed_at=FIRST,
                failed_at=LAST,
                rules_version="0123456789ab",
            ),
            {
                "dlq.reason": "braze_rejected",
                "dlq.error": '{"message": "Invalid external_user_id"}',
                "dlq.rule_id": "order-shipped",
                "dlq.rules_version": "0123456789ab",
                "dlq.http_status": "400",
                "dlq.attempts": "3",
                "dlq.source.topic": "shop.orders",
                "dlq.source.partition": "4",
                "dlq.source.offset": "1234",
                "dlq.source.timestamp": "1714558000000",
                "dlq.first_failed_at": "2024-05-01T10:00:00.123Z",
                "dlq.failed_at": "2024-05-01T10:30:00.000Z",
            },
            id="braze rejection, local time converted to UTC",
        ),
        pytest.param(
            DeadLetter(RAW, Reason.INVALID_JSON, "value is not valid JSON", failed_at=FIRST),
            {
                "dlq.reason": "invalid_json",
                "dlq.error": "value is not valid JSON",
                "dlq.rule_id": "-",
                "dlq.rules_version": "",
                "dlq.attempts": "0",
                "dlq.source.topic": "shop.orders",
                "dlq.source.partition": "4",
                "dlq.source.offset": "1234",
                "dlq.source.timestamp": "1714558000000",
                "dlq.first_failed_at": "2024-05-01T10:00:00.123Z",
                "dlq.failed_at": "2024-05-01T10:00:00.123Z",
            },
            id="no http status: header absent; first failure defaults to this one",
        ),
    ],
)
def test_headers(letter: DeadLetter, expected: dict[str, str]) -> None:
    headers = letter.headers()
    assert tuple(headers[: len(ORIGINAL)]) == ORIGINAL
    assert dlq_headers(headers) == expected


def test_product_contract_headers_are_all_present() -> None:
    letter = DeadLetter(RAW, Reason.BRAZE_REJECTED, "400", "r", 400, 6, FIRST, LAST)
    names = set(dlq_headers(letter.headers()))
    contract = {
        "dlq.reason",
        "dlq.error",
        "dlq.rule_id",
        "dlq.http_status",
        "dlq.attempts",
        "dlq.source.topic",
        "dlq.source.partition",
        "dlq.source.offset",
        "dlq.first_failed_at",
        "dlq.failed_at",
    }
    assert contract <= names


@pytest.mark.parametrize(
    ("first_failed_at", "expected_first"),
    [
        pytest.param(None, "2024-05-01T10:00:00.123Z", id="first failure is now"),
        pytest.param(
            datetime(2024, 4, 30, tzinfo=UTC), "2024-04-30T00:00:00.000Z", id="first kept"
        ),
    ],
)
def test_unstamped_letter_takes_now(first_failed_at: datetime | None, expected_first: str) -> None:
    letter = DeadLetter(RAW, Reason.MAPPING_ERROR, "e", first_failed_at=first_failed_at)
    values = dlq_headers(letter.headers(now=FIRST))
    assert values["dlq.failed_at"] == "2024-05-01T10:00:00.123Z"
    assert values["dlq.first_failed_at"] == expected_first


def test_unstamped_letter_without_now_uses_the_clock() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    values = dlq_headers(DeadLetter(RAW, Reason.MAPPING_ERROR, "e").headers())
    for name in ("dlq.failed_at", "dlq.first_failed_at"):
        assert ISO_Z.match(values[name]), values[name]
        moment = datetime.fromisoformat(values[name])
        assert before <= moment <= datetime.now(UTC)


def test_no_source_timestamp() -> None:
    raw = RawMessage(KafkaMeta("t", 0, 1), None)
    headers = DeadLetter(raw, Reason.INVALID_JSON, "tombstone", failed_at=FIRST).headers()
    assert ("dlq.source.timestamp", b"") in headers
    assert all(name.startswith("dlq.") for name, _ in headers)


@pytest.mark.parametrize(
    "error",
    [
        pytest.param("x" * 5_000, id="ascii"),
        pytest.param("é" * 3_000, id="two-byte chars"),
        pytest.param("a" + "€" * 1_000, id="three-byte chars off the boundary"),
        pytest.param("ab" + "😀" * 1_000, id="four-byte chars off the boundary"),
    ],
)
def test_long_error_is_cut_on_a_character_boundary(error: str) -> None:
    letter = DeadLetter(RAW, Reason.BRAZE_REJECTED, error, failed_at=FIRST)
    value = dict(letter.headers())["dlq.error"]
    assert value is not None
    assert MAX_ERROR_BYTES - 4 <= len(value) <= MAX_ERROR_BYTES
    text = value.decode("utf-8")  # raises if cut inside a character
    assert text.endswith("...")
    assert error.startswith(text[:-3])


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        pytest.param("short", 10, "short", id="under the limit"),
        pytest.param("x" * 10, 10, "x" * 10, id="exactly the limit"),
        pytest.param("x" * 11, 10, "xxxxxxx...", id="one over"),
        pytest.param("éééééé", 10, "ééé...", id="two-byte: the straddling char is dropped"),
        pytest.param("", 10, "", id="empty"),
    ],
)
def test_cut(text: str, limit: int, expected: str) -> None:
    assert cut(text, limit) == expected


@given(st.text(), st.integers(min_value=3, max_value=200))
def test_cut_is_a_bounded_prefix(text: str, limit: int) -> None:
    result = cut(text, limit)
    assert len(result.encode("utf-8")) <= limit
    if len(text.encode("utf-8")) <= limit:
        assert result == text
    else:
        assert result.endswith("...")
        assert text.startswith(result[:-3])


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        pytest.param(FIRST, "2024-05-01T10:00:00.123Z", id="utc, microseconds dropped"),
        pytest.param(LAST, "2024-05-01T10:30:00.000Z", id="offset converted"),
        pytest.param(
            datetime(2024, 12, 31, 23, 59, 59, 999_999, tzinfo=timezone(timedelta(hours=-5))),
            "2025-01-01T04:59:59.999Z",
            id="crosses the year",
        ),
    ],
)
def test_iso_utc(moment: datetime, expected: str) -> None:
    assert iso_utc(moment) == expected
    assert ISO_Z.match(expected)
