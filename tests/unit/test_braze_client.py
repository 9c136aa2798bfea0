"""The Braze client against httpx.MockTransport: retries, rate limits, bisection, secrets."""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import httpx
import pytest

from consumer.braze.client import BrazeClient, BrazeClientConfig, ClientClosedError
from consumer.braze.retry import RetryPolicy, backoff_s, classify_status
from consumer.intents import BatchKey, Endpoint
from consumer.json_types import JSONObject

T0 = 1_700_000_000.0
API_KEY = "sk-test-0123456789abcdef"  # a fake key the tests hunt for
KEY = BatchKey(Endpoint.CANVAS_SEND, "canvas-1")
CONFIG = BrazeClientConfig(
    rest_endpoint="https://rest.example.test",
    requests_per_hour=360_000_000,  # 100k/s: the budget never gets in the way unless a test wants
    max_attempts=6,
)
Handler = Callable[[httpx.Request], httpx.Response]


class FakeClock:
    """Wall clock, monotonic clock and sleep in one: sleeping moves time on at once."""

    def __init__(self) -> None:
        self.now = T0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@dataclass
class Recorder:
    """A RequestObserver that keeps everything."""

    done: list[tuple[str, int | None, int]] = field(default_factory=list)
    retries: list[str] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)

    def request_done(
        self, endpoint: str, status: int | None, seconds: float, recipients: int
    ) -> None:
        self.done.append((endpoint, status, recipients))

    def retry_scheduled(self, endpoint: str, reason: str) -> None:
        self.retries.append(reason)

    def rate_limit_wait(self, seconds: float) -> None:
        self.waits.append(seconds)


@dataclass
class Harness:
    client: BrazeClient
    clock: FakeClock
    observer: Recorder
    request_times: list[float]
    bodies: list[JSONObject]


def make(
    handler: Handler, config: BrazeClientConfig = CONFIG, *, clock: FakeClock | None = None
) -> Harness:
    clock = clock or FakeClock()
    times: list[float] = []
    bodies: list[JSONObject] = []

    def recording(request: httpx.Request) -> httpx.Response:
        times.append(clock.now)
        bodies.append(json.loads(request.content))
        return handler(request)

    observer = Recorder()
    client = BrazeClient(
        config,
        API_KEY,
        observer=observer,
        transport=httpx.MockTransport(recording),
        clock=clock.time,
        monotonic=clock.time,
        sleep=clock.sleep,
        jitter=lambda ceiling_s: ceiling_s,  # the longest backoff: bounds are tested at their worst
    )
    return Harness(client, clock, observer, times, bodies)


def sequence(*responses: httpx.Response | Exception) -> Handler:
    """A handler answering with these, in order (the last one repeats)."""
    remaining = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        item = remaining.pop(0) if len(remaining) > 1 else remaining[0]
        if isinstance(item, Exception):
            raise item
        return item

    return handler


def ok(status: int = 201, **headers: str) -> httpx.Response:
    return httpx.Response(
        status, json={"dispatch_id": "d-1", "message": "success"}, headers=headers
    )


def recipients(count: int) -> list[JSONObject]:
    return [{"external_user_id": f"user-{i}"} for i in range(count)]


@pytest.mark.parametrize(
    ("status", "verdict", "reason"),
    [
        pytest.param(200, "success", None, id="200"),
        pytest.param(201, "success", None, id="201 canvas send"),
        pytest.param(202, "success", None, id="202 queued"),
        pytest.param(429, "retry", "rate_limited", id="429"),
        pytest.param(500, "retry", "server_error", id="500"),
        pytest.param(502, "retry", "server_error", id="502"),
        pytest.param(503, "retry", "server_error", id="503"),
        pytest.param(504, "retry", "server_error", id="504"),
        pytest.param(400, "permanent", None, id="400"),
        pytest.param(401, "permanent", None, id="401"),
        pytest.param(403, "permanent", None, id="403"),
        pytest.param(404, "permanent", None, id="404"),
        pytest.param(413, "permanent", None, id="413"),
        pytest.param(301, "permanent", None, id="301 wrong endpoint"),
    ],
)
def test_classify_status(status: int, verdict: str, reason: str | None) -> None:
    assert classify_status(status) == (verdict, reason)


