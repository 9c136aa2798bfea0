"""Pipeline with fakes: when an offset may be committed, given sends, holds and dead-letter acks.

Real rules, batcher, offset tracker and metrics; a fake sender whose requests a test can hold
back or fail, a fake dead-letter sink whose acknowledgements arrive (or fail) when the test polls,
and a manual clock for every deadline (probes, backoffs, staleness).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.batching import Batcher
from consumer.braze.answers import HoldCause
from consumer.braze.client import ClientClosedError, RecipientResult
from consumer.clock import ManualClock, to_ms
from consumer.deadletter import DeadLetter
from consumer.events import KafkaMeta, RawMessage
from consumer.guard import GuardPolicy
from consumer.hold import HoldPolicy
from consumer.intents import BatchKey
from consumer.json_types import JSONObject, JSONValue
from consumer.metrics import Metrics
from consumer.offsets import Commit, OffsetTracker, TopicPartition
from consumer.pipeline import HaltError, Pipeline, PipelineSettings, PipelineStats, Ticket
from consumer.progress import decode
from consumer.rules import load_rules_text
from consumer.schemas import wire
from consumer.schemas.decoder import UndecodableError
from consumer.schemas.registry import RegistryUnavailableError, SchemaInfo

TP: TopicPartition = ("t", 0)
TP1: TopicPartition = ("t", 1)
WAIT_S = 5.0  # upper bound for a worker thread to finish; tests normally take milliseconds
FAILED_AT = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)

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

    What becomes of a recipient is chosen by its user id: `reject*` is rejected (400), anything
    else is sent, unless `failing` names a hold cause (every recipient is then held) or
    `whole_reject` says Braze refuses the request as a whole. `raises` replaces the result.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[BatchKey, list[JSONObject]]] = []
        self.probes: list[HoldCause] = []
        self.gates: dict[str, threading.Event] = {}
        self.raises: BaseException | None = None
        self.failing: HoldCause | None = None
        self.whole_reject = False
        self._lock = threading.Lock()

    def hold(self, *names: str) -> None:
        for name in names:
            self.gates[name] = threading.Event()

    def release(self, *names: str) -> None:
        for name in names or tuple(self.gates):
            self.gates[name].set()

    def prepare_probe(self, cause: HoldCause) -> None:
        self.probes.append(cause)

    def send_encoded(self, key: BatchKey, encoded: Sequence[bytes]) -> list[RecipientResult]:
        recipients: list[JSONObject] = [json.loads(each) for each in encoded]
        with self._lock:
            self.calls.append((key, list(recipients)))
        names = [key.target_id] + [str(r.get("external_user_id")) for r in recipients]
        for name in names:
            gate = self.gates.get(name)
            if gate is not None and not gate.wait(WAIT_S):
                raise AssertionError(f"gate {name} never released")
        if self.raises is not None:
            raise self.raises
        return [self._result(i, str(r.get("external_user_id"))) for i, r in enumerate(recipients)]

    def _result(self, index: int, user: str) -> RecipientResult:
        if self.failing is not None:
            return RecipientResult(
                index=index,
                outcome="held",
                http_status=503,
                error="HTTP 503: unavailable",
                attempts=3,
                first_failed_at=FAILED_AT,
                cause=self.failing,
            )
        if self.whole_reject or user.startswith("reject"):
            return RecipientResult(
                index=index,
                outcome="rejected",
                http_status=400,
                error="Invalid Canvas ID" if self.whole_reject else "invalid user",
                attempts=1,
                first_failed_at=FAILED_AT,
                whole_request=self.whole_reject,
            )
        return RecipientResult(
            index=index,
            outcome="sent",
            http_status=201,
            error="",
            attempts=1,
            first_failed_at=None,
            dispatch_id=f"dispatch-{index}",
        )


@dataclass
class FakeDeadLetters:
    """Stores each write's callback; `poll` acknowledges them (or fails them with `error`)."""

    written: list[DeadLetter] = field(default_factory=list)
    waiting: list[Callable[[str | None], None]] = field(default_factory=list)
    error: str | None = None
    paused: bool = False  # acknowledgements wait while True

    def write(self, letter: DeadLetter, on_done: Callable[[str | None], None]) -> None:
        self.written.append(letter)
        self.waiting.append(on_done)

    def poll(self, timeout_s: float = 0.0) -> int:
        if self.paused:
            return 0
        callbacks, self.waiting = self.waiting, []
        for on_done in callbacks:
            on_done(self.error)
        return len(callbacks)


