"""Pipeline with fakes: when an offset may be committed, given sends and dead-letter acks.

Real rules, batcher, offset tracker and metrics; a fake sender whose requests a test can hold
back, and a fake dead-letter sink whose acknowledgements arrive (or fail) when the test polls.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from consumer.batching import Batcher
from consumer.braze.client import ClientClosedError, RecipientResult
from consumer.deadletter import DeadLetter
from consumer.events import KafkaMeta, RawMessage
from consumer.intents import BatchKey
from consumer.json_types import JSONObject
from consumer.metrics import Metrics
from consumer.offsets import OffsetTracker, TopicPartition
from consumer.pipeline import HaltError, Pipeline, Ticket
from consumer.rules import load_rules_text

TP: TopicPartition = ("t", 0)
NOW_MS = 1_714_558_000_000
WAIT_S = 5.0  # upper bound for a worker thread to finish; tests normally take milliseconds

RULES = """\
rules:
  - id: canvas-rule
    topics: [t]
    when: {type: {in: [one, both]}}
    canvas: {id: canvas-1}
    recipient:
      external_user_id: "{{ user }}"
  - id: campaign-rule
    topics: [t]
    when: {type: both}
    campaign: {id: campaign-1}
    recipient:
      external_user_id: "{{ user }}"
  - id: needs-email
    topics: [t]
    when: {type: mail}
    campaign: {id: campaign-2}
    recipient:
      email: "{{ email }}"
      prioritization: [identified]
  - id: fresh-only
    topics: [t]
    when: {type: old}
    canvas: {id: canvas-3}
    recipient:
      external_user_id: "{{ user }}"
    max_event_age: 1h
"""


# -- fakes ------------------------------------------------------------------------------------


class FakeSender:
    """Records every request; holds it while its target or user has a closed gate.

    What becomes of a recipient is chosen by its user id: `reject*` is rejected (400),
    `exhaust*` runs out of retries (503), anything else is sent. `raises` replaces the result.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[BatchKey, list[JSONObject]]] = []
        self.gates: dict[str, threading.Event] = {}
        self.raises: BaseException | None = None
        self._lock = threading.Lock()

    def hold(self, *names: str) -> None:
        for name in names:
            self.gates[name] = threading.Event()

    def release(self, *names: str) -> None:
        for name in names or tuple(self.gates):
            self.gates[name].set()

    def send_batch(self, key: BatchKey, recipients: Sequence[JSONObject]) -> list[RecipientResult]:
        with self._lock:
            self.calls.append((key, list(recipients)))
        names = [key.target_id] + [str(r.get("external_user_id")) for r in recipients]
        for name in names:
            gate = self.gates.get(name)
            if gate is not None and not gate.wait(WAIT_S):
                raise AssertionError(f"gate {name} never released")
        if self.raises is not None:
            raise self.raises
        return [_result(i, str(r.get("external_user_id"))) for i, r in enumerate(recipients)]


def _result(index: int, user: str) -> RecipientResult:
    failed_at = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    if user.startswith("reject"):
        return RecipientResult(index, "rejected", 400, "invalid user", 1, failed_at, None)
    if user.startswith("exhaust"):
        return RecipientResult(index, "exhausted", 503, "unavailable", 6, failed_at, None)
    return RecipientResult(index, "sent", 201, "", 1, None, f"dispatch-{index}")


@dataclass
class FakeDeadLetters:
    """Stores each write's callback; `poll` acknowledges them (or fails them with `error`)."""

    written: list[DeadLetter] = field(default_factory=list)
    waiting: list[Callable[[str | None], None]] = field(default_factory=list)
    error: str | None = None

    def write(self, letter: DeadLetter, on_done: Callable[[str | None], None]) -> None:
        self.written.append(letter)
        self.waiting.append(on_done)

    def poll(self, timeout_s: float = 0.0) -> int:
        callbacks, self.waiting = self.waiting, []
        for on_done in callbacks:
            on_done(self.error)
        return len(callbacks)