@pytest.mark.parametrize(
    ("failures", "draw", "expected_s"),
    [
        pytest.param(1, 1.0, 0.5, id="first retry up to initial"),
        pytest.param(2, 1.0, 1.0, id="doubles"),
        pytest.param(4, 1.0, 4.0, id="keeps doubling"),
        pytest.param(7, 1.0, 30.0, id="capped at max"),
        pytest.param(10_000, 1.0, 30.0, id="no overflow after many failures"),
        pytest.param(3, 0.25, 0.5, id="full jitter scales the ceiling"),
        pytest.param(3, -5.0, 0.0, id="a negative draw is clamped"),
        pytest.param(3, 9.0, 2.0, id="an oversized draw is clamped"),
    ],
)
def test_backoff_is_exponential_with_full_jitter(
    failures: int, draw: float, expected_s: float
) -> None:
    policy = RetryPolicy(
        max_attempts=6, max_retry_time_s=300, backoff_initial_s=0.5, backoff_max_s=30
    )
    assert backoff_s(policy, failures, lambda ceiling_s: ceiling_s * draw) == expected_s


@pytest.mark.parametrize(
    ("status", "outcome", "attempts"),
    [
        pytest.param(200, "sent", 1, id="200 sent"),
        pytest.param(202, "sent", 1, id="202 queued is sent"),
        pytest.param(401, "rejected", 1, id="401 rejected at once"),
        pytest.param(403, "rejected", 1, id="403 rejected at once"),
        pytest.param(404, "rejected", 1, id="404 rejected at once"),
        pytest.param(400, "rejected", 1, id="400 rejected at once"),
        pytest.param(429, "exhausted", 3, id="429 without headers retried"),
        pytest.param(500, "exhausted", 3, id="500 retried"),
        pytest.param(503, "exhausted", 3, id="503 retried"),
    ],
)
def test_each_status_ends_as(status: int, outcome: str, attempts: int) -> None:
    harness = make(
        sequence(httpx.Response(status, json={"message": "x"})), replace(CONFIG, max_attempts=3)
    )
    [result] = harness.client.send_batch(KEY, recipients(1))
    assert (result.outcome, result.attempts, result.http_status) == (outcome, attempts, status)
    assert len(harness.request_times) == attempts


def test_503_503_201_is_sent_on_the_third_attempt() -> None:
    failure = httpx.Response(503, text="busy")
    harness = make(sequence(failure, failure, ok(201)))
    results = harness.client.send_batch(KEY, recipients(2))
    assert [(r.outcome, r.attempts, r.dispatch_id, r.error) for r in results] == [
        ("sent", 3, "d-1", ""),
        ("sent", 3, "d-1", ""),
    ]
    assert results[0].first_failed_at == datetime.fromtimestamp(T0, UTC)
    assert harness.observer.retries == ["server_error", "server_error"]
    assert [status for _, status, _ in harness.observer.done] == [503, 503, 201]
    assert harness.clock.sleeps == [0.5, 1.0]  # exponential backoff (jitter pinned to its ceiling)


def test_429_waits_until_the_reset_before_the_next_request() -> None:
    reset_s = T0 + 100
    limited = httpx.Response(
        429, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(reset_s))}
    )
    harness = make(sequence(limited, ok()))
    [result] = harness.client.send_batch(KEY, recipients(1))
    assert (result.outcome, result.attempts) == ("sent", 2)
    assert harness.request_times[1] >= reset_s
    assert sum(harness.observer.waits) == pytest.approx(100)
    assert harness.observer.retries == ["rate_limited"]


def test_429_wait_is_capped() -> None:
    limited = httpx.Response(429, headers={"x-ratelimit-reset": str(int(T0 + 86_400))})
    config = replace(CONFIG, max_rate_limit_wait_s=60, max_attempts=2)
    harness = make(sequence(limited, ok()), config)
    [result] = harness.client.send_batch(KEY, recipients(1))
    assert result.outcome == "sent"
    assert harness.request_times[1] - T0 == pytest.approx(60)


