"""Stage 4 (send): when to try a request again, and how to find the recipients Braze rejects.

Pure: no HTTP here. The client hands in one function that makes one attempt (and reports it as an
`Attempt`, judged by `consumer.braze.answers`), plus the clock and the sleep. A request is tried
again only where another attempt soon may help (429, 5xx, transport errors) and only a few times:
a failure that outlasts them is handed back as `held`, and the pipeline's hold takes over from
there, probing with one request at a time. `Bisection` turns a rejected batch into per-recipient
results by sending halves, and stops early when both halves fail exactly as the whole did (the
request, not a recipient, is wrong: a Canvas or campaign id Braze refuses).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import tenacity

from consumer.braze.answers import HoldCause, Verdict
from consumer.json_types import JSONValue

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 2_000
MAX_DISPATCH_ID_CHARS = 200
# Statuses where one recipient may be the cause, so halves can succeed.
SPLIT_STATUSES = frozenset({400, 413})


def may_have_been_processed(status: int | None, cause: HoldCause | None) -> bool:
    """Whether a retry of this failure may deliver twice (there is no idempotency key, section 7).

    502 failed before reaching Braze, a 429 and an auth failure were refused; a 500/503/504 or a
    transport error after the request left may or may not have been processed.
    """
    return cause is HoldCause.OUTAGE and status != 502


def cut(text: str) -> str:
    """Bound an error text (dead-letter headers carry it)."""
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def parse_json(body: bytes) -> JSONValue:
    """The body as JSON, or None when it is not JSON."""
    try:
        value: JSONValue = json.loads(body)
    except ValueError:  # UnicodeDecodeError is a ValueError too
        return None
    return value


def dispatch_id(body: JSONValue) -> str | None:
    """Braze's `dispatch_id` from a success body, if it is a sane string."""
    value = body.get("dispatch_id") if isinstance(body, dict) else None
    if isinstance(value, str) and 0 < len(value) <= MAX_DISPATCH_ID_CHARS:
        return value
    return None


def warn_about_success_body(endpoint: str, body: JSONValue) -> None:
    """A success may still carry what an operator should see: non-fatal errors, a notice."""
    if not isinstance(body, dict):
        return
    errors = body.get("errors")
    if isinstance(errors, list) and errors:
        # Non-fatal errors name users: log only how many (no user identifiers in logs).
        log.warning("Braze accepted %s with %d non-fatal errors", endpoint, len(errors))
    notice = body.get("notice")
    if isinstance(notice, str):  # e.g. the Canvas is paused: accepted, but nothing is sent
        log.warning("Braze accepted %s with a notice: %s", endpoint, notice[:200])


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """One HTTP attempt as the retry loop sees it."""

    verdict: Verdict
    cause: HoldCause | None = None  # why it failed (Braze's or the deployment's fault)
    retry_now: bool = False  # another attempt soon may help
    status: int | None  # None for transport errors
    detail: str  # error text (status and cut body, or the transport error); "" on success
    body: JSONValue  # the response body parsed as JSON; None when absent, cut or not JSON
    finished_at_s: float  # wall clock, epoch seconds
    rate_wait_s: float  # time this attempt waited for the rate limiter before it started
    possibly_processed: bool = False  # a retry after this one may duplicate


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestOutcome:
    """The result of one request after its retries."""

    last: Attempt
    attempts: int
    first_failed_at_s: float | None  # wall clock of the first failed attempt


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounds for one request's retries (small: the pipeline's hold takes over after them)."""

    max_attempts: int
    max_retry_time_s: float  # excludes waits imposed by the rate limiter (that is backpressure)
    backoff_initial_s: float
    backoff_max_s: float


def backoff_s(policy: RetryPolicy, failures: int, jitter: Callable[[float], float]) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(max, initial * 2**(n-1))]."""
    ceiling_s = min(policy.backoff_max_s, policy.backoff_initial_s * 2.0 ** min(failures - 1, 60))
    return min(ceiling_s, max(0.0, jitter(ceiling_s)))


@dataclass(frozen=True, slots=True)
class RetryHooks:
    """What the retry loop needs from its caller."""

    monotonic: Callable[[], float]
    sleep: Callable[[float], None]
    jitter: Callable[[float], float]  # draws uniformly from [0, ceiling]
    server_wait_s: Callable[[], float]  # > 0 while the rate limiter holds requests for a reset
    on_retry: Callable[[Attempt, float], None]  # the failed attempt and the backoff before the next


def run_with_retries(
    attempt_once: Callable[[], Attempt], policy: RetryPolicy, hooks: RetryHooks
) -> RequestOutcome:
    """Call `attempt_once` until it succeeds, fails for good, or the attempts or time run out."""
    return _RetryRun(attempt_once, policy, hooks).run()


