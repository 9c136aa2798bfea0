"""Stage 5's memory across owners: settled offsets beyond the commit, in the commit's metadata.

The offset tracker (`consumer.offsets`) commits the first unsettled offset of each partition, but
sends behind it may already have settled out of order. Their ranges travel in the offset commit's
metadata string (`kafka_io.KafkaSource.commit`), and the partition's next owner reads them back
(`KafkaSource.committed`, on assign) and skips those offsets instead of sending them to Braze again.
Pure: text in, ranges out; nothing here talks to Kafka.

Format: "bc1:" + unpadded urlsafe base64 of zlib-compressed unsigned LEB128 varints: the committed
offset, then per range `start - previous_end - 1` and `end - start - 1` (the first range's
previous end is the committed offset). The minus ones make every valid value >= 0 and every decoded
range strictly above the commit, non-empty and not adjacent to the one before, by construction.
"""

from __future__ import annotations

import base64
import binascii
import re
import zlib
from bisect import bisect_right

# Sorted, disjoint, non-adjacent half-open [start, end) offset ranges.
SettledRanges = tuple[tuple[int, int], ...]

PREFIX = "bc1:"
# Kafka's offset.metadata.max.bytes defaults to 4096; leave room for a broker configured lower.
DEFAULT_MAX_CHARS = 3000
# Caps both sides: zlib squeezes regular patterns ~1000:1, so without it 3000 characters could
# decode to millions of ranges (or a deliberate zlib bomb to gigabytes).
MAX_RAW_BYTES = 1 << 16
_MAX_OFFSET = (1 << 63) - 1  # Kafka offsets are int64
_BODY = re.compile(r"[A-Za-z0-9_-]*")


def encode(committed: int, ranges: SettledRanges, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """The metadata text for a commit of `committed` with `ranges` settled beyond it.

    "" when there are no ranges. When the text would exceed `max_chars`, whole ranges are dropped
    from the end (their offsets are merely processed again), never shortened or merged.
    Raises ValueError for a negative `committed` or ranges that are unsorted, empty, adjacent,
    overlapping or not strictly above `committed`.
    """
    chunks = _range_chunks(committed, ranges)
    head = _varint(committed)
    size = len(head)
    for count, chunk in enumerate(chunks):  # never more raw bytes than decode accepts
        size += len(chunk)
        if size > MAX_RAW_BYTES:
            chunks = chunks[:count]
            break
    text = _pack(head, chunks)
    return text if len(text) <= max_chars else _longest_fitting(head, chunks, max_chars)


def decode(metadata: str, committed: int) -> SettledRanges:
    """The ranges in `metadata` if it is ours and was written with a commit of `committed`, else ().

    Anything else (foreign or damaged text, oversized values, a commit someone else made without
    our metadata) yields (): the caller then just processes those offsets again. Never raises.
    """
    if not metadata.startswith(PREFIX) or committed < 0:
        return ()
    raw = _unpack(metadata[len(PREFIX) :])
    if raw is None:
        return ()
    values = _varints(raw)
    if values is None or len(values) % 2 == 0 or values[0] != committed:
        return ()
    ranges: list[tuple[int, int]] = []
    end = committed
    for index in range(1, len(values), 2):
        start = end + values[index] + 1
        end = start + values[index + 1] + 1
        if end > _MAX_OFFSET:
            return ()
        ranges.append((start, end))
    return tuple(ranges)


def contains(ranges: SettledRanges, offset: int) -> bool:
    """Whether `offset` lies in one of `ranges`; O(log len(ranges))."""
    index = bisect_right(ranges, offset, key=lambda r: r[0]) - 1
    return index >= 0 and offset < ranges[index][1]


def _range_chunks(committed: int, ranges: SettledRanges) -> list[bytes]:
    """One varint pair per range, after checking the ranges' invariants."""
    if not 0 <= committed <= _MAX_OFFSET:
        raise ValueError(f"committed offset out of range: {committed}")
    chunks: list[bytes] = []
    previous_end = committed
    for start, end in ranges:
        if start <= previous_end or end <= start or end > _MAX_OFFSET:
            raise ValueError(
                f"range [{start}, {end}) not after {previous_end} (committed {committed})"
            )
        chunks.append(_varint(start - previous_end - 1) + _varint(end - start - 1))
        previous_end = end
    return chunks


def _pack(head: bytes, chunks: list[bytes]) -> str:
    if not chunks:
        return ""
    packed = zlib.compress(head + b"".join(chunks), 9)
    return PREFIX + base64.urlsafe_b64encode(packed).rstrip(b"=").decode("ascii")


def _longest_fitting(head: bytes, chunks: list[bytes], max_chars: int) -> str:
    """The text of the longest prefix of `chunks` within `max_chars`, all of them known not to fit.

    The size grows (almost) monotonically with the number of ranges kept, so a binary search finds
    (nearly) the longest; only a text that was measured to fit is ever returned.
    """
    low, high, best = 0, len(chunks), ""  # chunks[:low] fits, chunks[:high] does not
    while high - low > 1:
        middle = (low + high) // 2
        candidate = _pack(head, chunks[:middle])
        if len(candidate) <= max_chars:
            low, best = middle, candidate
        else:
            high = middle
    return best


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _unpack(body: str) -> bytes | None:
    """Base64 then zlib, strictly: any stray character, trailing data or excess size is None."""
    if len(body) > 4 * MAX_RAW_BYTES or not _BODY.fullmatch(body):
        return None
    try:
        packed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        inflater = zlib.decompressobj()
        raw = inflater.decompress(packed, MAX_RAW_BYTES + 1)
    except (binascii.Error, ValueError, zlib.error):
        return None
    if len(raw) > MAX_RAW_BYTES or not inflater.eof or inflater.unused_data:
        return None
    return raw


def _varints(raw: bytes) -> list[int] | None:
    """LEB128 values; None for a truncated one or one beyond int64."""
    values: list[int] = []
    value = shift = 0
    for byte in raw:
        value |= (byte & 0x7F) << shift
        if value > _MAX_OFFSET:
            return None
        if byte & 0x80:
            shift += 7
            if shift > 63:  # overlong: more continuation bytes than an int64 needs
                return None
            continue
        values.append(value)
        value = shift = 0
    return None if shift else values