def test_remaining_zero_on_a_success_holds_the_next_request() -> None:
    reset_s = T0 + 50
    spent = ok(201, **{"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(reset_s))})
    harness = make(sequence(spent, ok()))
    harness.client.send_batch(KEY, recipients(1))
    harness.client.send_batch(KEY, recipients(1))
    assert harness.request_times == [T0, reset_s]
    assert harness.observer.waits == [pytest.approx(50)]


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("-1", id="negative"),
        pytest.param("nan", id="nan"),
        pytest.param("1e999", id="overflow"),
        pytest.param("soon", id="text"),
        pytest.param("9" * 5000, id="huge"),
        pytest.param("0, 0", id="repeated"),
    ],
)
def test_hostile_rate_limit_headers_are_ignored(value: str) -> None:
    hostile = ok(201, **{"X-RateLimit-Remaining": value, "X-RateLimit-Reset": value})
    harness = make(sequence(hostile))
    for _ in range(3):
        [result] = harness.client.send_batch(KEY, recipients(1))
        assert result.outcome == "sent"
    assert harness.clock.sleeps == []


def test_attempts_are_bounded() -> None:
    harness = make(sequence(httpx.Response(503, text="down")), replace(CONFIG, max_attempts=4))
    [result] = harness.client.send_batch(KEY, recipients(1))
    assert (result.outcome, result.attempts, result.http_status) == ("exhausted", 4, 503)
    assert "4 attempts" in result.error
    assert "HTTP 503: down" in result.error
    assert len(harness.request_times) == 4


def test_total_retry_time_is_bounded() -> None:
    clock = FakeClock()

    def slow_failure(request: httpx.Request) -> httpx.Response:
        clock.now += 10  # each attempt takes 10 s
        return httpx.Response(500)

    config = replace(CONFIG, max_attempts=1000, max_retry_time_s=60, backoff_max_s=8)
    harness = make(slow_failure, config, clock=clock)
    [result] = harness.client.send_batch(KEY, recipients(1))
    assert result.outcome == "exhausted"
    assert clock.now - T0 <= 60 + 10  # the budget, plus at most the attempt that crossed it
    assert 3 <= result.attempts < 10


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        pytest.param(httpx.ReadTimeout("read timed out"), "timeout", id="read timeout"),
        pytest.param(httpx.ConnectTimeout("connect timed out"), "timeout", id="connect timeout"),
        pytest.param(httpx.ConnectError("connection refused"), "connection", id="refused"),
        pytest.param(httpx.RemoteProtocolError("peer closed"), "connection", id="reset"),
    ],
)
def test_transport_errors_are_retried(error: Exception, reason: str) -> None:
    harness = make(sequence(error, ok()))
    [result] = harness.client.send_batch(KEY, recipients(1))
    assert (result.outcome, result.attempts) == ("sent", 2)
    assert harness.observer.retries == [reason]
    assert [status for _, status, _ in harness.observer.done] == [None, 201]


@pytest.mark.parametrize(
    ("failure", "may_duplicate"),
    [
        pytest.param(httpx.Response(503), True, id="503 may have been processed"),
        pytest.param(httpx.Response(504), True, id="504 may have been processed"),
        pytest.param(httpx.Response(500), True, id="500 may have been processed"),
        pytest.param(httpx.ReadTimeout("slow"), True, id="read timeout may have been processed"),
        pytest.param(httpx.Response(502), False, id="502 never reached Braze"),
        pytest.param(httpx.Response(429), False, id="429 was refused"),
        pytest.param(httpx.ConnectError("refused"), False, id="connect error never sent"),
    ],
)
def test_retries_say_when_they_may_duplicate(
    failure: httpx.Response | Exception, may_duplicate: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="consumer.braze.client")
    harness = make(sequence(failure, ok()))
    harness.client.send_batch(KEY, recipients(1))
    [record] = [r for r in caplog.records if r.getMessage().startswith("retrying")]
    assert record.levelno == logging.INFO
    assert "/canvas/trigger/send" in record.getMessage()
    assert ("may send twice" in record.getMessage()) is may_duplicate
    assert "user-0" not in record.getMessage()


def test_rate_limit_waits_do_not_spend_the_retry_time_budget() -> None:
    limited = httpx.Response(
        429, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(T0 + 900))}
    )
    failures = sequence(limited, httpx.Response(503), ok())
    harness = make(failures, replace(CONFIG, max_retry_time_s=10))
    [result] = harness.client.send_batch(KEY, recipients(1))
    # The 503 after a 900 s hold is still retried: holding for the reset is backpressure.
    assert (result.outcome, result.attempts) == ("sent", 3)
    assert harness.request_times[1] >= T0 + 900


def test_transport_errors_exhaust_with_no_status() -> None:
    harness = make(sequence(httpx.ReadTimeout("slow")), replace(CONFIG, max_attempts=2))
    [result] = harness.client.send_batch(KEY, recipients(1))
    assert (result.outcome, result.http_status) == ("exhausted", None)
    assert "ReadTimeout" in result.error