@dataclass
class Harness:
    pipeline: Pipeline
    tracker: OffsetTracker
    sender: FakeSender
    sink: FakeDeadLetters
    clock: ManualClock
    metrics: Metrics
    offsets: dict[TopicPartition, int] = field(default_factory=dict)

    def handle(
        self,
        document: JSONObject | None = None,
        *,
        value: bytes | None = None,
        age_ms: int = 0,
        tp: TopicPartition = TP,
    ) -> int:
        """Feeds the next message of `tp` (JSON of `document`, or raw `value`); its offset."""
        offset = self.offsets.get(tp, 0)
        self.offsets[tp] = offset + 1
        body = value if document is None else json.dumps(document).encode()
        timestamp_ms = to_ms(self.clock.wall_s()) - age_ms
        meta = KafkaMeta(tp[0], tp[1], offset, timestamp_ms=timestamp_ms)
        self.pipeline.handle(RawMessage(meta, body))
        return offset

    def drain(self) -> None:
        """Settles every request sent so far (their gates must be open)."""
        deadline = time.monotonic() + WAIT_S
        while self.pipeline.in_flight_requests and time.monotonic() < deadline:
            self.pipeline.tick(0.05)
        assert self.pipeline.in_flight_requests == 0, "requests still in flight"

    def wait_for_calls(self, count: int) -> None:
        deadline = time.monotonic() + WAIT_S
        while len(self.sender.calls) < count and time.monotonic() < deadline:
            time.sleep(0.001)
        assert len(self.sender.calls) == count

    @property
    def position(self) -> int | None:
        return self.tracker.committable(TP)

    def sample(self, name: str, **labels: str) -> float:
        self.pipeline.publish_counts()  # the service does this every loop turn
        value = self.metrics.registry.get_sample_value(f"braze_consumer_{name}", labels)
        return 0.0 if value is None else value


@pytest.fixture
def make() -> Iterator[Callable[..., Harness]]:
    built: list[Harness] = []

    def build(
        max_recipients: int = 1,
        guard: GuardPolicy | None = None,
        cooldown_s: float = 600.0,
        warm: bool = True,
        wire: object = None,
    ) -> Harness:
        sender, sink, clock, metrics = FakeSender(), FakeDeadLetters(), ManualClock(), Metrics()
        tracker = OffsetTracker()
        settings = PipelineSettings(
            max_in_flight=4,
            hold=HoldPolicy(initial_probe_interval_s=1.0, max_probe_interval_s=4.0),
            guard=guard or GuardPolicy(window=100, max_share=0.9, min_events=100),
            rejected_target_cooldown_s=cooldown_s,
        )
        pipeline = Pipeline(
            rules=load_rules_text(RULES),
            batcher=Batcher[Ticket](max_recipients, max_wait_ms=1_000),
            tracker=tracker,
            sender=sender,
            dead_letters=sink,
            metrics=metrics,
            clock=clock,
            settings=settings,
            wire=wire,  # type: ignore[arg-type]  # a fake WireDecoder
        )
        pipeline.assign([TP, TP1])
        harness = Harness(pipeline, tracker, sender, sink, clock, metrics)
        built.append(harness)
        if warm:
            # Braze has taken a send for both targets, so their batches may go out together
            # (an untried target gets one batch at a time). On TP1, so TP's offsets start at 0.
            harness.handle({"type": "both", "user": "warm"}, tp=TP1)
            harness.clock.advance(1.0)
            harness.pipeline.tick()
            harness.drain()
            sender.calls.clear()
            pipeline.stats = PipelineStats()
            tracker.take_commits()
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
    h.pipeline.tick(0.05)
    assert h.position is None
    assert h.tracker.take_commits() == {}
    h.sender.release()
    h.drain()
    assert h.position == 1
    assert h.tracker.take_commits() == {TP: Commit(offset=1, metadata="")}
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
    h.clock.advance(0.999)
    h.pipeline.tick()
    assert h.sender.calls == []
    h.clock.advance(0.001)
    h.pipeline.tick()
    h.drain()
    assert h.position == 1


def saturate(h: Harness) -> None:
    """Four requests (max_in_flight) on the wire and a full batch queued behind them."""
    h.sender.hold("canvas-1")
    for n in range(10):
        h.handle({"type": "one", "user": f"u-{n}"})
    h.wait_for_calls(4)


