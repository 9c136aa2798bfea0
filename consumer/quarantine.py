"""Stage 4 (send): Canvases and campaigns that Braze recently rejected as a whole.

When a request fails with a 400 whose answer does not depend on the recipients (both halves of the
batch fail exactly as the whole did: an unknown Canvas or campaign id, say), further intents for
that request shape are dead-lettered at once for `cooldown_s`, without spending Braze's budget.
Pure: times are passed in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from consumer.intents import BatchKey

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Rejection:
    error: str
    until_s: float


class TargetQuarantine:
    def __init__(self, cooldown_s: float) -> None:
        self._cooldown_s = cooldown_s
        self._rejected: dict[BatchKey, _Rejection] = {}

    def reject(self, key: BatchKey, error: str, now_s: float) -> None:
        if self._cooldown_s <= 0:
            return
        if key not in self._rejected:
            log.warning(
                "Braze rejects every request to %s whatever the recipients: dead-lettering its "
                "intents without a request for %.0f s: %s",
                key.label,
                self._cooldown_s,
                error[:300],
            )
        self._rejected[key] = _Rejection(error, now_s + self._cooldown_s)

    def error(self, key: BatchKey, now_s: float) -> str | None:
        """Braze's answer for `key` while it is quarantined, else None."""
        found = self._rejected.get(key)
        if found is None:
            return None
        if now_s >= found.until_s:
            del self._rejected[key]
            return None
        return found.error