@dataclass
class Clock:
    now_ms: int = NOW_MS

    def __call__(self) -> int:
        return self.now_ms


@dataclass
class Harness:
    pipeline: Pipeline
    sender: FakeSender
    sink: FakeDeadLetters
    clock: Clock
    metrics: Metrics
    next_offset: int = 0

    def handle(
        self, document: JSONObject | None = None, *, value: bytes | None = None, age_ms: int = 0
    ) -> int:
        """Feeds the next message of TP (JSON of `document`, or raw `value`); its offset."""
        offset = self.next_offset
        self.next_offset += 1
        body = value if document is None else json.dumps(document).encode()
        meta = KafkaMeta(TP[0], TP[1], offset, timestamp_ms=self.clock.now_ms - age_ms)
        self.pipeline.handle(RawMessage(meta, body), self.clock.now_ms)
        return offset

    def drain(self) -> None:
        """Settles every request sent so far (their gates must be open)."""
        deadline = time.monotonic() + WAIT_S
        while self.pipeline.in_flight_requests and time.monotonic() < deadline:
            self.pipeline.collect(0.05)
        assert self.pipeline.in_flight_requests == 0, "requests still in flight"

    def wait_for_calls(self, count: int) -> None:
        deadline = time.monotonic() + WAIT_S
        while len(self.sender.calls) < count and time.monotonic() < deadline:
            time.sleep(0.001)
        assert len(self.sender.calls) == count

    @property
    def position(self) -> int | None:
        return self.pipeline.tracker.committable(TP)

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(f"braze_consumer_{name}", labels)
        return 0.0 if value is None else value


@pytest.fixture
def make() -> Iterator[Callable[..., Harness]]:
    built: list[Harness] = []

    def build(max_recipients: int = 1, max_consecutive: int = 100) -> Harness:
        sender, sink, clock, metrics = FakeSender(), FakeDeadLetters(), Clock(), Metrics()
        pipeline = Pipeline(
            rules=load_rules_text(RULES),
            batcher=Batcher[Ticket](max_recipients, max_wait_ms=1_000),
            tracker=OffsetTracker(),
            sender=sender,
            dead_letters=sink,
            metrics=metrics,
            max_in_flight=4,
            max_consecutive_dead_letters=max_consecutive,
            wall_ms=clock,
        )
        pipeline.assigned([TP])
        harness = Harness(pipeline, sender, sink, clock, metrics)
        built.append(harness)
        return harness

    yield build
    for harness in built:
        for gate in harness.sender.gates.values():
            gate.set()  # never leave a worker thread waiting
        harness.pipeline.close()


# -- sending ----------------------------------------------------------------------------------


def test_no_commit_position_before_the_send_result(make: Callable[..., Harness]) -> None:
    h = make()
    h.sender.hold("u-1")
    h.handle({"type": "one", "user": "u-1"})
    h.wait_for_calls(1)
    h.pipeline.collect(0.05)
    assert h.position is None
    assert h.pipeline.tracker.take_commits() == {}
    h.sender.release()
    h.drain()
    assert h.position == 1
    assert h.pipeline.tracker.take_commits() == {TP: 1}
    assert h.pipeline.stats.recipients_sent == 1


def test_request_body_reaches_the_sender(make: Callable[..., Harness]) -> None:
    h = make(max_recipients=2)
    h.handle({"type": "one", "user": "u-1"})
    h.handle({"type": "one", "user": "u-2"})
    h.drain()
    assert [(key.target_id, recipients) for key, recipients in h.sender.calls] == [
        ("canvas-1", [{"external_user_id": "u-1"}, {"external_user_id": "u-2"}])
    ]
    assert h.position == 2


