"""Stage 4 (send): the only module that talks HTTP to Braze; one batch in, one result per recipient.

`BrazeClient.send_batch` paces each request through the `RateLimiter`, retries it a few times
through `run_with_retries`, and when Braze rejects a batch (400/413) bisects it so that only
recipients that fail alone are rejected. A failure of Braze or of the way to it comes back as
`held` (with its `HoldCause`), never as a rejection. It blocks and is safe to call from many
threads at once. Before a probe after an auth failure it re-reads the API key (a rotated Secret).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import httpx

from consumer.braze.answers import TRANSPORT_FAILURE, HoldCause, judge
from consumer.braze.http import HttpSender, HttpTransportError, HttpxSender, proxy_configured
from consumer.braze.limits import DEFAULT_REQUESTS_PER_HOUR
from consumer.braze.pool import ConnectionPool
from consumer.braze.ratelimit import RateLimiter
from consumer.braze.retry import (
    Attempt,
    Bisection,
    RecipientResult,
    RequestOutcome,
    RetryHooks,
    RetryPolicy,
    cut,
    may_have_been_processed,
    parse_json,
    run_with_retries,
    warn_about_success_body,
)
from consumer.intents import BatchKey, Endpoint
from consumer.json_codec import dumps_strict
from consumer.json_types import JSONObject, JSONValue

__all__ = [
    "BrazeClient",
    "BrazeClientConfig",
    "ClientClosedError",
    "NullObserver",
    "RawResult",
    "RecipientResult",
    "RequestObserver",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrazeClientConfig:
    """How to reach Braze and how hard to try."""

    rest_endpoint: str  # e.g. "https://rest.iad-01.braze.com"
    requests_per_hour: int = DEFAULT_REQUESTS_PER_HOUR
    max_in_flight: int = 8  # size of the connection pool and of concurrent requests
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    write_timeout_s: float = 30.0
    pool_timeout_s: float = 30.0
    max_attempts: int = 3  # per request, including the first; the pipeline's hold takes over after
    max_retry_time_s: float = 30.0  # one request's retries, rate-limit waits excluded
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    max_rate_limit_wait_s: float = 3600.0  # cap on a 429 / Remaining=0 wait
    split_on_reject: bool = True  # bisect a 400'd batch to find the bad recipients


class RequestObserver(Protocol):
    """Receives what the client does (metrics implements it)."""

    def request_done(
        self, endpoint: str, status: int | None, seconds: float, recipients: int, accepted: bool
    ) -> None: ...  # status None = transport error; accepted = Braze's success answer

    def retry_scheduled(self, endpoint: str, reason: str) -> None: ...

    def rate_limit_wait(self, seconds: float) -> None: ...


class NullObserver:
    """The default observer: ignores everything."""

    def request_done(
        self, endpoint: str, status: int | None, seconds: float, recipients: int, accepted: bool
    ) -> None:
        """Ignore a finished request."""

    def retry_scheduled(self, endpoint: str, reason: str) -> None:
        """Ignore a retry."""

    def rate_limit_wait(self, seconds: float) -> None:
        """Ignore a rate-limit wait."""


@dataclass(frozen=True)
class RawResult:
    """The answer to `send_raw`: the final status and body after retries."""

    ok: bool  # Braze's success answer
    status: int | None
    body: JSONValue  # parsed JSON; None when the body was not JSON
    error: str  # "" when ok
    attempts: int


class ClientClosedError(RuntimeError):
    """`close()` was called during a send: its recipients are neither sent nor failed for sure."""


class BrazeClient:
    """Sends batches to Braze with pacing, retries and bisection; thread-safe."""

    def __init__(
        self,
        config: BrazeClientConfig,
        api_key: str,
        observer: RequestObserver | None = None,
        transport: httpx.BaseTransport | None = None,
        *,
        clock: Callable[[], float] = time.time,  # epoch seconds: X-RateLimit-Reset is one too
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,  # default: a sleep that close() interrupts
        jitter: Callable[[float], float] | None = None,  # draws from [0, ceiling]
        key_source: Callable[[], str] | None = None,  # re-reads the key (e.g. a mounted Secret)
    ) -> None:
        _check_api_key(api_key)
        _check_endpoint(config.rest_endpoint)
        self._config = config
        self._secret = api_key
        self._old_secrets: list[str] = []  # still redacted from error texts after a rotation
        self._key_source = key_source
        self._observer: RequestObserver = observer or NullObserver()
        self._clock = clock
        self._monotonic = monotonic
        self._closed = threading.Event()
        self._sleep = sleep or self._closed.wait
        self._limiter = RateLimiter(config.requests_per_hour, config.max_rate_limit_wait_s)
        # Bounds requests on the wire, so extra threads wait here instead of timing out on the pool.
        self._slots = threading.BoundedSemaphore(config.max_in_flight)
        policy = RetryPolicy(
            config.max_attempts,
            config.max_retry_time_s,
            config.backoff_initial_s,
            config.backoff_max_s,
        )
        self._policy = policy
        self._jitter = jitter or _full_jitter
        self._http: HttpSender = _make_http_client(config, transport)

    def __repr__(self) -> str:
        return (
            f"BrazeClient(rest_endpoint={self._config.rest_endpoint!r}, "
            f"requests_per_hour={self._config.requests_per_hour}, "
            f"max_in_flight={self._config.max_in_flight})"
        )

    def send_batch(self, key: BatchKey, recipients: Sequence[JSONObject]) -> list[RecipientResult]:
        """Send these recipients in one request (more if bisecting); one result per recipient.

        A recipient that is not strict JSON (a non-finite number, a lone surrogate) is rejected
        without a request; the others go as `send_encoded` sends them.
        """
        results: list[RecipientResult] = []
        sendable: list[int] = []
        encoded: list[bytes] = []
        for index, recipient in enumerate(recipients):
            try:
                encoded.append(dumps_strict(recipient))
                sendable.append(index)
            except (ValueError, TypeError):  # UnicodeEncodeError is a ValueError
                error = "recipient is not strict JSON (a non-finite number or a lone surrogate)"
                results.append(_unsendable(index, error))
        if sendable:
            for result in self.send_encoded(key, encoded):
                results.append(replace(result, index=sendable[result.index]))
        return sorted(results, key=lambda result: result.index)

    def send_encoded(self, key: BatchKey, encoded: Sequence[bytes]) -> list[RecipientResult]:
        """Send recipients already encoded as strict JSON (`SendIntent.encoded`) in one request
        (more if bisecting); one result per recipient, in order.

        Blocks through rate-limit waits and retries. Raises ClientClosedError if `close()` is
        called meanwhile (then nothing about these recipients is known for sure).
        """

        def send_group(indices: list[int]) -> RequestOutcome:
            content = key.request_content([encoded[i] for i in indices])
            return self.request_content(key.endpoint, content, len(indices))

        bisection = Bisection(len(encoded), send_group, self._config.split_on_reject)
        return bisection.run(list(range(len(encoded))))  # in index order

    def send_raw(self, endpoint: Endpoint, body: JSONObject) -> RawResult:
        """POST one body with pacing and retries, no bisection (admin uses: schedules, send ids)."""
        outcome = self.request(endpoint, body, recipients=0)
        last = outcome.last
        ok = last.verdict == "success"
        return RawResult(ok, last.status, last.body, "" if ok else last.detail, outcome.attempts)

    def set_budget_share(self, share: float) -> float:
        """Spend `share` (0..1) of `requests_per_hour`, the budget of every process together (a
        consumer-group member's partitions), and plan on that share of the workspace's
        X-RateLimit-Remaining. Returns the requests per hour this process may now make."""
        share = min(max(share, 0.0), 1.0)
        per_hour = self._config.requests_per_hour * share
        self._limiter.set_rate(per_hour, self._clock(), share=share)
        return per_hour

    def prepare_probe(self, cause: HoldCause) -> None:
        """Before a probe after an auth failure, re-read the key: a rotated Secret lands on disk."""
        if cause is HoldCause.AUTH:
            self.reload_api_key()

    def reload_api_key(self) -> bool:
        """Take a new key from `key_source`; True when it changed. Never logs the key."""
        if self._key_source is None:
            return False
        try:
            key = self._key_source()
            _check_api_key(key)
        except Exception as exc:  # a missing or emptied Secret must not stop the service
            log.warning("could not re-read the Braze API key: %s", self._redact(str(exc)))
            return False
        if key == self._secret:
            return False
        self._old_secrets.append(self._secret)
        self._secret = key
        log.warning("the Braze API key changed on disk; using the new key")
        return True

    def close(self) -> None:
        """Stop: waiting sends raise ClientClosedError, connections are closed."""
        self._closed.set()
        self._http.close()

    def __enter__(self) -> BrazeClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def request(self, endpoint: Endpoint, body: JSONObject, recipients: int) -> RequestOutcome:
        """One logical request with its retries (`send_raw`)."""
        return self.request_content(endpoint, dumps_strict(body), recipients)

    def request_content(
        self, endpoint: Endpoint, content: bytes, recipients: int
    ) -> RequestOutcome:
        """POST these bytes (one JSON body) with pacing and retries."""
        hooks = RetryHooks(
            monotonic=self._monotonic,
            sleep=self._pause,
            jitter=self._jitter,
            server_wait_s=lambda: self._limiter.server_wait_s(self._clock()),
            on_retry=lambda attempt, sleep_s: self._on_retry(endpoint, attempt, sleep_s),
        )
        return run_with_retries(
            lambda: self._attempt(endpoint, content, recipients), self._policy, hooks
        )

    def _attempt(self, endpoint: Endpoint, content: bytes, recipients: int) -> Attempt:
        rate_wait_s = self._wait_for_slot()
        try:
            return self._granted_attempt(endpoint, content, recipients, rate_wait_s)
        finally:
            self._limiter.finished()

    def _granted_attempt(
        self, endpoint: Endpoint, content: bytes, recipients: int, rate_wait_s: float
    ) -> Attempt:
        started_s = self._monotonic()
        try:
            with self._slots:
                started_s = self._monotonic()  # latency excludes the wait for a free connection
                status, body, truncated = self._post(endpoint, content)
        except HttpTransportError as exc:
            seconds = self._monotonic() - started_s
            self._observer.request_done(endpoint.value, None, seconds, recipients, False)
            detail, unsent = _transport_failure(exc)
            return Attempt(
                verdict="failed",
                cause=TRANSPORT_FAILURE.cause,
                retry_now=True,
                status=None,
                detail=cut(self._redact(detail)),
                body=None,
                finished_at_s=self._clock(),
                rate_wait_s=rate_wait_s,
                possibly_processed=not unsent,
            )
        seconds = self._monotonic() - started_s
        parsed = None if truncated else parse_json(body)
        judgement = judge(status, parsed)
        # Only Braze's own success answer counts as sent, in the metrics as everywhere.
        accepted = judgement.verdict == "success"
        self._observer.request_done(endpoint.value, status, seconds, recipients, accepted)
        if judgement.verdict == "success":
            warn_about_success_body(endpoint.value, parsed)
        text = body.decode("utf-8", "replace")
        detail = "" if judgement.verdict == "success" else f"HTTP {status}: {text}"
        if judgement.why:
            detail = f"{judgement.why}; {detail}"
        return Attempt(
            verdict=judgement.verdict,
            cause=judgement.cause,
            retry_now=judgement.retry_now,
            status=status,
            detail=cut(self._redact(detail)),
            body=parsed,
            finished_at_s=self._clock(),
            rate_wait_s=rate_wait_s,
            possibly_processed=may_have_been_processed(status, judgement.cause),
        )

    def _post(self, endpoint: Endpoint, content: bytes) -> tuple[int, bytes, bool]:
        if self._closed.is_set():
            raise ClientClosedError("the Braze client is closed")
        # The key is read per request, so a rotation takes effect without a new client.
        auth = {"Authorization": f"Bearer {self._secret}"}
        try:
            answer = self._http.post(endpoint.value, content, auth)
        except (HttpTransportError, RuntimeError) as exc:
            # A closed sender refuses requests (RuntimeError) and close() breaks the connections
            # of requests in flight: either way the send was interrupted, not failed.
            if self._closed.is_set():
                raise ClientClosedError("the Braze client is closed") from exc
            raise
        self._limiter.observe(self._clock(), answer.status, answer.headers)
        return answer.status, answer.body, answer.truncated

    def _wait_for_slot(self) -> float:
        """Sleep until the rate limiter grants a slot; returns the seconds waited."""
        waited_s = 0.0
        while (wait_s := self._limiter.acquire(self._clock())) > 0:
            self._observer.rate_limit_wait(wait_s)
            self._pause(wait_s)
            waited_s += wait_s
        return waited_s

    def _on_retry(self, endpoint: Endpoint, attempt: Attempt, sleep_s: float) -> None:
        reason = _retry_reason(attempt)
        self._observer.retry_scheduled(endpoint.value, reason)
        # No idempotency key exists (braze-api.md section 7): at-least-once, and the log says so.
        duplicate = "; the failed attempt may have been processed, so this may send twice"
        log.info(
            "retrying %s in %.2fs after %s%s",
            endpoint.value,
            sleep_s,
            reason,
            duplicate if attempt.possibly_processed else "",
        )

    def _pause(self, seconds: float) -> None:
        self._sleep(seconds)
        if self._closed.is_set():
            raise ClientClosedError("the Braze client was closed while waiting")

    def _redact(self, text: str) -> str:
        """Every key this client used, longest first (one may be a prefix of another); before
        any cut, so no part of a key survives at the cut."""
        for secret in sorted({self._secret, *self._old_secrets}, key=len, reverse=True):
            text = text.replace(secret, "[redacted]")
        return text


def _check_api_key(api_key: str) -> None:
    # Never echo the key: these messages must be safe to log.
    if not api_key or not api_key.isascii() or not api_key.isprintable() or " " in api_key:
        raise ValueError("the Braze API key is empty or has characters not allowed in a header")
    if api_key[0] in "\"'" or api_key[-1] in "\"'":
        raise ValueError("the Braze API key is written with quotes (Braze would answer 401)")


def _check_endpoint(rest_endpoint: str) -> None:
    url = httpx.URL(rest_endpoint)
    if url.scheme not in ("http", "https") or not url.host or url.userinfo:
        raise ValueError("braze rest_endpoint must be an http(s) URL with a host and no userinfo")


def _make_http_client(
    config: BrazeClientConfig, transport: httpx.BaseTransport | None
) -> HttpSender:
    """The stdlib pool (a third of httpx's CPU per request), or httpx for a proxy in the
    environment, a test's transport, or an endpoint the pool does not serve."""
    pool = config.max_in_flight
    if transport is None and not proxy_configured() and ConnectionPool.serves(config.rest_endpoint):
        return ConnectionPool(
            config.rest_endpoint,
            max_connections=pool,
            connect_timeout_s=config.connect_timeout_s,
            read_timeout_s=config.read_timeout_s,
            write_timeout_s=config.write_timeout_s,
            pool_timeout_s=config.pool_timeout_s,
            headers={"Content-Type": "application/json"},  # Authorization is set per request
        )
    client = httpx.Client(
        base_url=config.rest_endpoint,
        headers={"Content-Type": "application/json"},  # Authorization is set per request
        timeout=httpx.Timeout(
            connect=config.connect_timeout_s,
            read=config.read_timeout_s,
            write=config.write_timeout_s,
            pool=config.pool_timeout_s,
        ),
        limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
        http1=True,
        http2=False,
        follow_redirects=False,  # a redirect means a wrong endpoint: fail, do not resend the body
        transport=transport,
    )
    return HttpxSender(client)


def _transport_failure(exc: HttpTransportError) -> tuple[str, bool]:
    """(detail, certainly unsent) for a request that got no status (both senders raise this)."""
    if exc.timeout:
        return f"timeout: {exc.kind}", exc.unsent
    return f"connection error: {exc.kind}: {exc}", exc.unsent


def _retry_reason(attempt: Attempt) -> str:
    """The `reason` label of the retries metric."""
    if attempt.status is None:
        return "timeout" if attempt.detail.startswith("timeout") else "connection"
    return "rate_limited" if attempt.cause is HoldCause.RATE_LIMIT else "server_error"


def _unsendable(index: int, error: str) -> RecipientResult:
    """A recipient rejected before any request (the event's fault)."""
    return RecipientResult(
        index=index,
        outcome="rejected",
        http_status=None,
        error=error,
        attempts=0,
        first_failed_at=None,
    )


def _full_jitter(ceiling_s: float) -> float:
    return random.uniform(0.0, ceiling_s)  # noqa: S311 - backoff jitter, not cryptography