def test_a_partial_batch_waits_longer_while_requests_queue(make: Callable[..., Harness]) -> None:
    h = make(max_recipients=2)
    saturate(h)
    h.handle({"type": "one", "user": "late"})
    h.clock.advance(1.0)  # max_wait_ms: due, but it would only queue behind the others
    h.pipeline.tick()
    assert h.pipeline.buffered == 1
    h.clock.advance(8.999)
    h.pipeline.tick()
    assert h.pipeline.buffered == 1
    h.clock.advance(0.001)  # PARTIAL_WAIT_FACTOR x max_wait_ms: queued as it is
    h.pipeline.tick()
    assert h.pipeline.buffered == 0
    h.sender.release()
    h.drain()
    assert h.position == 11
    assert [len(recipients) for _, recipients in h.sender.calls] == [2, 2, 2, 2, 2, 1]


def test_a_partial_batch_kept_open_fills_up(make: Callable[..., Harness]) -> None:
    h = make(max_recipients=2)
    saturate(h)
    h.handle({"type": "one", "user": "late"})
    h.clock.advance(2.0)
    h.pipeline.tick()
    h.handle({"type": "one", "user": "later"})  # the consumer resumed: it joins, the batch is full
    assert h.pipeline.buffered == 0
    h.sender.release()
    h.drain()
    assert h.position == 12
    assert [len(recipients) for _, recipients in h.sender.calls] == [2] * 6


def test_a_partial_batch_goes_at_max_wait_once_the_queue_is_gone(
    make: Callable[..., Harness],
) -> None:
    h = make(max_recipients=2)
    saturate(h)
    h.sender.release()
    h.drain()  # nothing queued any more
    h.handle({"type": "one", "user": "late"})
    h.clock.advance(1.0)
    h.pipeline.tick()
    assert h.pipeline.buffered == 0


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
        h.pipeline.tick(WAIT_S)  # the one request just released
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
        h.pipeline.tick(WAIT_S)
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
    h.pipeline.assign([dlq_tp])
    raw = RawMessage(KafkaMeta("t", 0, 40), json.dumps({"type": "both", "user": "u"}).encode())
    h.pipeline.handle(raw, (dlq_tp, 9), only_rule)
    h.drain()
    assert sorted(key.target_id for key, _ in h.sender.calls) == targets
    assert h.pipeline.stats.skipped == skipped
    assert h.tracker.committable(dlq_tp) == 10  # the replay position, not the event's
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


def test_rejected_recipient_commits_only_after_the_dead_letter_ack(
    make: Callable[..., Harness],
) -> None:
    reason, status, attempts = "braze_rejected", 400, 1
    h = make(max_recipients=2)
    h.sink.paused = True
    h.handle({"type": "one", "user": "u-ok"})
    h.handle({"type": "one", "user": "reject-1"})
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
    assert letter.first_failed_at == FAILED_AT
    assert h.sample("events_dead_lettered_total", rule="canvas-rule", reason=reason) == 0
    h.sink.paused = False
    h.pipeline.tick()
    assert h.position == 2
    assert h.pipeline.dead_lettered == {reason: 1}
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
    h.pipeline.tick()
    assert h.position == 1


def test_mapping_failure_is_dead_lettered_with_its_rule(make: Callable[..., Harness]) -> None:
    h = make()
    h.handle({"type": "mail", "user": "u"})  # no `email` field
    [letter] = h.sink.written
    assert (letter.reason, letter.rule_id) == ("mapping_error", "needs-email")
    assert "recipient.email" in letter.error
    h.pipeline.tick()
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
        h.pipeline.tick()  # the write fails; a retry is scheduled
        assert len(h.sink.written) == attempt
        assert h.pipeline.dead_letters_unacked == 1
        h.pipeline.tick()
        h.clock.advance(0.499)
        h.pipeline.tick()
        assert len(h.sink.written) == attempt, "retried before its backoff"
        assert h.position is None
        h.clock.advance(30.0)
        h.pipeline.tick()
        assert len(h.sink.written) == attempt + 1, "not retried after the longest backoff"
    assert h.sample("dlq_write_failures_total") == failures
    h.sink.error = None
    h.pipeline.tick()
    assert h.position == 2
    assert h.pipeline.dead_letters_unacked == 0
    first, *rest = h.sink.written
    assert all(letter == first for letter in rest), "a retry must write the same record"