def test_partial_batch_waits_for_the_batcher(make: Callable[..., Harness]) -> None:
    h = make(max_recipients=50)
    h.handle({"type": "one", "user": "u-1"})
    assert h.sender.calls == []
    assert h.position is None
    h.pipeline.submit(h.pipeline.batcher.due(NOW_MS + 1_000))
    h.drain()
    assert h.position == 1


@pytest.mark.parametrize(
    ("release_order", "positions"),
    [
        pytest.param(["u0", "u1", "u2"], [1, 2, 3], id="in order"),
        pytest.param(["u1", "u0", "u2"], [None, 2, 3], id="offset 1 first waits for 0"),
        pytest.param(["u2", "u1", "u0"], [None, None, 3], id="reverse"),
        pytest.param(["u0", "u2", "u1"], [1, 1, 3], id="gap in the middle"),
    ],
)
def test_commit_never_passes_an_unsettled_offset(
    make: Callable[..., Harness], release_order: list[str], positions: list[int | None]
) -> None:
    h = make()
    h.sender.hold("u0", "u1", "u2")
    for n in range(3):
        h.handle({"type": "one", "user": f"u{n}"})
    h.wait_for_calls(3)
    seen = []
    for user in release_order:
        h.sender.release(user)
        h.pipeline.collect(WAIT_S)  # the one request just released
        seen.append(h.position)
    assert seen == positions


@pytest.mark.parametrize(
    ("first", "positions"),
    [
        pytest.param("canvas-1", [None, 1], id="canvas first"),
        pytest.param("campaign-1", [None, 1], id="campaign first"),
    ],
)
def test_event_matching_two_rules_needs_both_settled(
    make: Callable[..., Harness], first: str, positions: list[int | None]
) -> None:
    h = make()
    h.sender.hold("canvas-1", "campaign-1")
    h.handle({"type": "both", "user": "u-1"})
    h.wait_for_calls(2)
    second = "campaign-1" if first == "canvas-1" else "canvas-1"
    seen = []
    for target in (first, second):
        h.sender.release(target)
        h.pipeline.collect(WAIT_S)
        seen.append(h.position)
    assert seen == positions
    assert h.pipeline.stats.matched == 2


@pytest.mark.parametrize(
    ("only_rule", "targets", "skipped"),
    [
        pytest.param(None, ["campaign-1", "canvas-1"], 0, id="every matching rule"),
        pytest.param("canvas-rule", ["canvas-1"], 0, id="just the canvas rule"),
        pytest.param("campaign-rule", ["campaign-1"], 0, id="just the campaign rule"),
        pytest.param("fresh-only", [], 1, id="a rule that did not match: skipped"),
    ],
)
def test_only_rule_keeps_that_rules_outcomes(
    make: Callable[..., Harness], only_rule: str | None, targets: list[str], skipped: int
) -> None:
    h = make()
    dlq_tp: TopicPartition = ("braze-consumer.dlq", 3)
    h.pipeline.assigned([dlq_tp])
    raw = RawMessage(KafkaMeta("t", 0, 40), json.dumps({"type": "both", "user": "u"}).encode())
    h.pipeline.handle(raw, NOW_MS, (dlq_tp, 9), only_rule)
    h.drain()
    assert sorted(key.target_id for key, _ in h.sender.calls) == targets
    assert h.pipeline.stats.skipped == skipped
    assert h.pipeline.tracker.committable(dlq_tp) == 10  # the replay position, not the event's
    assert h.position is None


@pytest.mark.parametrize(
    ("document", "age_ms", "skip_labels"),
    [
        pytest.param({"type": "x"}, 0, {"rule": "-", "reason": "no_match"}, id="no rule matched"),
        pytest.param(
            {"type": "old", "user": "u"},
            3_600_001,
            {"rule": "fresh-only", "reason": "max_event_age"},
            id="older than max_event_age by the injected wall clock",
        ),
    ],
)
def test_skipped_event_commits_at_once(
    make: Callable[..., Harness], document: JSONObject, age_ms: int, skip_labels: dict[str, str]
) -> None:
    h = make()
    h.handle(document, age_ms=age_ms)
    assert h.position == 1
    assert h.sender.calls == []
    assert h.sink.written == []
    assert h.sample("events_skipped_total", **skip_labels) == 1


