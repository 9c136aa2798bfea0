"""Stage 5 guard: stop the service when most matched events are being dead-lettered.

A bad rules deploy can turn every event into a dead letter; rather than empty the stream into the
dead-letter topic, the service stops (exit 1) once more than `max_share` of the last `window`
settled outcomes were dead letters (arroyo's limit, as a ratio instead of a streak). Skipped events
are not outcomes: they neither trip the guard nor dilute it. Failures of Braze or the deployment
never reach it, since they hold instead of dead-lettering.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GuardPolicy:
    window: int = 1_000
    max_share: float = 0.5
    min_events: int = 100  # judged only once this many outcomes are in the window


class DeadLetterGuard:
    """A sliding window of the last outcomes: sent (False) or dead-lettered (True)."""

    def __init__(self, policy: GuardPolicy) -> None:
        if policy.window < 1 or not 0.0 < policy.max_share <= 1.0:
            raise ValueError("window must be >= 1 and max_share in (0, 1]")
        self._policy = policy
        self._outcomes: deque[bool] = deque(maxlen=policy.window)
        self._dead = 0
        self._threshold = min(policy.min_events, policy.window)

    def record(self, *, dead_lettered: bool) -> str | None:
        """Add one outcome; returns why to stop when the share is exceeded, else None."""
        outcomes = self._outcomes
        judged = len(outcomes) >= self._threshold
        if len(outcomes) == outcomes.maxlen and outcomes[0]:
            self._dead -= 1
        outcomes.append(dead_lettered)
        self._dead += dead_lettered
        if judged and not dead_lettered:
            # Already judged, and a send only lowers the share: it cannot trip now if it did
            # not before (the pipeline stops at the first trip). Spares the sum per send.
            return None
        return self.tripped()

    def record_sent(self, count: int) -> str | None:
        """`record(dead_lettered=False)` `count` times; the same answer, in one step when the
        window holds no dead letter and is already judged (the common case)."""
        outcomes = self._outcomes
        if self._dead == 0 and len(outcomes) >= self._threshold:
            outcomes.extend([False] * count)  # nothing to drop from the count, nothing to judge
            return None
        for _ in range(count):
            stop = self.record(dead_lettered=False)
            if stop is not None:
                return stop
        return None

    @property
    def share(self) -> float:
        return self._dead / len(self._outcomes) if self._outcomes else 0.0

    def tripped(self) -> str | None:
        count = len(self._outcomes)
        if count < self._threshold or self.share <= self._policy.max_share:
            return None
        return (
            f"{self._dead} of the last {count} matched events were dead-lettered "
            f"(more than {self._policy.max_share:.0%}): a bad rules deploy or bad data; "
            "stopping instead of dead-lettering the stream"
        )
