"""Stage 3: groups send intents into Braze requests: few enough, small enough, one per user.

Pure: no I/O, no clock reads, no threads. The pipeline passes `now_ms`, sends the batches that come
out, and hands each item's opaque `token` back to the offset tracker once the send is settled.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Generic, TypeVar

from consumer.braze.limits import (
    BATCH_TARGET_BYTES,
    MAX_RECIPIENTS_PER_REQUEST,
    MAX_REQUEST_BYTES,
)
from consumer.intents import BatchKey, SendIntent, canonical_json
from consumer.json_types import JSONObject

T = TypeVar("T")

# Room for what the Braze client may add around `BatchKey.request_body` (e.g. `"broadcast": false`).
ENVELOPE_SLACK_BYTES = 1024
RECIPIENT_OVERHEAD_BYTES = 1  # the comma between two recipients in the JSON array
# Stale deadline entries (of batches already emitted) are dropped lazily; rebuild the heap when
# they outnumber the live ones by this margin so it stays O(open batches) even without due() calls.
_HEAP_SLACK = 1024


@lru_cache(maxsize=4096)
def envelope_bytes(key: BatchKey) -> int:
    """Bytes of a request for `key` before any recipient: the body without recipients + slack."""
    return len(canonical_json(key.request_body([])).encode("utf-8")) + ENVELOPE_SLACK_BYTES


@dataclass(slots=True)
class BatchItem(Generic[T]):
    """One recipient in a batch, with the pipeline's token for settling its event later; never
    changed once made (not frozen: one is built per recipient, see `consumer.events`)."""

    intent: SendIntent
    token: T  # opaque: the pipeline uses it to settle the event's offset later


@dataclass(frozen=True, slots=True)
class Batch(Generic[T]):
    """One Braze request's worth of intents sharing a `BatchKey`, no user twice."""

    key: BatchKey
    items: tuple[BatchItem[T], ...]
    opened_ms: int  # time the first item was added

    @property
    def recipients(self) -> list[JSONObject]:
        """The recipient objects, in arrival order, for `BatchKey.request_body`."""
        return [item.intent.recipient for item in self.items]

    @property
    def encoded(self) -> list[bytes]:
        """Each recipient's JSON as the request carries it, in arrival order."""
        return [item.intent.encoded for item in self.items]


@dataclass(slots=True, eq=False)
class _OpenBatch(Generic[T]):
    """A batch still taking recipients; mutable on purpose, it never leaves the Batcher."""

    key: BatchKey
    seq: int  # global arrival order of batches: FIFO tie-break and identity in the heap
    opened_ms: int
    request_bytes: int
    items: list[BatchItem[T]] = field(default_factory=list)
    users: set[str] = field(default_factory=set)

    def fits(self, cost_bytes: int, max_request_bytes: int) -> bool:
        return self.request_bytes + cost_bytes <= max_request_bytes

    def append(self, item: BatchItem[T], cost_bytes: int) -> None:
        self.items.append(item)
        self.users.add(item.intent.user_key)
        self.request_bytes += cost_bytes

    def freeze(self) -> Batch[T]:
        return Batch(key=self.key, items=tuple(self.items), opened_ms=self.opened_ms)