@pytest.mark.parametrize(
    ("kinds", "halts_at"),
    [
        pytest.param(["bad"] * 3, None, id="fewer than min_events"),
        pytest.param(["bad"] * 4, 3, id="min_events reached, all dead"),
        pytest.param(["sent", "bad", "sent", "bad", "sent", "bad"], None, id="half is not more"),
        pytest.param(["sent", "bad", "reject", "bad"], 3, id="rejections count"),
        pytest.param(["skip"] * 10 + ["bad", "sent", "bad"], None, id="skips do not count"),
        pytest.param(["bad"] * 3 + ["skip"] * 10 + ["bad"], 13, id="skips do not reset"),
    ],
)
def test_guard_trips_on_a_share_of_dead_letters(
    make: Callable[..., Harness], kinds: list[str], halts_at: int | None
) -> None:
    h = make(guard=GuardPolicy(window=6, max_share=0.5, min_events=4), warm=False)

    def feed(kind: str) -> None:
        if kind == "bad":
            h.handle(value=b"x")
        elif kind == "skip":
            h.handle({"type": "unmatched"})
        else:
            h.handle({"type": "one", "user": "reject-1" if kind == "reject" else "u"})
            h.drain()

    for kind in kinds[:halts_at]:
        feed(kind)
    if halts_at is not None:
        with pytest.raises(HaltError, match="of the last 4 matched events were dead-lettered"):
            feed(kinds[halts_at])


# -- assignment generations and sender failures -------------------------------------------------


def test_send_result_from_an_older_assignment_does_not_settle(
    make: Callable[..., Harness],
) -> None:
    h = make()
    h.sender.hold("u-1")
    h.handle({"type": "one", "user": "u-1"})
    h.wait_for_calls(1)
    h.pipeline.assign([TP])  # revoked and assigned again while the request was out
    h.sender.release()
    h.drain()
    assert h.position is None
    assert h.tracker.take_commits() == {}


def test_a_rejection_from_an_older_assignment_is_not_dead_lettered(
    make: Callable[..., Harness],
) -> None:
    h = make()
    h.sender.hold("reject-1")
    h.handle({"type": "one", "user": "reject-1"})
    h.wait_for_calls(1)
    h.pipeline.assign([TP])  # revoked and assigned again while the request was out
    h.sender.release()
    h.drain()
    h.pipeline.tick()
    assert h.sink.written == []  # the event is read again; its dead letter is written then
    assert h.position is None


def test_dead_letter_ack_from_an_older_assignment_does_not_settle(
    make: Callable[..., Harness],
) -> None:
    h = make()
    h.handle(value=b"x")
    h.pipeline.assign([TP])
    h.pipeline.tick()
    assert h.position is None
    assert h.tracker.take_commits() == {}


def test_dead_letter_retry_from_an_older_assignment_is_dropped(
    make: Callable[..., Harness],
) -> None:
    h = make()
    h.handle(value=b"x")
    h.sink.error = "broker unreachable"
    h.pipeline.tick()
    h.pipeline.assign([TP])  # the new owner re-reads the event and dead-letters it itself
    h.sink.error = None
    h.clock.advance(60.0)
    h.pipeline.tick()
    assert len(h.sink.written) == 1
    assert h.pipeline.dead_letters_unacked == 0


def test_client_closed_leaves_the_units_unsettled(make: Callable[..., Harness]) -> None:
    h = make(max_recipients=2)
    h.sender.raises = ClientClosedError("closing")
    h.handle({"type": "one", "user": "u-1"})
    h.handle({"type": "one", "user": "u-2"})
    h.drain()
    assert h.position is None
    assert h.tracker.unsettled(TP) == 2
    assert h.sink.written == []


def test_unexpected_sender_error_holds_the_batch(make: Callable[..., Harness]) -> None:
    h = make(max_recipients=2)
    h.sender.raises = RuntimeError("bug in the client")
    h.handle({"type": "one", "user": "u-1"})
    h.handle({"type": "one", "user": "u-2"})
    h.drain()
    assert h.sink.written == []
    assert h.pipeline.holding
    assert h.position is None
    h.sender.raises = None
    h.clock.advance(1.0)
    h.pipeline.tick()  # the probe
    h.drain()
    assert h.position == 2
    assert not h.pipeline.holding


# -- holding through failures of Braze or the deployment ----------------------------------------


def _hold_on(h: Harness, cause: HoldCause, events: int = 1) -> None:
    """Make Braze fail with `cause` and feed `events` sends: the pipeline holds."""
    h.sender.failing = cause
    for n in range(events):
        h.handle({"type": "one", "user": f"u-{n}"})
    h.drain()
    assert h.pipeline.holding


