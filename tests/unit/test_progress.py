"""progress: the settled-ranges codec carried in offset commit metadata."""

from __future__ import annotations

import base64
import random
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.progress import (
    DEFAULT_MAX_CHARS,
    MAX_RAW_BYTES,
    PREFIX,
    SettledRanges,
    contains,
    decode,
    encode,
)

MAX_OFFSET = (1 << 63) - 1


def varints(*values: int) -> bytes:
    out = bytearray()
    for value in values:
        left = value
        while left > 0x7F:
            out.append((left & 0x7F) | 0x80)
            left >>= 7
        out.append(left)
    return bytes(out)


def ours(raw: bytes) -> str:
    """`raw` dressed as our metadata: zlib, then unpadded urlsafe base64 behind the prefix."""
    return PREFIX + base64.urlsafe_b64encode(zlib.compress(raw)).rstrip(b"=").decode()


def scattered(count: int, seed: int = 7, start: int = 1_000_000) -> SettledRanges:
    """`count` ranges of 1-20 offsets with 1-200 unsettled offsets between them."""
    rng = random.Random(seed)
    ranges: list[tuple[int, int]] = []
    end = start
    for _ in range(count):
        begin = end + rng.randint(1, 200)
        end = begin + rng.randint(1, 20)
        ranges.append((begin, end))
    return tuple(ranges)


@st.composite
def committed_and_ranges(draw: st.DrawFn) -> tuple[int, SettledRanges]:
    committed = draw(st.integers(0, 1 << 40))
    ranges: list[tuple[int, int]] = []
    end = committed
    for gap, length in draw(st.lists(st.tuples(st.integers(1, 10**6), st.integers(1, 10**6)))):
        start = end + gap
        end = start + length
        ranges.append((start, end))
    return committed, tuple(ranges)


@pytest.mark.parametrize(
    ("committed", "ranges"),
    [
        pytest.param(0, ((1, 2),), id="one offset right after the commit"),
        pytest.param(10, ((12, 15), (17, 18), (40, 1000)), id="several ranges"),
        pytest.param(MAX_OFFSET - 3, ((MAX_OFFSET - 2, MAX_OFFSET),), id="int64 limit"),
        pytest.param(5, scattered(200, start=5), id="two hundred ranges"),
    ],
)
def test_round_trip(committed: int, ranges: SettledRanges) -> None:
    text = encode(committed, ranges)
    assert text.startswith(PREFIX)
    assert decode(text, committed) == ranges


@given(committed_and_ranges())
def test_round_trip_property(case: tuple[int, SettledRanges]) -> None:
    committed, ranges = case
    text = encode(committed, ranges)
    assert len(text) <= DEFAULT_MAX_CHARS
    decoded = decode(text, committed)
    # Truncation only ever drops ranges from the end.
    assert decoded == ranges[: len(decoded)]
    if len(text) < 200:
        assert decoded == ranges


def test_no_ranges_is_empty_metadata() -> None:
    assert encode(42, ()) == ""
    assert decode("", 42) == ()


@pytest.mark.parametrize("max_chars", [60, 300, 1000, DEFAULT_MAX_CHARS])
def test_truncation_keeps_a_prefix_of_whole_ranges(max_chars: int) -> None:
    ranges = scattered(5000)
    text = encode(999_999, ranges, max_chars=max_chars)
    decoded = decode(text, 999_999)
    assert len(text) <= max_chars
    assert 0 < len(decoded) < len(ranges)
    assert decoded == ranges[: len(decoded)]
    # Nearly the longest prefix that fits: one more range of random gaps would not.
    assert len(encode(999_999, ranges[: len(decoded) + 2], max_chars=10**6)) > max_chars


def test_too_small_a_limit_gives_empty_metadata() -> None:
    assert encode(0, ((1, 2),), max_chars=len(PREFIX) + 2) == ""


def test_highly_regular_ranges_stop_at_the_raw_size_cap() -> None:
    """Every other offset settled compresses ~1000:1; the decoder must not build millions."""
    ranges = tuple((2 * i + 1, 2 * i + 2) for i in range(200_000))
    text = encode(0, ranges)
    decoded = decode(text, 0)
    assert len(text) <= DEFAULT_MAX_CHARS
    assert 0 < len(decoded) <= MAX_RAW_BYTES // 2
    assert decoded == ranges[: len(decoded)]