def rejecting(*bad_users: str, status: int = 400) -> Handler:
    """Rejects any request naming one of these users, as Braze rejects a whole batch."""

    def handler(request: httpx.Request) -> httpx.Response:
        text = request.content.decode()
        if any(f'"{user}"' in text for user in bad_users):
            return httpx.Response(status, json={"message": "Invalid recipient"})
        return ok()

    return handler


@pytest.mark.parametrize("bad", [0, 17, 49], ids=["first", "middle", "last"])
def test_one_bad_recipient_does_not_sink_the_other_49(bad: int) -> None:
    harness = make(rejecting(f"user-{bad}"))
    results = harness.client.send_batch(KEY, recipients(50))
    assert [r.index for r in results] == list(range(50))
    assert [r.index for r in results if r.outcome == "rejected"] == [bad]
    assert sum(r.outcome == "sent" for r in results) == 49
    assert len(harness.request_times) <= 2 * math.ceil(math.log2(50)) + 1
    assert results[bad].http_status == 400
    assert "Invalid recipient" in results[bad].error
    involving = [b for b in harness.bodies if f'"user-{bad}"' in json.dumps(b)]
    assert results[bad].attempts == len(involving) >= 6  # 50 halves six times down to one
    assert results[(bad + 25) % 50].attempts == 2  # the whole batch, then its own half


def test_two_bad_recipients_are_both_found() -> None:
    harness = make(rejecting("user-3", "user-40"))
    results = harness.client.send_batch(KEY, recipients(50))
    assert [r.index for r in results if r.outcome == "rejected"] == [3, 40]
    assert sum(r.outcome == "sent" for r in results) == 48
    assert len(harness.request_times) <= 4 * math.ceil(math.log2(50)) + 1


def test_413_is_bisected_too() -> None:
    harness = make(rejecting("user-5", status=413))
    results = harness.client.send_batch(KEY, recipients(8))
    assert [r.outcome for r in results].count("rejected") == 1
    assert results[5].http_status == 413


@pytest.mark.parametrize("status", [401, 403, 404])
def test_account_errors_reject_everyone_without_bisecting(status: int) -> None:
    harness = make(sequence(httpx.Response(status, json={"message": "nope"})))
    results = harness.client.send_batch(KEY, recipients(50))
    assert {(r.outcome, r.http_status) for r in results} == {("rejected", status)}
    assert len(harness.request_times) == 1


def test_bisection_can_be_switched_off() -> None:
    harness = make(rejecting("user-1"), replace(CONFIG, split_on_reject=False))
    results = harness.client.send_batch(KEY, recipients(4))
    assert {r.outcome for r in results} == {"rejected"}
    assert len(harness.request_times) == 1


def test_a_recipient_that_is_not_strict_json_is_rejected_alone() -> None:
    harness = make(sequence(ok()))
    batch: list[JSONObject] = [
        *recipients(2),
        {"external_user_id": "u", "context": {"x": math.nan}},
    ]
    results = harness.client.send_batch(KEY, batch)
    assert [(r.outcome, r.attempts) for r in results] == [("sent", 1), ("sent", 1), ("rejected", 0)]
    assert len(harness.bodies[0]["recipients"]) == 2  # type: ignore[arg-type]


def test_an_empty_batch_sends_nothing() -> None:
    harness = make(sequence(ok()))
    assert harness.client.send_batch(KEY, []) == []
    assert harness.request_times == []


def test_request_shape() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return ok()

    harness = make(handler)
    harness.client.send_batch(KEY, recipients(2))
    request = seen[0]
    assert (request.method, str(request.url)) == (
        "POST",
        "https://rest.example.test/canvas/trigger/send",
    )
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.headers["content-type"] == "application/json"
    assert harness.bodies[0] == {"canvas_id": "canvas-1", "recipients": recipients(2)}
    assert harness.observer.done == [("/canvas/trigger/send", 201, 2)]


def test_the_api_key_never_leaks(caplog: pytest.LogCaptureFixture) -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, text=f"bad credentials: {request.headers['authorization']}")

    caplog.set_level(logging.DEBUG)
    harness = make(echo)
    results = harness.client.send_batch(KEY, recipients(3))
    assert all(r.outcome == "rejected" and "[redacted]" in r.error for r in results)
    assert API_KEY not in repr(results)
    assert API_KEY not in repr(harness.client)
    assert API_KEY not in caplog.text