def test_event_within_max_event_age_is_sent(make: Callable[..., Harness]) -> None:
    h = make()
    h.handle({"type": "old", "user": "u"}, age_ms=3_600_000)
    h.drain()
    assert [key.target_id for key, _ in h.sender.calls] == ["canvas-3"]
    assert h.position == 1


# -- dead letters -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "reason", "status", "attempts"),
    [
        pytest.param("reject-1", "braze_rejected", 400, 1, id="rejected"),
        pytest.param("exhaust-1", "retries_exhausted", 503, 6, id="retries exhausted"),
    ],
)
def test_failed_recipient_commits_only_after_the_dead_letter_ack(
    make: Callable[..., Harness], user: str, reason: str, status: int, attempts: int
) -> None:
    h = make(max_recipients=2)
    h.handle({"type": "one", "user": "u-ok"})
    h.handle({"type": "one", "user": user})
    h.drain()
    assert h.position == 1  # the sent one; the failed one waits for its dead letter
    [letter] = h.sink.written
    assert (letter.reason, letter.rule_id, letter.http_status, letter.attempts) == (
        reason,
        "canvas-rule",
        status,
        attempts,
    )
    assert letter.raw.meta.offset == 1
    assert letter.failed_at is not None
    assert letter.first_failed_at == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    assert h.sample("events_dead_lettered_total", rule="canvas-rule", reason=reason) == 0
    h.pipeline.service_dead_letters()
    assert h.position == 2
    assert h.pipeline.stats.dead_lettered == {reason: 1}
    assert h.sample("events_dead_lettered_total", rule="canvas-rule", reason=reason) == 1


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        pytest.param(b"{not json", "not valid JSON", id="invalid JSON"),
        pytest.param(None, "tombstone", id="tombstone"),
        pytest.param(b"[1, 2]", "got list", id="array"),
    ],
)
def test_undecodable_message_is_dead_lettered(
    make: Callable[..., Harness], value: bytes | None, detail: str
) -> None:
    h = make()
    h.handle(value=value)
    [letter] = h.sink.written
    assert (letter.reason, letter.rule_id) == ("invalid_json", "-")
    assert detail in letter.error
    assert letter.raw.value == value
    assert h.sender.calls == []
    assert h.position is None
    h.pipeline.service_dead_letters()
    assert h.position == 1


def test_mapping_failure_is_dead_lettered_with_its_rule(make: Callable[..., Harness]) -> None:
    h = make()
    h.handle({"type": "mail", "user": "u"})  # no `email` field
    [letter] = h.sink.written
    assert (letter.reason, letter.rule_id) == ("mapping_error", "needs-email")
    assert "recipient.email" in letter.error
    h.pipeline.service_dead_letters()
    assert h.position == 1


@pytest.mark.parametrize("failures", [1, 2, 5])
def test_failed_dead_letter_write_is_retried_and_blocks_the_commit(
    make: Callable[..., Harness], failures: int
) -> None:
    h = make()
    h.handle(value=b"nope")
    h.handle({"type": "other"})  # settled at once, but behind the dead letter
    h.sink.error = "broker unreachable"
    for attempt in range(1, failures + 1):
        h.pipeline.service_dead_letters()  # the write fails; a retry is scheduled
        assert len(h.sink.written) == attempt
        assert h.pipeline.dead_letters_unacked == 1
        h.pipeline.service_dead_letters()
        h.clock.now_ms += 499
        h.pipeline.service_dead_letters()
        assert len(h.sink.written) == attempt, "retried before its backoff"
        assert h.position is None
        h.clock.now_ms += 30_000
        h.pipeline.service_dead_letters()
        assert len(h.sink.written) == attempt + 1, "not retried after the longest backoff"
    assert h.sample("dlq_write_failures_total") == failures
    h.sink.error = None
    h.pipeline.service_dead_letters()
    assert h.position == 2
    assert h.pipeline.dead_letters_unacked == 0
    first, *rest = h.sink.written
    assert all(letter == first for letter in rest), "a retry must write the same record"


