"""The Braze request budget split among the consumer group's members: pure, no I/O.

`braze.requests_per_hour` is what the whole deployment may spend, however many replicas run. Each
member takes the part of it that matches the partitions it holds: share = its partitions / all
partitions of the subscribed topics (from Kafka's metadata), recomputed on every rebalance. The
group assigns every partition to exactly one member, so the shares add up to at most 1 as long
as a member gives partitions up (lowers its share) before another takes them (raises its own):

- cooperative rebalancing (what the service uses): a partition moves in two rounds; its old owner
  revokes it and rejoins, and only the next round assigns it to the new owner;
- eager rebalancing: every member revokes everything before rejoining, and the group hands out
  the new assignment only once all have rejoined.

So `ConsumerService` lowers the share before its revoke (or lost) callback returns, and raises it
in the assign callback. A member without partitions sends nothing, so a share of 0 costs nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from consumer.offsets import TopicPartition

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BudgetShare:
    """This member's partitions (`held`) out of those of the subscribed topics (`total`)."""

    held: int
    total: int

    @property
    def fraction(self) -> float:
        return 0.0 if self.total <= 0 else min(1.0, self.held / self.total)


def budget_share(
    assigned: Iterable[TopicPartition], partitions_per_topic: Mapping[str, int]
) -> BudgetShare:
    """The share of a member holding `assigned`, given each subscribed topic's partition count.

    A topic whose count is unknown (no metadata yet) or stale (lower than a partition held) is
    counted with at least the partitions held of it, so the share never exceeds 1.
    """
    held: dict[str, set[int]] = {}
    for topic, partition in assigned:
        held.setdefault(topic, set()).add(partition)
    total = 0
    for topic in set(partitions_per_topic) | set(held):
        mine = held.get(topic, set())
        lowest = max(mine) + 1 if mine else 0
        total += max(partitions_per_topic.get(topic, 0), lowest)
    return BudgetShare(sum(len(parts) for parts in held.values()), total)


class ShareClient(Protocol):
    """The Braze client: takes a share of the budget, says the requests per hour it makes."""

    def set_budget_share(self, share: float) -> float: ...


class ShareGauges(Protocol):
    def set_budget_share(self, share: float, requests_per_hour: float) -> None: ...


class BudgetSplit:
    """Applies this member's share to its Braze client and gauges, and logs each change."""

    def __init__(self, client: ShareClient, gauges: ShareGauges, requests_per_hour: int) -> None:
        self._client = client
        self._gauges = gauges
        self._budget = requests_per_hour
        self._last: BudgetShare | None = None

    def __call__(self, share: BudgetShare) -> None:
        per_hour = self._client.set_budget_share(share.fraction)
        self._gauges.set_budget_share(share.fraction, per_hour)
        if share != self._last:
            log.info(
                "budget share: %d of %d partitions (%.1f%%), %.0f of the %d requests/hour "
                "of braze.requests_per_hour",
                share.held,
                share.total,
                share.fraction * 100,
                per_hour,
                self._budget,
            )
            self._last = share
