"""The loop's handling of the broker's answers to offset commits: a refused commit is made again
(after a pause), even when nothing settles after it; only acknowledged offsets count."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, cast

from consumer.clock import ManualClock
from consumer.kafka_io import CommitOutcome, KafkaSource
from consumer.metrics import Metrics
from consumer.offsets import Commit, OffsetTracker, TopicPartition
from consumer.pipeline import Pipeline
from consumer.service import ConsumerService, LoopSettings

TP: TopicPartition = ("t", 0)


class Source:
    """Records commits; the test decides what the broker answers."""

    def __init__(self) -> None:
        self.sent: list[dict[TopicPartition, int]] = []
        self.outcomes: list[CommitOutcome] = []

    def subscribe(self, topics: Iterable[str]) -> None:
        pass

    def committed(self, tps: Sequence[TopicPartition], timeout_s: float) -> dict[Any, Commit]:
        return {}

    def commit(self, commits: dict[TopicPartition, Commit], *, asynchronous: bool) -> bool:
        self.sent.append({tp: c.offset for tp, c in commits.items()})
        return True

    def take_commit_outcomes(self) -> list[CommitOutcome]:
        outcomes, self.outcomes = self.outcomes, []
        return outcomes

    def pause(self, tps: Sequence[TopicPartition]) -> None:
        pass

    def partition_counts(self, topics: Iterable[str], timeout_s: float) -> dict[str, int]:
        return {"t": 1}


class TrackerPipeline:
    """The pipeline's commit side: a real OffsetTracker."""

    def __init__(self) -> None:
        self.tracker = OffsetTracker()

    def assign(self, tps: list[TopicPartition], inherited: Any = None) -> None:
        for tp in tps:
            self.tracker.assign(tp)

    def take_commits(self) -> dict[TopicPartition, Commit]:
        return self.tracker.take_commits()

    def recommit(self, tps: list[TopicPartition]) -> None:
        self.tracker.recommit(tps)


def _service() -> tuple[ConsumerService, Source, TrackerPipeline, ManualClock, Metrics]:
    source, pipeline, clock, metrics = Source(), TrackerPipeline(), ManualClock(), Metrics()
    service = ConsumerService(
        cast(Pipeline, pipeline),
        lambda _svc: cast(KafkaSource, source),
        metrics,
        None,
        LoopSettings(100, 1 << 20, 0.0, 1.0, 1.0),
        clock=clock,
    )
    service.on_assign([TP])
    return service, source, pipeline, clock, metrics


def _commits_total(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value("braze_consumer_commits_total")
    return 0.0 if value is None else value


def test_a_refused_commit_is_made_again_after_a_pause() -> None:
    service, source, pipeline, clock, metrics = _service()
    pipeline.tracker.track(TP, 0, 1)
    pipeline.tracker.settle(TP, 0)
    clock.advance(1)
    service._commit_due(clock.monotonic_s())
    assert source.sent == [{TP: 1}]
    # The broker refuses it; nothing settles after that.
    source.outcomes.append(CommitOutcome(acked={}, failed={TP: "NOT_COORDINATOR"}))
    service._take_commit_outcomes()
    assert _commits_total(metrics) == 0
    clock.advance(0.5)
    service._commit_due(clock.monotonic_s())
    assert source.sent == [{TP: 1}]  # not at once: the broker is given a moment
    clock.advance(0.6)
    service._commit_due(clock.monotonic_s())
    assert source.sent == [{TP: 1}, {TP: 1}]
    source.outcomes.append(CommitOutcome(acked={TP: 1}, failed={}))
    service._take_commit_outcomes()
    assert _commits_total(metrics) == 1
    clock.advance(1)
    service._commit_due(clock.monotonic_s())
    assert source.sent == [{TP: 1}, {TP: 1}]  # acknowledged: nothing more to commit


def test_an_outcome_for_a_partition_no_longer_held_is_not_retried() -> None:
    service, source, pipeline, clock, _metrics = _service()
    pipeline.tracker.track(TP, 0, 1)
    pipeline.tracker.settle(TP, 0)
    other: TopicPartition = ("t", 9)
    source.outcomes.append(CommitOutcome(acked={}, failed={other: "UNKNOWN_MEMBER_ID"}))
    service._take_commit_outcomes()
    clock.advance(2)
    service._commit_due(clock.monotonic_s())
    assert source.sent == [{TP: 1}]