@pytest.mark.parametrize("cause", list(HoldCause), ids=[c.value for c in HoldCause])
def test_a_system_failure_holds_and_dead_letters_nothing(
    make: Callable[..., Harness], cause: HoldCause
) -> None:
    h = make()
    _hold_on(h, cause, events=3)
    assert h.sink.written == []
    assert h.position is None
    assert not h.pipeline.wants_input  # the service pauses the partitions
    assert h.sample("braze_holding", cause=cause.value) == 1
    assert sum(h.sample("braze_holding", cause=c.value) for c in HoldCause) == 1
    h.handle({"type": "one", "user": "u-new"})  # already fetched: parked, not sent
    assert len(h.sender.calls) == 3


def test_probes_one_request_at_a_time_with_capped_exponential_backoff(
    make: Callable[..., Harness],
) -> None:
    h = make()
    _hold_on(h, HoldCause.OUTAGE, events=3)
    sent_at: list[float] = []
    for _ in range(5):
        calls = len(h.sender.calls)
        for _step in range(100):  # 10 s in 0.1 s steps
            h.clock.advance(0.1)
            h.pipeline.tick()
            h.drain()
            if len(h.sender.calls) > calls:
                break
        assert len(h.sender.calls) == calls + 1, "one probe, not a storm"
        sent_at.append(h.clock.monotonic_s())
    gaps = [round(b - a, 1) for a, b in itertools.pairwise(sent_at)]
    assert gaps == [2.0, 4.0, 4.0, 4.0]  # doubling from 1 s, capped at max_probe_interval_s
    assert h.sample("hold_probes_total", result="failed") == 5
    assert h.sink.written == []


def test_a_probe_answered_resumes_at_full_speed(make: Callable[..., Harness]) -> None:
    h = make()
    _hold_on(h, HoldCause.OUTAGE, events=3)
    h.sender.failing = None
    h.clock.advance(1.0)
    h.pipeline.tick()  # the probe goes out
    h.drain()  # ... is answered: every parked batch goes out at once
    h.drain()
    assert not h.pipeline.holding
    assert h.pipeline.wants_input
    assert h.position == 3
    assert h.pipeline.stats.recipients_sent == 3
    assert h.sample("braze_holding", cause="outage") == 0
    assert h.sample("hold_probes_total", result="ok") == 1
    assert h.sink.written == []


def test_a_probe_rejected_for_the_events_fault_also_ends_the_hold(
    make: Callable[..., Harness],
) -> None:
    h = make()
    h.sender.failing = HoldCause.OUTAGE
    h.handle({"type": "one", "user": "reject-1"})
    h.handle({"type": "one", "user": "u-2"})
    h.drain()
    h.sender.failing = None
    h.clock.advance(1.0)
    h.pipeline.tick()
    h.drain()
    h.drain()
    assert not h.pipeline.holding
    assert [d.reason for d in h.sink.written] == ["braze_rejected"]
    assert h.position == 2


def test_auth_hold_prepares_each_probe(make: Callable[..., Harness]) -> None:
    h = make()
    _hold_on(h, HoldCause.AUTH)
    for _ in range(3):
        h.clock.advance(5.0)
        h.pipeline.tick()
        h.drain()
    assert h.sender.probes == [HoldCause.AUTH] * 3


def test_events_that_grow_stale_while_held_are_skipped_not_sent(
    make: Callable[..., Harness],
) -> None:
    h = make()
    h.sender.failing = HoldCause.OUTAGE
    h.handle({"type": "old", "user": "u-old"}, age_ms=3_000_000)  # stale in 600 s
    h.handle({"type": "one", "user": "u-one"})
    h.drain()
    h.sender.failing = None
    h.clock.advance(601.0)
    h.pipeline.tick()
    h.drain()
    h.drain()
    assert h.sample("events_skipped_total", rule="fresh-only", reason="max_event_age") == 1
    assert [r[0]["external_user_id"] for _, r in h.sender.calls[2:]] == ["u-one"]
    assert h.position == 2
    assert h.sink.written == []


def test_nothing_parked_lets_input_flow_so_the_next_batch_probes(
    make: Callable[..., Harness],
) -> None:
    h = make()
    _hold_on(h, HoldCause.OUTAGE, events=1)
    h.pipeline.revoke([TP], timeout_s=0.0)  # its parked batch is dropped: the new owner sends it
    assert h.pipeline.holding
    assert h.pipeline.wants_input
    h.pipeline.assign([TP])
    h.sender.failing = None
    h.handle({"type": "one", "user": "u-next"})
    h.clock.advance(1.0)
    h.pipeline.tick()
    h.drain()
    assert not h.pipeline.holding
    assert [r[0]["external_user_id"] for _, r in h.sender.calls] == ["u-0", "u-next"]