class _RetryRun:
    """The state of one request's retries, as tenacity's stop/wait/before_sleep callbacks."""

    def __init__(
        self, attempt_once: Callable[[], Attempt], policy: RetryPolicy, hooks: RetryHooks
    ) -> None:
        self._attempt_once = attempt_once
        self._policy = policy
        self._hooks = hooks
        self._started_s = hooks.monotonic()
        self._history: list[Attempt] = []

    def run(self) -> RequestOutcome:
        first = self._attempt()
        if not first.retry_now:  # most requests: one attempt, no retry machinery to set up
            return self._outcome(first)
        made = [first]  # tenacity's first attempt is the one just made

        def attempt() -> Attempt:
            return made.pop() if made else self._attempt()

        retrying = tenacity.Retrying(
            sleep=self._hooks.sleep,
            stop=self._stop,
            wait=self._wait,
            retry=tenacity.retry_if_result(lambda result: result.retry_now),
            before_sleep=self._before_sleep,
            # When retries run out, hand back the last attempt instead of raising RetryError.
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
        )
        last: Attempt = retrying(attempt)
        return self._outcome(last)

    def _outcome(self, last: Attempt) -> RequestOutcome:
        failed = [a for a in self._history if a.verdict != "success"]
        first_failed_s = failed[0].finished_at_s if failed else None
        return RequestOutcome(
            last=last, attempts=len(self._history), first_failed_at_s=first_failed_s
        )

    def _attempt(self) -> Attempt:
        result = self._attempt_once()
        self._history.append(result)
        return result

    def _budget_left_s(self) -> float:
        rate_waits_s = sum(a.rate_wait_s for a in self._history)
        spent_s = self._hooks.monotonic() - self._started_s - rate_waits_s
        return self._policy.max_retry_time_s - spent_s

    def _stop(self, state: tenacity.RetryCallState) -> bool:
        return state.attempt_number >= self._policy.max_attempts or self._budget_left_s() <= 0

    def _wait(self, state: tenacity.RetryCallState) -> float:
        if self._history[-1].cause is HoldCause.RATE_LIMIT and self._hooks.server_wait_s() > 0:
            return 0.0  # the rate limiter holds the next attempt until the reset
        backoff = backoff_s(self._policy, state.attempt_number, self._hooks.jitter)
        return min(backoff, self._budget_left_s())

    def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        sleep_s = state.next_action.sleep if state.next_action is not None else 0.0
        self._hooks.on_retry(self._history[-1], sleep_s)


@dataclass(slots=True, kw_only=True)
class RecipientResult:
    """What became of one recipient of `send_batch`; never changed once made (not frozen: one
    is built per recipient sent, and a frozen dataclass costs several times as much to build)."""

    index: int  # position in the recipients passed to send_batch
    outcome: Literal["sent", "rejected", "held"]
    http_status: int | None  # last status seen (None for transport errors)
    error: str  # "" when sent; else human-readable, Braze body cut to <= 2000 chars
    attempts: int  # HTTP attempts that involved this recipient
    first_failed_at: datetime | None  # UTC, first failed attempt
    dispatch_id: str | None = None
    cause: HoldCause | None = None  # held: why (Braze's or the deployment's fault)
    whole_request: bool = False  # rejected: the request as a whole is wrong, not this recipient


class Bisection:
    """One batch: sends it, and on a 400/413 sends each half again, down to single recipients.

    `send_group(indices)` sends the recipients at those indices as one request (with retries).
    When both halves of a 400 fail with exactly the answer the whole got, the answer does not
    depend on the recipients: every recipient is rejected with `whole_request`, after three
    requests instead of the 2n - 1 a full bisection costs. Per-recipient attempts and first
    failure add up across every request a recipient was in.
    """

    def __init__(
        self, size: int, send_group: Callable[[list[int]], RequestOutcome], split: bool
    ) -> None:
        self._send_group = send_group
        self._split = split
        self._attempts = [0] * size
        self._first_failed_s: list[float | None] = [None] * size
        self._requests = 0

    def run(self, indices: list[int]) -> list[RecipientResult]:
        """Results for these indices, in index order (`indices` ascending)."""
        out: list[RecipientResult] = []
        self._resolve(indices, self._request(indices), out)
        if self._requests > 1:  # bisected
            out.sort(key=lambda result: result.index)
        return out

    def _request(self, indices: list[int]) -> RequestOutcome:
        self._requests += 1
        outcome = self._send_group(indices)
        for i in indices:
            self._attempts[i] += outcome.attempts
            if self._first_failed_s[i] is None:
                self._first_failed_s[i] = outcome.first_failed_at_s
        return outcome

    def _resolve(
        self, indices: list[int], outcome: RequestOutcome, out: list[RecipientResult]
    ) -> None:
        last = outcome.last
        rejected = last.verdict == "rejected" and last.status in SPLIT_STATUSES
        if not (rejected and self._split and len(indices) > 1):
            self._results(indices, outcome, out)
            return
        middle = len(indices) // 2
        halves = (indices[:middle], indices[middle:])
        answers = [self._request(half) for half in halves]
        if last.status == 400 and all(_same_rejection(a, outcome) for a in answers):
            self._results(indices, answers[-1], out, whole_request=True)
            return
        for half, answer in zip(halves, answers, strict=True):
            self._resolve(half, answer, out)

    def _results(
        self,
        indices: list[int],
        outcome: RequestOutcome,
        out: list[RecipientResult],
        *,
        whole_request: bool = False,
    ) -> None:
        """One result per index, all from the same answer (what they share is worked out once:
        a batch of 50 is sent and settled a few hundred times a second)."""
        last = outcome.last
        sent = last.verdict == "success"
        verdict: Literal["sent", "rejected", "held"] = (
            "sent" if sent else "rejected" if last.verdict == "rejected" else "held"
        )
        dispatch = dispatch_id(last.body) if sent else None
        attempts, first_failed_s = self._attempts, self._first_failed_s
        for index in indices:
            first_s = first_failed_s[index]
            out.append(
                RecipientResult(
                    index=index,
                    outcome=verdict,
                    http_status=last.status,
                    error=last.detail,
                    attempts=attempts[index],
                    first_failed_at=None
                    if first_s is None
                    else datetime.fromtimestamp(first_s, UTC),
                    dispatch_id=dispatch,
                    cause=last.cause,
                    whole_request=whole_request,
                )
            )


def _same_rejection(answer: RequestOutcome, whole: RequestOutcome) -> bool:
    """Both rejected with the same status and the same body (no recipient named in it)."""
    a, b = answer.last, whole.last
    return a.verdict == b.verdict == "rejected" and (a.status, a.detail) == (b.status, b.detail)