class Batcher(Generic[T]):
    """Holds open batches per `BatchKey` and says which ones to send, and when.

    A batch is ready when it holds `max_recipients`, or when the next recipient would push the
    request over `max_request_bytes` (that recipient then goes to the next batch). A recipient whose
    user is already in a batch goes to the next open batch of its key without that user (a new one
    if needed): Braze would merge the two and send one message, so it waits for the next request.
    A partial batch is due `max_wait_ms` after its first item. Within a key, batches come out
    oldest first, except that a younger batch holding repeated users may fill up by bytes first.

    `max_recipients` is at most Braze's MAX_RECIPIENTS_PER_REQUEST and `max_request_bytes` at most
    its MAX_REQUEST_BYTES; the default, BATCH_TARGET_BYTES, keeps our margin below the latter.
    """

    def __init__(
        self, max_recipients: int, max_wait_ms: int, max_request_bytes: int = BATCH_TARGET_BYTES
    ):
        limit = MAX_RECIPIENTS_PER_REQUEST
        if not 1 <= max_recipients <= limit:
            raise ValueError(f"max_recipients must be 1..{limit}: {max_recipients}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0: {max_wait_ms}")
        if not 1 <= max_request_bytes <= MAX_REQUEST_BYTES:
            raise ValueError(
                f"max_request_bytes must be 1..{MAX_REQUEST_BYTES}: {max_request_bytes}"
            )
        self._max_recipients = max_recipients
        self._max_wait_ms = max_wait_ms
        self._max_request_bytes = max_request_bytes
        self._by_key: dict[BatchKey, list[_OpenBatch[T]]] = {}  # open batches, oldest first
        # seq -> open batch; insertion order is seq order, so iterating it is global FIFO order.
        self._live: dict[int, _OpenBatch[T]] = {}
        self._deadlines: list[tuple[int, int]] = []  # heap of (opened_ms, seq), stale ones lazily
        self._next_seq = 0
        self._pending = 0

    @property
    def pending(self) -> int:
        """Recipients held in open batches."""
        return self._pending

    @property
    def open_batches(self) -> int:
        """Batches not yet emitted."""
        return len(self._live)

    def add(self, intent: SendIntent, token: T, now_ms: int) -> list[Batch[T]]:
        """Adds one recipient; returns the batches that became ready (full), oldest first.

        An intent bigger than `max_request_bytes` on its own still gets a batch, alone, returned at
        once, rather than the batcher dropping it silently: below MAX_RECIPIENT_BYTES it still
        fits a request (the default target keeps a margin under Braze's limit); above, it fits
        none, and the pipeline dead-letters it as `too_large` before it gets here.
        """
        cost_bytes = intent.size_bytes + RECIPIENT_OVERHEAD_BYTES
        ready: list[_OpenBatch[T]] = []
        target = self._place(intent.key, intent.user_key, cost_bytes, ready)
        if target is None:
            # A new batch takes the intent whatever its size, so an oversized one goes alone.
            target = self._open(intent.key, now_ms)
        target.append(BatchItem(intent=intent, token=token), cost_bytes)
        self._pending += 1
        full = len(target.items) >= self._max_recipients
        if full or target.request_bytes > self._max_request_bytes:
            ready.append(target)
        return self._close(ready)

    @property
    def max_wait_ms(self) -> int:
        return self._max_wait_ms

    def due(self, now_ms: int, extra_wait_ms: int = 0) -> list[Batch[T]]:
        """Partial batches whose first item has waited at least `max_wait_ms` (plus
        `extra_wait_ms`), oldest first."""
        cutoff_ms = now_ms - self._max_wait_ms - extra_wait_ms
        ready: list[_OpenBatch[T]] = []
        while self._deadlines and self._deadlines[0][0] <= cutoff_ms:
            _, seq = heapq.heappop(self._deadlines)
            batch = self._live.get(seq)
            if batch is not None:
                ready.append(batch)
        return self._close(ready)

    def next_due_ms(self) -> int | None:
        """The earliest time a partial batch becomes due, or None when nothing is held."""
        while self._deadlines and self._deadlines[0][1] not in self._live:
            heapq.heappop(self._deadlines)
        if not self._deadlines:
            return None
        return self._deadlines[0][0] + self._max_wait_ms

    def flush(self) -> list[Batch[T]]:
        """Every open batch, oldest first (shutdown, revocation of everything)."""
        batches = self._close(list(self._live.values()))
        self._deadlines.clear()
        return batches

    def flush_where(self, predicate: Callable[[T], bool]) -> list[Batch[T]]:
        """Whole open batches holding at least one token matching `predicate`, oldest first.

        Used on partition revocation: the batches of revoked partitions' events go out now (with
        whatever other events share them) so their offsets can settle before the final commit.
        """
        matching = [
            batch
            for batch in self._live.values()
            if any(predicate(item.token) for item in batch.items)
        ]
        return self._close(matching)

    def _place(
        self, key: BatchKey, user_key: str, cost_bytes: int, ready: list[_OpenBatch[T]]
    ) -> _OpenBatch[T] | None:
        """The oldest open batch of `key` without `user_key` that has room for `cost_bytes`.

        Batches without the user but without room are ready: they are appended to `ready`.
        """
        for batch in self._by_key.get(key, ()):
            if user_key in batch.users:
                continue
            if batch.fits(cost_bytes, self._max_request_bytes):
                return batch
            ready.append(batch)
        return None

    def _open(self, key: BatchKey, now_ms: int) -> _OpenBatch[T]:
        batch: _OpenBatch[T] = _OpenBatch(
            key=key, seq=self._next_seq, opened_ms=now_ms, request_bytes=envelope_bytes(key)
        )
        self._next_seq += 1
        self._by_key.setdefault(key, []).append(batch)
        self._live[batch.seq] = batch
        heapq.heappush(self._deadlines, (now_ms, batch.seq))
        if len(self._deadlines) > 2 * len(self._live) + _HEAP_SLACK:
            self._deadlines = [(b.opened_ms, b.seq) for b in self._live.values()]
            heapq.heapify(self._deadlines)
        return batch

    def _close(self, batches: list[_OpenBatch[T]]) -> list[Batch[T]]:
        """Removes `batches` from the open set and freezes them, keeping their order."""
        if not batches:
            return []  # the common case on add() and due(): skip the loop and comprehension
        for batch in batches:
            siblings = self._by_key[batch.key]
            siblings.remove(batch)  # identity (eq=False); a key holds few open batches
            if not siblings:
                del self._by_key[batch.key]
            del self._live[batch.seq]
            self._pending -= len(batch.items)
        return [batch.freeze() for batch in batches]