# -- a target Braze rejects as a whole ----------------------------------------------------------


def test_a_target_rejected_as_a_whole_is_dead_lettered_without_requests(
    make: Callable[..., Harness],
) -> None:
    h = make(cooldown_s=60.0)
    h.sender.whole_reject = True
    h.handle({"type": "one", "user": "u-1"})
    h.drain()
    h.sender.whole_reject = False
    for n in range(2, 6):
        h.handle({"type": "one", "user": f"u-{n}"})
    h.drain()
    assert len(h.sender.calls) == 1
    assert [d.error for d in h.sink.written] == ["Invalid Canvas ID"] * 5
    assert h.sample("target_rejections_total", rule="canvas-rule", target="canvas-1") == 4
    h.handle({"type": "both", "user": "u-9"})  # another target is unaffected
    h.drain()
    assert [k.target_id for k, _ in h.sender.calls] == ["canvas-1", "campaign-1"]
    h.clock.advance(60.0)
    h.handle({"type": "one", "user": "u-10"})  # the cooldown is over: Braze is asked again
    h.drain()
    assert [k.target_id for k, _ in h.sender.calls][-1] == "canvas-1"


# -- lifecycle: revoke, inherited progress, commits ----------------------------------------------


def test_revoke_sends_only_the_revoked_partitions_batches(make: Callable[..., Harness]) -> None:
    h = make(max_recipients=50)
    h.handle({"type": "one", "user": "u-1"}, tp=TP)
    h.handle({"type": "mail", "email": "a@example.com"}, tp=TP1)
    commits = h.pipeline.revoke([TP1], timeout_s=WAIT_S)
    assert [k.target_id for k, _ in h.sender.calls] == ["campaign-2"]
    assert commits == {TP1: Commit(offset=2, metadata="")}  # after the warm-up event
    assert h.pipeline.open_batches == 1  # TP's batch still waits for its turn


def test_revoke_while_holding_drops_the_revoked_parked_work(make: Callable[..., Harness]) -> None:
    h = make()
    h.sender.failing = HoldCause.OUTAGE
    h.handle({"type": "one", "user": "u-0"}, tp=TP)
    h.handle({"type": "one", "user": "u-1"}, tp=TP1)
    h.drain()
    assert h.pipeline.revoke([TP1], timeout_s=0.0) == {}  # nothing can settle while held
    h.sender.failing = None
    h.clock.advance(1.0)
    h.pipeline.tick()
    h.drain()
    h.drain()
    sent = [r[0]["external_user_id"] for _, r in h.sender.calls[2:]]
    assert sent == ["u-0"]  # u-1 belongs to the new owner now


def test_events_settled_by_an_earlier_owner_are_not_sent_again(
    make: Callable[..., Harness],
) -> None:
    h = make()
    h.pipeline.assign([TP], {TP: ((1, 3),)})  # offsets 1 and 2 were settled beyond commit 0
    for n in range(4):
        h.handle({"type": "one", "user": f"u-{n}"})
    h.drain()
    assert [r[0]["external_user_id"] for _, r in h.sender.calls] == ["u-0", "u-3"]
    assert h.position == 4
    assert h.pipeline.stats.already_settled == 2
    assert h.sample("events_already_settled_total", topic="t") == 2


def test_out_of_order_completions_travel_in_the_commit_metadata(
    make: Callable[..., Harness],
) -> None:
    h = make()
    h.sender.hold("u0")
    for n in range(3):
        h.handle({"type": "one", "user": f"u{n}"})
    h.wait_for_calls(3)
    deadline = time.monotonic() + WAIT_S
    while h.pipeline.in_flight_requests > 1 and time.monotonic() < deadline:
        h.pipeline.tick(0.05)
    [commit] = h.tracker.take_commits().values()
    assert commit.offset == 0
    assert decode(commit.metadata, 0) == ((1, 3),)


def test_an_untried_target_gets_one_batch_at_a_time(make: Callable[..., Harness]) -> None:
    h = make(warm=False)
    h.sender.hold("canvas-1")
    for n in range(3):
        h.handle({"type": "one", "user": f"u-{n}"})
    h.wait_for_calls(1)
    time.sleep(0.05)
    assert len(h.sender.calls) == 1  # the others wait for Braze's first answer
    h.sender.release()
    h.drain()
    h.drain()
    assert len(h.sender.calls) == 3
    assert h.position == 3


