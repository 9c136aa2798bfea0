"""Emulator: the bounded record of requests a test reads back, and running counts for stats.

Bodies are kept as text cut to a bound, and the whole record is bounded in entries and in the
characters it keeps (bodies, paths, error texts), so a benchmark of millions of requests cannot
exhaust memory. The counts behind stats cover every request, also those the record has already
forgotten; they are bounded too (distinct paths past MAX_STATS_PATHS are counted together).
Adding an entry is a few dictionary and deque operations: cheap enough for every request.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from itertools import islice

MAX_RECORDED_REQUESTS = 100_000
MAX_RECORD_CHARS = 64 * 1024 * 1024  # for the whole record (about 6k requests of 50 recipients)
MAX_STATS_PATHS = 1000  # paths counted one by one; a client probing paths cannot grow the stats
OTHER_PATHS = "(other paths)"


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    seq: int  # 1, 2, ... in arrival order; never reused, also across resets
    time_s: float  # epoch seconds when the emulator decided the answer (written delay_s later)
    method: str
    path: str
    status: int | None  # None: the connection was dropped without an answer
    body_text: str  # cut to a bound by the caller (state.MAX_RECORDED_BODY_BYTES)
    body_bytes: int  # size as received
    body_truncated: bool
    recipients: int  # recipients in the body (0 when unreadable or broadcast)
    message: str | None  # the `message` of the answer
    errors: tuple[str, ...] = ()
    dispatch_id: str | None = None
    notice: str | None = None
    delay_s: float = 0.0  # the injected latency before the answer (or the drop); 0 when none


@dataclass(frozen=True, slots=True)
class Stats:
    requests_total: int
    accepted_requests: int  # answered 2xx
    recipients_sent: int  # in accepted requests that send (a paused Canvas sends nothing)
    by_status: dict[str, int]  # "201", "400", ..., "dropped"
    by_path: dict[str, dict[str, int]]
    recipients_per_request: dict[str, int]  # recipients in a sending request -> how many requests


@dataclass(slots=True)
class _Counts:
    by_path_status: Counter[tuple[str, str]] = field(default_factory=Counter)
    paths: set[str] = field(default_factory=set)  # those counted by name (MAX_STATS_PATHS)
    accepted: int = 0
    recipients_sent: int = 0
    per_request: Counter[int] = field(default_factory=Counter)


class Recorder:
    """Appends requests and answers queries. Not thread-safe: the caller locks."""

    def __init__(
        self,
        max_requests: int = MAX_RECORDED_REQUESTS,
        max_chars: int = MAX_RECORD_CHARS,
    ) -> None:
        self._entries: deque[RecordedRequest] = deque()
        self._max_requests = max_requests
        self._max_chars = max_chars
        self._chars = 0
        self._next_seq = 1
        self._counts = _Counts()

    def next_seq(self) -> int:
        """The seq for the next `add`; the caller adds it before asking again (one lock)."""
        return self._next_seq

    def add(self, entry: RecordedRequest, *, sent: bool) -> None:
        """Keep `entry`; `sent` says its recipients were messaged (counted in stats)."""
        if entry.seq != self._next_seq:
            raise ValueError("entries must be added in seq order")
        self._next_seq += 1
        self._entries.append(entry)
        self._chars += _chars(entry)
        while len(self._entries) > self._max_requests or self._chars > self._max_chars:
            self._chars -= _chars(self._entries.popleft())
        status = "dropped" if entry.status is None else str(entry.status)
        path = entry.path
        counts = self._counts
        if path not in counts.paths:
            if len(counts.paths) >= MAX_STATS_PATHS:
                path = OTHER_PATHS
            else:
                counts.paths.add(path)
        counts.by_path_status[(path, status)] += 1
        if entry.status is not None and 200 <= entry.status <= 299:
            self._counts.accepted += 1
        if sent:  # implies 2xx
            self._counts.recipients_sent += entry.recipients
            self._counts.per_request[entry.recipients] += 1

    def since(self, seq: int, limit: int | None = None) -> list[RecordedRequest]:
        """Entries after `seq` (a cursor: pass the last seq seen), oldest first."""
        if not self._entries:
            return []
        # Seqs in the record are consecutive, so the first wanted entry's index is arithmetic.
        start = max(seq + 1 - self._entries[0].seq, 0)
        stop = None if limit is None else start + limit
        return list(islice(self._entries, start, stop))

    def stats(self) -> Stats:
        counts = self._counts
        by_status: Counter[str] = Counter()
        by_path: dict[str, dict[str, int]] = {}
        for (path, status), count in sorted(counts.by_path_status.items()):
            by_status[status] += count
            by_path.setdefault(path, {})[status] = count
        return Stats(
            requests_total=sum(by_status.values()),
            accepted_requests=counts.accepted,
            recipients_sent=counts.recipients_sent,
            by_status=dict(sorted(by_status.items())),
            by_path=by_path,
            recipients_per_request={str(n): c for n, c in sorted(counts.per_request.items())},
        )

    def clear(self) -> None:
        """Forget entries and counts; sequence numbers keep rising so old cursors stay valid."""
        self._entries.clear()
        self._chars = 0
        self._counts = _Counts()


def _chars(entry: RecordedRequest) -> int:
    """What an entry keeps that a client chooses the size of: its body, path and answer texts."""
    size = len(entry.body_text) + len(entry.path)
    if entry.errors:  # only a refused request has any (one per problem found)
        size += sum(map(len, entry.errors)) + len(entry.message or "")
    return size