@pytest.mark.parametrize(
    ("kinds", "halts_at"),
    [
        pytest.param(["bad"] * 3, None, id="up to the limit"),
        pytest.param(["bad"] * 4, 3, id="one past the limit"),
        pytest.param(["bad", "bad", "sent", "bad", "bad", "bad"], None, id="a send resets"),
        pytest.param(["bad", "bad", "reject", "bad"], 3, id="rejections count"),
    ],
)
def test_halt_after_too_many_consecutive_dead_letters(
    make: Callable[..., Harness], kinds: list[str], halts_at: int | None
) -> None:
    h = make(max_consecutive=3)

    def feed(kind: str) -> None:
        if kind == "bad":
            h.handle(value=b"x")
        else:
            h.handle({"type": "one", "user": "reject-1" if kind == "reject" else "u"})
            h.drain()

    for kind in kinds[:halts_at]:
        feed(kind)
    if halts_at is not None:
        with pytest.raises(HaltError, match="consecutive dead letters"):
            feed(kinds[halts_at])


# -- assignment generations and sender failures -------------------------------------------------


def test_send_result_from_an_older_assignment_does_not_settle(
    make: Callable[..., Harness],
) -> None:
    h = make()
    h.sender.hold("u-1")
    h.handle({"type": "one", "user": "u-1"})
    h.wait_for_calls(1)
    h.pipeline.assigned([TP])  # revoked and assigned again while the request was out
    h.sender.release()
    h.drain()
    assert h.position is None
    assert h.pipeline.tracker.unsettled(TP) == 1


def test_dead_letter_ack_from_an_older_assignment_does_not_settle(
    make: Callable[..., Harness],
) -> None:
    h = make()
    h.handle(value=b"x")
    h.pipeline.assigned([TP])
    h.pipeline.service_dead_letters()
    assert h.position is None
    assert h.pipeline.tracker.unsettled(TP) == 1


def test_dead_letter_retry_from_an_older_assignment_is_dropped(
    make: Callable[..., Harness],
) -> None:
    h = make()
    h.handle(value=b"x")
    h.sink.error = "broker unreachable"
    h.pipeline.service_dead_letters()
    h.pipeline.assigned([TP])  # the new owner re-reads the event and dead-letters it itself
    h.sink.error = None
    h.clock.now_ms += 60_000
    h.pipeline.service_dead_letters()
    assert len(h.sink.written) == 1
    assert h.pipeline.dead_letters_unacked == 0


def test_client_closed_leaves_the_units_unsettled(make: Callable[..., Harness]) -> None:
    h = make(max_recipients=2)
    h.sender.raises = ClientClosedError("closing")
    h.handle({"type": "one", "user": "u-1"})
    h.handle({"type": "one", "user": "u-2"})
    h.drain()
    assert h.position is None
    assert h.pipeline.tracker.unsettled(TP) == 2
    assert h.sink.written == []


def test_unexpected_sender_error_dead_letters_the_batch(make: Callable[..., Harness]) -> None:
    h = make(max_recipients=2)
    h.sender.raises = RuntimeError("bug in the client")
    h.handle({"type": "one", "user": "u-1"})
    h.handle({"type": "one", "user": "u-2"})
    h.drain()
    assert [(d.reason, d.rule_id, d.raw.meta.offset) for d in h.sink.written] == [
        ("retries_exhausted", "canvas-rule", 0),
        ("retries_exhausted", "canvas-rule", 1),
    ]
    assert all("bug in the client" in d.error for d in h.sink.written)
    assert h.position is None
    h.pipeline.service_dead_letters()
    assert h.position == 2