def test_a_rejected_target_costs_no_request_for_its_queued_batches(
    make: Callable[..., Harness],
) -> None:
    h = make(warm=False)
    h.sender.whole_reject = True
    for n in range(5):
        h.handle({"type": "one", "user": f"u-{n}"})
    h.drain()
    h.drain()
    assert len(h.sender.calls) == 1
    assert len(h.sink.written) == 5


def test_an_event_over_max_event_bytes_is_dead_lettered_unparsed(
    make: Callable[..., Harness],
) -> None:
    h = make()
    value = b"{" + b" " * 1_048_576 + b"}"  # valid JSON, but over the 1 MiB default
    h.handle(value=value)
    [letter] = h.sink.written
    assert (letter.reason, letter.rule_id) == ("too_large", "-")
    assert "1048578 bytes" in letter.error
    assert letter.raw.value == value
    assert h.sender.calls == []
    h.pipeline.tick()
    assert h.position == 1


def test_unsettled_bytes_are_counted_until_settled(make: Callable[..., Harness]) -> None:
    h = make()
    h.sender.hold("u-1")
    h.handle({"type": "one", "user": "u-1", "pad": "x" * 1000})
    h.handle({"type": "unmatched", "pad": "y" * 5000})  # settled at once: not counted
    assert 1000 < h.pipeline.unsettled_bytes() < 1100
    h.sender.release()
    h.drain()
    assert h.pipeline.unsettled_bytes() == 0


# -- fuzzing ------------------------------------------------------------------------------------

_JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
_JSON = st.recursive(
    _JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_EVENT_BYTES = (
    st.binary(max_size=300)
    | st.builds(
        lambda doc: json.dumps(doc).encode(),
        st.fixed_dictionaries(
            {"type": st.sampled_from(["one", "both", "mail", "old", "x"])},
            optional={"user": _JSON, "email": _JSON, "data": _JSON},
        ),
    )
    | st.none()
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.lists(_EVENT_BYTES, min_size=1, max_size=8))
def test_no_bytes_raise_out_of_the_pipeline_and_every_event_settles(
    values: list[bytes | None],
) -> None:
    sender, sink, clock, metrics = FakeSender(), FakeDeadLetters(), ManualClock(), Metrics()
    tracker = OffsetTracker()
    pipeline = Pipeline(
        rules=load_rules_text(RULES),
        batcher=Batcher[Ticket](50, max_wait_ms=1_000),
        tracker=tracker,
        sender=sender,
        dead_letters=sink,
        metrics=metrics,
        clock=clock,
        settings=PipelineSettings(max_in_flight=2, guard=GuardPolicy(min_events=1_000)),
    )
    harness = Harness(pipeline, tracker, sender, sink, clock, metrics)
    try:
        pipeline.assign([TP])
        for value in values:
            harness.handle(value=value)
        pipeline.flush()
        clock.advance(1.0)
        assert pipeline.settle(WAIT_S)
        assert tracker.take_commits()[TP].offset == len(values)
    finally:
        pipeline.close()


def test_a_lost_partition_does_not_take_others_events_down_with_it(
    make: Callable[..., Harness],
) -> None:
    h = make(max_recipients=50)
    h.handle({"type": "one", "user": "u-lost"}, tp=TP1)
    h.handle({"type": "one", "user": "u-kept"}, tp=TP)  # the same open batch
    h.pipeline.lose([TP1])
    h.drain()
    assert [r for _, rs in h.sender.calls for r in rs] == [{"external_user_id": "u-kept"}]
    assert h.position == 1


# -- Schema Registry records: the registry's failure waits, the event's is a dead letter --------
# A fake wire decoder stands for the registry (the real one: integration test_schema_events.py).

INFO = SchemaInfo(id=7, type="AVRO", subject="t-value", version=1)


class FakeWire:
    """Decodes `frame(7, json)`; fails as the registry would while `down`."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0

    def decode(self, data: bytes, topic: str, is_key: bool = False) -> tuple[JSONValue, SchemaInfo]:
        self.calls += 1
        if self.down:
            raise RegistryUnavailableError("schema id 7: ConnectError: connection refused")
        if data[wire.HEADER_BYTES :] == b"bad":
            raise UndecodableError("AVRO schema 7: bytes do not decode")
        return json.loads(data[wire.HEADER_BYTES :]), INFO


def record(document: dict[str, object]) -> bytes:
    return wire.frame(7, json.dumps(document).encode())


def test_a_record_decodes_with_its_schema_and_is_sent(make: Callable[..., Harness]) -> None:
    fake = FakeWire()
    h = make(wire=fake)
    h.handle(value=record({"type": "one", "user": "u-1"}))
    h.drain()
    assert [r for _, r in h.sender.calls] == [[{"external_user_id": "u-1"}]]
    assert h.position == 1


def test_the_registry_down_makes_events_wait_in_order_and_loses_nothing(
    make: Callable[..., Harness],
) -> None:
    fake = FakeWire()
    h = make(wire=fake)
    fake.down = True
    h.handle(value=record({"type": "one", "user": "u-1"}))  # offset 0: waits for its schema
    h.handle({"type": "one", "user": "u-2"})  # offset 1, plain JSON: waits behind it
    h.handle({"type": "one", "user": "u-3"}, tp=TP1)  # another partition goes on
    h.drain()
    assert [r for _, r in h.sender.calls] == [[{"external_user_id": "u-3"}]]
    assert h.sink.written == []
    assert h.pipeline.waiting_for_schema == 2
    assert h.position is None
    assert h.sample("schema_registry_waiting_events") == 2
    # Retries back off: 1 s, then 2 s.
    h.clock.advance(1.0)
    h.pipeline.tick()
    assert fake.calls == 2
    h.clock.advance(1.0)
    h.pipeline.tick()
    assert fake.calls == 2  # not yet: the next wait is 2 s
    fake.down = False
    h.clock.advance(1.0)
    h.pipeline.tick()
    h.drain()
    users = [r[0]["external_user_id"] for _, r in h.sender.calls]
    assert users == ["u-3", "u-1", "u-2"]  # u-1 before u-2: the partition's order kept
    assert h.sink.written == []
    assert h.pipeline.waiting_for_schema == 0
    assert h.position == 2
    assert h.sample("schema_registry_failures_total") == 2


def test_a_waiting_event_that_matches_nothing_settles_once_decoded(
    make: Callable[..., Harness],
) -> None:
    fake = FakeWire()
    h = make(wire=fake)
    fake.down = True
    h.handle(value=record({"type": "nothing-matches"}))
    fake.down = False
    h.clock.advance(1.0)
    h.pipeline.tick()
    assert h.position == 1
    assert h.sender.calls == []


def test_undecodable_bytes_are_an_invalid_payload_dead_letter(
    make: Callable[..., Harness],
) -> None:
    h = make(wire=FakeWire())
    value = wire.frame(7, b"bad")
    h.handle(value=value)
    [letter] = h.sink.written
    assert (letter.reason, letter.rule_id) == ("invalid_payload", "-")
    assert "do not decode" in letter.error
    assert letter.raw.value == value  # the original bytes, unchanged
    h.pipeline.tick()
    assert h.position == 1


def test_a_record_without_a_configured_registry_is_dead_lettered(
    make: Callable[..., Harness],
) -> None:
    h = make()
    h.handle(value=record({"type": "one", "user": "u-1"}))
    [letter] = h.sink.written
    assert letter.reason == "invalid_payload"
    assert "no kafka.schema_registry.url is set" in letter.error


def test_losing_a_partition_drops_its_waiting_events(make: Callable[..., Harness]) -> None:
    fake = FakeWire()
    h = make(wire=fake)
    fake.down = True
    h.handle(value=record({"type": "one", "user": "u-1"}))
    h.pipeline.lose([TP])
    assert h.pipeline.waiting_for_schema == 0
    fake.down = False
    h.clock.advance(60)
    h.pipeline.tick()
    h.drain()
    assert h.sender.calls == []  # the next owner reads it again


def test_revoke_and_drain_do_not_wait_for_events_waiting_for_the_registry(
    make: Callable[..., Harness],
) -> None:
    fake = FakeWire()
    h = make(wire=fake)
    fake.down = True
    h.handle(value=record({"type": "one", "user": "u-1"}))
    assert h.pipeline.settle(5.0) is True  # at once: nothing else is unsettled
    assert h.pipeline.unsettled() == 1
    assert h.pipeline.revoke([TP], timeout_s=5.0) == {}  # nothing settled to commit
    assert h.pipeline.waiting_for_schema == 0


def test_a_revoke_during_a_hold_does_not_wait_for_what_cannot_settle(
    make: Callable[..., Harness],
) -> None:
    h = make()
    _hold_on(h, HoldCause.OUTAGE, events=3)
    started = time.monotonic()
    commits = h.pipeline.revoke([TP], timeout_s=5.0)
    assert time.monotonic() - started < 1.0  # not the whole revoke timeout
    assert commits == {}  # nothing settled: the next owner reads the 3 events again
    assert h.sink.written == []
