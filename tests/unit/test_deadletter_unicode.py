"""Dead-letter error texts quoting an event always encode, lone surrogates included."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.deadletter import MAX_ERROR_BYTES, DeadLetter, Reason, cut
from consumer.events import KafkaMeta, RawMessage

RAW = RawMessage(KafkaMeta("orders", 0, 7), b'{"note": "\\ud800"}')


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        pytest.param("a\ud800b", 20, "a\\ud800b", id="high surrogate as its escape"),
        pytest.param("\udfff", 20, "\\udfff", id="low surrogate alone"),
        pytest.param("x" * 6 + "\udc00", 10, "xxxxxx\\...", id="escape cut like any text"),
    ],
)
def test_cut_escapes_lone_surrogates(text: str, limit: int, expected: str) -> None:
    assert cut(text, limit) == expected


def test_a_dead_letter_quoting_a_lone_surrogate_has_encodable_headers() -> None:
    error = "properties.note: expression `abs(note)` failed: invalid type for value: \ud800"
    headers = dict(DeadLetter(RAW, Reason.MAPPING_ERROR, error, rule_id="r").headers())
    assert headers["dlq.error"] == (
        b"properties.note: expression `abs(note)` failed: invalid type for value: \\ud800"
    )


surrogates = st.integers(0xD800, 0xDFFF).map(chr)


@given(st.text(st.characters() | surrogates), st.integers(min_value=3, max_value=200))
def test_cut_always_gives_bounded_utf8(text: str, limit: int) -> None:
    result = cut(text, limit)
    assert len(result.encode("utf-8")) <= limit  # raises if a surrogate were left in
    assert len(cut(text).encode("utf-8")) <= MAX_ERROR_BYTES