@pytest.mark.parametrize(
    "api_key",
    [
        pytest.param("", id="empty"),
        pytest.param(f'"{API_KEY}"', id="quoted"),
        pytest.param(f"{API_KEY}\n", id="newline"),
        pytest.param(f"{API_KEY} x", id="space"),
    ],
)
def test_a_malformed_key_is_refused_without_echoing_it(api_key: str) -> None:
    with pytest.raises(ValueError, match="API key") as raised:
        BrazeClient(CONFIG, api_key)
    assert API_KEY not in str(raised.value)


def test_endpoint_must_be_http_with_a_host() -> None:
    with pytest.raises(ValueError, match="rest_endpoint"):
        BrazeClient(replace(CONFIG, rest_endpoint="ftp://rest.example.test"), API_KEY)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"<html>ok</html>", id="html"),
        pytest.param(b"[1, 2]", id="json list"),
        pytest.param(b"\xff\xfe", id="not utf-8"),
        pytest.param(b"", id="empty"),
        pytest.param(b'{"dispatch_id": ' + b'"' + b"x" * 5000 + b'"}', id="oversized dispatch id"),
    ],
)
def test_a_success_with_a_strange_body_is_still_sent(
    body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    harness = make(sequence(httpx.Response(201, content=body)))
    [result] = harness.client.send_batch(KEY, recipients(1))
    assert (result.outcome, result.dispatch_id) == ("sent", None)
    if not body.startswith(b"{"):
        assert "not a JSON object" in caplog.text


def test_non_fatal_errors_are_logged_without_user_ids(caplog: pytest.LogCaptureFixture) -> None:
    body = {"message": "success", "errors": ["user-0 is not subscribed"]}
    harness = make(sequence(httpx.Response(201, json=body)))
    [result] = harness.client.send_batch(KEY, recipients(1))
    assert result.outcome == "sent"
    assert "1 non-fatal errors" in caplog.text
    assert "user-0" not in caplog.text


def test_huge_bodies_are_cut_and_not_read_whole() -> None:
    chunks_read = 0

    def endless() -> Iterator[bytes]:
        nonlocal chunks_read
        for _ in range(10_000):  # 640 MB if read whole
            chunks_read += 1
            yield b"e" * 65_536

    harness = make(lambda request: httpx.Response(400, content=endless()))
    [result] = harness.client.send_batch(KEY, recipients(1))
    assert result.outcome == "rejected"
    assert len(result.error) <= 2000
    assert chunks_read <= 20


def test_send_raw_returns_the_parsed_body() -> None:
    body = {"message": "success", "schedule_id": "s-1"}
    harness = make(sequence(httpx.Response(503), httpx.Response(201, json=body)))
    raw = harness.client.send_raw(
        Endpoint.CANVAS_SCHEDULE_DELETE, {"canvas_id": "c", "schedule_id": "s-1"}
    )
    assert (raw.ok, raw.status, raw.body, raw.attempts, raw.error) == (True, 201, body, 2, "")


def test_close_interrupts_a_send_waiting_for_the_reset() -> None:
    limited = httpx.Response(429, headers={"X-RateLimit-Reset": str(int(time.time() + 600))})
    client = BrazeClient(CONFIG, API_KEY, transport=httpx.MockTransport(sequence(limited)))
    errors: list[BaseException] = []

    def send() -> None:
        try:
            client.send_batch(KEY, recipients(1))
        except ClientClosedError as exc:
            errors.append(exc)

    thread = threading.Thread(target=send)
    thread.start()
    time.sleep(0.05)
    started = time.monotonic()
    client.close()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert time.monotonic() - started < 1
    assert len(errors) == 1


def test_threads_share_one_client_within_max_in_flight() -> None:
    lock = threading.Lock()
    active = 0
    peak = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.002)
        with lock:
            active -= 1
        return ok()

    client = BrazeClient(
        replace(CONFIG, max_in_flight=3), API_KEY, transport=httpx.MockTransport(handler)
    )
    outcomes: list[str] = []

    def work() -> None:
        for _ in range(10):
            outcomes.extend(r.outcome for r in client.send_batch(KEY, recipients(5)))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.close()
    assert outcomes == ["sent"] * 400
    assert 1 < peak <= 3