@pytest.mark.parametrize(
    ("committed", "ranges"),
    [
        pytest.param(5, ((5, 6),), id="range at the committed offset"),
        pytest.param(5, ((3, 4),), id="range below the committed offset"),
        pytest.param(0, ((3, 3),), id="empty range"),
        pytest.param(0, ((4, 3),), id="reversed range"),
        pytest.param(0, ((1, 3), (3, 5)), id="adjacent ranges"),
        pytest.param(0, ((1, 4), (3, 5)), id="overlapping ranges"),
        pytest.param(0, ((6, 8), (1, 3)), id="unsorted ranges"),
        pytest.param(-1, ((1, 3),), id="negative committed offset"),
        pytest.param(0, ((1, MAX_OFFSET + 1),), id="beyond int64"),
    ],
)
def test_encode_rejects_bad_ranges(committed: int, ranges: SettledRanges) -> None:
    with pytest.raises(ValueError, match="range"):
        encode(committed, ranges)


def _bomb() -> str:
    return ours(bytes(MAX_RAW_BYTES * 4))


@pytest.mark.parametrize(
    ("metadata", "committed"),
    [
        pytest.param("", 0, id="empty"),
        pytest.param("checkpoint 17", 0, id="foreign text"),
        pytest.param("bc2:" + ours(varints(0, 0, 0))[len(PREFIX) :], 0, id="other version"),
        pytest.param(PREFIX + "!!!!", 0, id="not base64"),
        pytest.param(PREFIX + "eJzz", 0, id="base64 of truncated zlib"),
        pytest.param(PREFIX + "AAAA", 0, id="base64 of non-zlib bytes"),
        pytest.param(PREFIX + "é", 0, id="non-ascii"),
        pytest.param(ours(varints(7, 0, 0)), 8, id="written for another committed offset"),
        pytest.param(ours(varints(7, 0, 0)), -1001, id="no committed offset"),
        pytest.param(ours(varints(0, 0)), 0, id="half a range"),
        pytest.param(ours(varints(0) + b"\x80"), 0, id="truncated varint"),
        pytest.param(ours(varints(0) + b"\x80" * 12 + b"\x00"), 0, id="overlong varint"),
        pytest.param(ours(varints(0, 1 << 63, 0)), 0, id="value beyond int64"),
        pytest.param(ours(varints(0, MAX_OFFSET - 1, 5)), 0, id="range end beyond int64"),
        pytest.param(ours(varints(0, 0, 0)) + "AA", 0, id="data after the zlib stream"),
        pytest.param(PREFIX + "A" * 100_000, 0, id="huge text"),
        pytest.param(_bomb(), 0, id="zlib bomb"),
    ],
)
def test_decode_ignores_what_is_not_ours(metadata: str, committed: int) -> None:
    assert decode(metadata, committed) == ()


@given(st.text(), st.integers(-10, 10))
def test_decode_never_raises_on_text(metadata: str, committed: int) -> None:
    assert decode(metadata, committed) == () or metadata.startswith(PREFIX)


@given(st.binary(max_size=200), st.integers(0, 3))
def test_decode_never_raises_on_our_prefix(raw: bytes, committed: int) -> None:
    for metadata in (ours(raw), PREFIX + base64.urlsafe_b64encode(raw).decode()):
        ranges = decode(metadata, committed)
        previous_end = committed
        for start, end in ranges:  # whatever decodes is well-formed
            assert previous_end < start < end <= MAX_OFFSET
            previous_end = end


@pytest.mark.parametrize(
    ("offset", "expected"),
    [(0, False), (1, True), (2, True), (3, False), (9, False), (10, True), (19, True), (20, False)],
)
def test_contains(offset: int, expected: bool) -> None:
    assert contains(((1, 3), (10, 20)), offset) is expected


def test_contains_nothing_in_no_ranges() -> None:
    assert not contains((), 0)


def test_size_of_a_thousand_scattered_ranges() -> None:
    """What the metadata of a commit with 1,000 out-of-order settled ranges costs."""
    ranges = scattered(1000)
    text = encode(999_999, ranges)
    assert decode(text, 999_999) == ranges  # fits whole, within the default limit
    assert len(text) <= DEFAULT_MAX_CHARS
