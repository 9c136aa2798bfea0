"""The loop's offset commits when the broker may refuse them: a refused (or unsendable) commit is
made again after a pause, even when nothing settles after it; and since an asynchronous commit's
answer is not reported (kafka_io), the latest commits are repeated for a while after news."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, cast

from consumer.clock import ManualClock
from consumer.kafka_io import KafkaSource
from consumer.metrics import Metrics
from consumer.offsets import Commit, OffsetTracker, TopicPartition
from consumer.pipeline import Pipeline
from consumer.service import ConsumerService, LoopSettings

TP: TopicPartition = ("t", 0)


class Source:
    """Records commits; `refuse` makes the next ones fail as a refused commit does."""

    def __init__(self) -> None:
        self.sent: list[dict[TopicPartition, int]] = []
        self.refuse = False

    def subscribe(self, topics: Iterable[str]) -> None:
        pass

    def committed(self, tps: Sequence[TopicPartition], timeout_s: float) -> dict[Any, Commit]:
        return {}

    def commit(self, commits: dict[TopicPartition, Commit], *, asynchronous: bool) -> bool:
        self.sent.append({tp: c.offset for tp, c in commits.items()})
        return not self.refuse

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

    @property
    def commits_waiting(self) -> bool:
        return self.tracker.changed


def _service() -> tuple[ConsumerService, Source, TrackerPipeline, ManualClock]:
    source, pipeline, clock = Source(), TrackerPipeline(), ManualClock()
    service = ConsumerService(
        cast(Pipeline, pipeline),
        lambda _svc: cast(KafkaSource, source),
        Metrics(),
        None,
        LoopSettings(100, 1 << 20, 0.0, 1.0, 1.0),
        clock=clock,
    )
    service.on_assign([TP])
    return service, source, pipeline, clock


def _settle_one(pipeline: TrackerPipeline, offset: int) -> None:
    pipeline.tracker.track(TP, offset, 1)
    pipeline.tracker.settle(TP, offset)


def _turns(service: ConsumerService, clock: ManualClock, seconds: float) -> None:
    """The loop's commit step every 0.2 s (its idle poll) for `seconds`."""
    for _ in range(round(seconds / 0.2)):
        clock.advance(0.2)
        service._commit_due(clock.monotonic_s())


def test_a_refused_commit_is_made_again_after_a_pause() -> None:
    service, source, pipeline, clock = _service()
    _settle_one(pipeline, 0)
    source.refuse = True
    _turns(service, clock, 0.2)
    assert source.sent == [{TP: 1}]
    source.refuse = False
    _turns(service, clock, 0.6)
    assert source.sent == [{TP: 1}]  # not at once: the broker is given a moment
    _turns(service, clock, 0.6)
    assert source.sent == [{TP: 1}, {TP: 1}]  # nothing settled since, and still committed


def test_the_latest_commit_is_repeated_for_a_minute_after_news_then_not() -> None:
    service, source, pipeline, clock = _service()
    _settle_one(pipeline, 0)
    _turns(service, clock, 0.2)
    assert source.sent == [{TP: 1}]
    _turns(service, clock, 30)
    assert 5 <= len(source.sent) <= 8  # every 5 s, though nothing changed
    assert all(sent == {TP: 1} for sent in source.sent)
    _turns(service, clock, 40)
    quiet = len(source.sent)
    _turns(service, clock, 60)
    assert len(source.sent) == quiet  # a minute after the last news: no more repeats
    _settle_one(pipeline, 1)
    _turns(service, clock, 0.2)
    assert source.sent[-1] == {TP: 2}


def test_a_partition_no_longer_held_is_not_committed_again() -> None:
    service, source, pipeline, clock = _service()
    _settle_one(pipeline, 0)
    _turns(service, clock, 0.2)
    service._forget([TP])  # the tracker still has it: the service must not commit it
    _turns(service, clock, 30)
    assert source.sent == [{TP: 1}]
