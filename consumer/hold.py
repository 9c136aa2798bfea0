"""Stage 4 (send), the failure side: whether sends are held, why, and when to probe Braze again.

Pure: times are passed in. A failure of Braze or of the deployment (`HoldCause`) starts a hold;
while it lasts the pipeline sends nothing new and keeps every batch and offset, and one request at a
time probes Braze on an exponential backoff capped at `max_probe_interval_s`. The first probe that
Braze answers (sent, or rejected for the event's fault) ends the hold. Each state change is logged
once, never once per request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from consumer.braze.answers import HoldCause

log = logging.getLogger(__name__)

_ADVICE = {
    HoldCause.OUTAGE: "Braze is unavailable (5xx, timeouts or connection errors)",
    HoldCause.AUTH: "Braze refuses the API key (401/403): fix the key or its permissions; "
    "braze.api_key_file is re-read before each probe",
    HoldCause.RATE_LIMIT: "Braze keeps answering 429: the workspace's budget is spent",
    HoldCause.UNEXPECTED_RESPONSE: "the answers are not Braze's (a proxy, a redirect, "
    "a wrong braze.rest_endpoint)",
}


@dataclass(frozen=True, slots=True)
class HoldPolicy:
    initial_probe_interval_s: float = 1.0
    max_probe_interval_s: float = 30.0


class Hold:
    """The hold state machine; not thread-safe (the pipeline's consumer thread owns it)."""

    def __init__(self, policy: HoldPolicy) -> None:
        self._policy = policy
        self.cause: HoldCause | None = None
        self._since_s = 0.0
        self._interval_s = policy.initial_probe_interval_s
        self._next_probe_s = 0.0
        self.probing = False  # a probe request is under way
        self.probes = 0

    @property
    def holding(self) -> bool:
        return self.cause is not None

    def failed(self, cause: HoldCause, detail: str, now_s: float) -> bool:
        """A request failed for Braze's or the deployment's fault. True when a hold starts."""
        if self.cause is None:
            self.cause = cause
            self._since_s = now_s
            self._interval_s = self._policy.initial_probe_interval_s
            self._next_probe_s = now_s + self._interval_s
            log.warning(
                "holding: %s (%s); sending nothing new, partitions paused, offsets kept; "
                "probing Braze every %.0f s at most",
                _ADVICE[cause],
                detail[:300],
                self._policy.max_probe_interval_s,
            )
            return True
        if cause is not self.cause:
            log.warning("still holding, now because %s (%s)", _ADVICE[cause], detail[:300])
            self.cause = cause
        return False

    def probe_due(self, now_s: float) -> bool:
        return self.cause is not None and not self.probing and now_s >= self._next_probe_s

    def probe_started(self) -> None:
        self.probing = True
        self.probes += 1

    def probe_failed(self, cause: HoldCause, detail: str, now_s: float) -> None:
        """The probe met a failure again: back off (doubling, capped)."""
        self.probing = False
        self.failed(cause, detail, now_s)
        self._interval_s = min(self._policy.max_probe_interval_s, self._interval_s * 2)
        self._next_probe_s = now_s + self._interval_s
        log.info("probe failed (%s); next probe in %.1f s", cause.value, self._interval_s)

    def probe_answered(self, now_s: float) -> None:
        """Braze answered the probe: the hold is over."""
        self.probing = False
        if self.cause is not None:
            log.warning(
                "Braze answers again after %.1f s held (%s, %d probes): resuming",
                now_s - self._since_s,
                self.cause.value,
                self.probes,
            )
        self.cause = None
        self.probes = 0

    def probe_abandoned(self) -> None:
        """The probe's events were revoked or became stale before it went out."""
        self.probing = False
