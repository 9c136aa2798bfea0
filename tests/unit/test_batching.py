"""Batcher: tables of add/due/flush steps and the batches they must emit."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.batching import RECIPIENT_OVERHEAD_BYTES, Batch, Batcher, envelope_bytes
from consumer.braze.limits import BATCH_TARGET_BYTES, MAX_RECIPIENTS_PER_REQUEST, MAX_REQUEST_BYTES
from consumer.intents import BatchKey, Endpoint, SendIntent

SIZE = 10  # default recipient size in bytes


def key(name: str) -> BatchKey:
    return BatchKey(endpoint=Endpoint.CANVAS_SEND, target_id=name)


def intent(key_name: str, user: str, size: int = SIZE) -> SendIntent:
    return SendIntent(
        rule_id="r",
        key=key(key_name),
        user_key=f"external_user_id:{user}",
        encoded=b"x" * size,  # the batcher reads only its length
    )


def room_for(count: int, size: int = SIZE) -> int:
    """max_request_bytes that fits exactly `count` recipients of `size` for key "a"."""
    return envelope_bytes(key("a")) + count * (size + RECIPIENT_OVERHEAD_BYTES)


@dataclass(frozen=True)
class Add:
    token: str
    key: str
    user: str
    now_ms: int = 0
    size: int = SIZE


@dataclass(frozen=True)
class Due:
    now_ms: int


@dataclass(frozen=True)
class Flush:
    pass


@dataclass(frozen=True)
class FlushWhere:
    tokens: frozenset[str]


Step = Add | Due | Flush | FlushWhere
Emitted = tuple[int, str, tuple[str, ...]]  # (step index, key name, tokens)


def run(batcher: Batcher[str], step: Step) -> list[Batch[str]]:
    match step:
        case Add():
            return batcher.add(intent(step.key, step.user, step.size), step.token, step.now_ms)
        case Due():
            return batcher.due(step.now_ms)
        case Flush():
            return batcher.flush()
        case FlushWhere():
            return batcher.flush_where(step.tokens.__contains__)


def emitted(batcher: Batcher[str], steps: list[Step]) -> list[Emitted]:
    out: list[Emitted] = []
    for index, step in enumerate(steps):
        for batch in run(batcher, step):
            out.append((index, batch.key.target_id, tuple(item.token for item in batch.items)))
    return out


@pytest.mark.parametrize(
    ("max_recipients", "max_request_bytes", "steps", "expected", "pending"),
    [
        pytest.param(
            3,
            BATCH_TARGET_BYTES,
            [Add("t1", "a", "u1"), Add("t2", "a", "u2"), Add("t3", "a", "u3")],
            [(2, "a", ("t1", "t2", "t3"))],
            0,
            id="closes batch at size",
        ),
        pytest.param(
            3,
            BATCH_TARGET_BYTES,
            [Add("t1", "a", "u1"), Add("t2", "a", "u2")],
            [],
            2,
            id="partial batch is held",
        ),
        pytest.param(
            1,
            BATCH_TARGET_BYTES,
            [Add("t1", "a", "u1"), Add("t2", "a", "u1"), Add("t3", "b", "u2")],
            [(0, "a", ("t1",)), (1, "a", ("t2",)), (2, "b", ("t3",))],
            0,
            id="max_recipients=1 emits every add",
        ),
        pytest.param(
            2,
            BATCH_TARGET_BYTES,
            [Add("t1", "a", "u1"), Add("t2", "b", "u1"), Add("t3", "a", "u2")],
            [(2, "a", ("t1", "t3"))],
            1,
            id="keys fill independently",
        ),
        pytest.param(
            2,
            BATCH_TARGET_BYTES,
            [Add("t1", "a", "u1"), Add("t2", "a", "u1"), Add("t3", "a", "u2")],
            [(2, "a", ("t1", "t3"))],
            1,
            id="same user twice goes to the next batch",
        ),
        pytest.param(
            2,
            BATCH_TARGET_BYTES,
            [Add("t1", "a", "u1"), Add("t2", "a", "u1"), Add("t3", "a", "u1"), Flush()],
            [(3, "a", ("t1",)), (3, "a", ("t2",)), (3, "a", ("t3",))],
            0,
            id="same user three times makes three batches in FIFO order",
        ),
        pytest.param(
            2,
            BATCH_TARGET_BYTES,
            [
                Add("t1", "a", "u1"),
                Add("t2", "a", "u1"),
                Add("t3", "a", "u2"),
                Add("t4", "a", "u3"),
            ],
            [(2, "a", ("t1", "t3")), (3, "a", ("t2", "t4"))],
            0,
            id="repeated user's batch becomes the head after the first is sent",
        ),
        pytest.param(
            50,
            room_for(3),
            [Add(f"t{i}", "a", f"u{i}") for i in range(4)],
            [(3, "a", ("t0", "t1", "t2"))],
            1,
            id="byte limit: the recipient that does not fit starts the next batch",
        ),
        pytest.param(
            50,
            room_for(3),
            [Add("t0", "a", "u0"), Add("t1", "a", "u1"), Add("t2", "a", "u2", size=SIZE - 1)],
            [],
            3,
            id="byte limit: below the limit stays open",
        ),
        pytest.param(
            50,
            room_for(1),
            [Add("t0", "a", "u0"), Add("big", "a", "u1", size=room_for(2)), Add("t2", "a", "u2")],
            [(1, "a", ("t0",)), (1, "a", ("big",))],
            1,
            id="oversized intent goes alone and at once",
        ),
        pytest.param(
            2,
            BATCH_TARGET_BYTES,
            [Add("t1", "a", "u1"), Add("t2", "b", "u2"), Add("t3", "a", "u1"), Flush()],
            [(3, "a", ("t1",)), (3, "b", ("t2",)), (3, "a", ("t3",))],
            0,
            id="flush empties everything oldest first",
        ),
        pytest.param(
            3,
            BATCH_TARGET_BYTES,
            [
                Add("p0-1", "a", "u1"),
                Add("p1-1", "a", "u2"),
                Add("p1-2", "b", "u3"),
                Add("p0-2", "c", "u4"),
                FlushWhere(frozenset({"p1-1", "p1-2"})),
            ],
            [(4, "a", ("p0-1", "p1-1")), (4, "b", ("p1-2",))],
            1,
            id="flush_where takes whole batches holding a matching token",
        ),
        pytest.param(
            3,
            BATCH_TARGET_BYTES,
            [Add("t1", "a", "u1"), FlushWhere(frozenset({"zz"})), Add("t2", "a", "u2")],
            [],
            2,
            id="flush_where without a match keeps everything",
        ),
    ],
)
def test_add_and_flush(
    max_recipients: int,
    max_request_bytes: int,
    steps: list[Step],
    expected: list[Emitted],
    pending: int,
) -> None:
    batcher: Batcher[str] = Batcher(max_recipients, 500, max_request_bytes)
    assert emitted(batcher, steps) == expected
    assert batcher.pending == pending


@pytest.mark.parametrize(
    ("steps", "expected", "next_due_ms"),
    [
        pytest.param(
            [Add("t1", "a", "u1", now_ms=1000), Due(1499)],
            [],
            1500,
            id="partial batch not due before max_wait_ms",
        ),
        pytest.param(
            [Add("t1", "a", "u1", now_ms=1000), Add("t2", "a", "u2", now_ms=1400), Due(1500)],
            [(2, "a", ("t1", "t2"))],
            None,
            id="partial batch due at max_wait_ms after its first item",
        ),
        pytest.param(
            [Add("t1", "a", "u1", now_ms=1000), Add("t2", "b", "u1", now_ms=1200), Due(1600)],
            [(2, "a", ("t1",))],
            1700,
            id="each key has its own deadline",
        ),
        pytest.param(
            [Add("t1", "a", "u1", now_ms=1000), Add("t2", "a", "u1", now_ms=1300), Due(1500)],
            [(2, "a", ("t1",))],
            1800,
            id="repeated user's batch has its own opened_ms",
        ),
        pytest.param(
            [
                Add("t1", "a", "u1", now_ms=1000),
                Add("t2", "b", "u1", now_ms=1000),
                Add("t3", "a", "u1", now_ms=1100),
                Due(5000),
            ],
            [(3, "a", ("t1",)), (3, "b", ("t2",)), (3, "a", ("t3",))],
            None,
            id="due returns oldest first",
        ),
        pytest.param(
            [
                Add("t1", "a", "u1", now_ms=1000),
                Add("t2", "a", "u2", now_ms=1100),
                Add("t3", "a", "u3", now_ms=1200),
                Add("t4", "b", "u4", now_ms=1300),
            ],
            [(2, "a", ("t1", "t2", "t3"))],
            1800,
            id="next_due_ms skips batches already sent full",
        ),
        pytest.param(
            [Add("t1", "a", "u1", now_ms=1000), Flush(), Due(9999)],
            [(1, "a", ("t1",))],
            None,
            id="nothing due after flush",
        ),
        pytest.param([], [], None, id="empty batcher has no deadline"),
    ],
)
def test_due(steps: list[Step], expected: list[Emitted], next_due_ms: int | None) -> None:
    batcher: Batcher[str] = Batcher(3, 500)
    assert emitted(batcher, steps) == expected
    assert batcher.next_due_ms() == next_due_ms


def test_batch_carries_opened_ms_and_recipients() -> None:
    batcher: Batcher[str] = Batcher(2, 500)
    first, second = intent("a", "u1"), intent("a", "u2")
    batcher.add(first, "t1", 1000)
    [batch] = batcher.add(second, "t2", 1300)
    assert batch.opened_ms == 1000
    assert batch.encoded == [first.encoded, second.encoded]


def test_many_keys_due_in_deadline_order() -> None:
    batcher: Batcher[str] = Batcher(50, 500)
    for i in range(3000):
        batcher.add(intent(f"k{i}", "u"), f"t{i}", now_ms=i)
    assert batcher.next_due_ms() == 500
    first = batcher.due(now_ms=1499)
    assert [b.items[0].token for b in first] == [f"t{i}" for i in range(1000)]
    assert batcher.pending == 2000
    assert batcher.next_due_ms() == 1500
    assert len(batcher.due(now_ms=10_000)) == 2000
    assert batcher.pending == 0


def test_deadlines_survive_many_full_batches() -> None:
    """Full batches leave stale deadline entries behind; the old partial one must still come due."""
    batcher: Batcher[str] = Batcher(2, 500)
    batcher.add(intent("held", "u"), "held", now_ms=0)
    for i in range(5000):
        assert len(batcher.add(intent("a", f"u{i % 2}"), f"t{i}", now_ms=i % 2 + 1)) == i % 2
    assert batcher.next_due_ms() == 500
    assert [b.items[0].token for b in batcher.due(now_ms=500)] == ["held"]
    assert batcher.next_due_ms() is None


@pytest.mark.parametrize(
    ("max_recipients", "max_wait_ms", "max_request_bytes"),
    [
        pytest.param(0, 500, 100, id="zero recipients"),
        pytest.param(MAX_RECIPIENTS_PER_REQUEST + 1, 500, 100, id="more than Braze's 50"),
        pytest.param(50, -1, 100, id="negative wait"),
        pytest.param(50, 500, 0, id="no bytes"),
        pytest.param(50, 500, MAX_REQUEST_BYTES + 1, id="more bytes than Braze takes"),
    ],
)
def test_rejects_bad_settings(
    max_recipients: int, max_wait_ms: int, max_request_bytes: int
) -> None:
    with pytest.raises(ValueError, match="must be"):
        Batcher[str](max_recipients, max_wait_ms, max_request_bytes)


adds = st.lists(
    st.tuples(
        st.sampled_from("ab"),  # key
        st.integers(0, 4),  # user
        st.integers(1, 60),  # size
        st.integers(0, 300),  # ms since the previous add
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(adds=adds, max_recipients=st.integers(1, 5), room=st.integers(1, 6))
def test_every_intent_comes_out_once_within_limits(
    adds: list[tuple[str, int, int, int]], max_recipients: int, room: int
) -> None:
    max_request_bytes = room_for(room, size=30)
    batcher: Batcher[int] = Batcher(max_recipients, 500, max_request_bytes)
    now_ms = 0
    out: list[Batch[int]] = []
    for token, (key_name, user, size, step_ms) in enumerate(adds):
        now_ms += step_ms
        out += batcher.add(intent(key_name, f"u{user}", size), token, now_ms)
        out += batcher.due(now_ms)
    out += batcher.flush()
    assert sorted(item.token for batch in out for item in batch.items) == list(range(len(adds)))
    for batch in out:
        users = [item.intent.user_key for item in batch.items]
        assert len(set(users)) == len(users) <= max_recipients
        assert {item.intent.key for item in batch.items} == {batch.key}
        body_bytes = envelope_bytes(batch.key) + sum(
            item.intent.size_bytes + RECIPIENT_OVERHEAD_BYTES for item in batch.items
        )
        assert len(batch.items) == 1 or body_bytes <= max_request_bytes
    assert batcher.pending == 0
    assert batcher.next_due_ms() is None


def test_the_default_byte_target_keeps_a_margin_under_brazes_limit() -> None:
    size = 300_000  # recipients big enough that bytes, not the count, close the batches
    batcher: Batcher[int] = Batcher(MAX_RECIPIENTS_PER_REQUEST, 500)
    batches: list[Batch[int]] = []
    for n in range(40):
        batches += batcher.add(intent("a", f"u{n}", size), n, now_ms=0)
    batches += batcher.flush()
    assert sum(len(batch.items) for batch in batches) == 40
    for batch in batches:
        body_bytes = envelope_bytes(batch.key) + len(batch.items) * (size + 1)
        assert body_bytes <= BATCH_TARGET_BYTES < MAX_REQUEST_BYTES
    assert max(len(batch.items) for batch in batches) == BATCH_TARGET_BYTES // (size + 1)
