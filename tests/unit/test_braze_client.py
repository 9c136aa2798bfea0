"""The Braze client against httpx.MockTransport: retries, holds, rate limits, bisection, secrets."""

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
from hypothesis import event, given, settings
from hypothesis import strategies as st

from consumer.braze.answers import SUCCESS_MESSAGES, HoldCause
from consumer.braze.client import BrazeClient, BrazeClientConfig, ClientClosedError
from consumer.braze.retry import RecipientResult, RetryPolicy, backoff_s
from consumer.intents import BatchKey, Endpoint
from consumer.json_types import JSONObject

T0 = 1_700_000_000.0
API_KEY = "sk-test-0123456789abcdef"  # a fake key the tests hunt for
NEW_API_KEY = "sk-test-fedcba9876543210"  # the key after a rotation
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
    accepted: list[bool] = field(default_factory=list)  # per request, as `done`
    retries: list[str] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)

    def request_done(
        self, endpoint: str, status: int | None, seconds: float, recipients: int, accepted: bool
    ) -> None:
        self.done.append((endpoint, status, recipients))
        self.accepted.append(accepted)

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
    handler: Handler,
    config: BrazeClientConfig = CONFIG,
    *,
    clock: FakeClock | None = None,
    key_source: Callable[[], str] | None = None,
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
        key_source=key_source,
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


JSON_ERROR = {"message": "x"}
SUCCESS = {"dispatch_id": "d-1", "message": "success"}
QUEUED = {"dispatch_id": "d-1", "message": "queued"}
OUTAGE = HoldCause.OUTAGE
AUTH = HoldCause.AUTH
RATE_LIMIT = HoldCause.RATE_LIMIT
UNEXPECTED = HoldCause.UNEXPECTED_RESPONSE


def answer(status: int, body: JSONObject | bytes) -> httpx.Response:
    if isinstance(body, bytes):
        return httpx.Response(status, content=body)
    return httpx.Response(status, json=body)


@pytest.mark.parametrize(
    ("status", "body", "outcome", "cause", "attempts"),
    [
        pytest.param(200, SUCCESS, "sent", None, 1, id="200 sent"),
        pytest.param(201, SUCCESS, "sent", None, 1, id="201 sent"),
        pytest.param(202, QUEUED, "sent", None, 1, id="202 queued is sent"),
        pytest.param(200, JSON_ERROR, "held", UNEXPECTED, 1, id="200 other message held"),
        pytest.param(202, JSON_ERROR, "held", UNEXPECTED, 1, id="202 other message held"),
        pytest.param(401, JSON_ERROR, "held", AUTH, 1, id="401 held at once"),
        pytest.param(403, JSON_ERROR, "held", AUTH, 1, id="403 held at once"),
        pytest.param(404, JSON_ERROR, "held", UNEXPECTED, 1, id="404 held at once"),
        pytest.param(301, b"", "held", UNEXPECTED, 1, id="301 held at once"),
        pytest.param(302, b"<html/>", "held", UNEXPECTED, 1, id="302 held at once"),
        pytest.param(307, b"", "held", UNEXPECTED, 1, id="307 held at once"),
        pytest.param(418, JSON_ERROR, "held", UNEXPECTED, 1, id="418 held at once"),
        pytest.param(400, JSON_ERROR, "rejected", None, 1, id="400 json rejected at once"),
        pytest.param(400, b"<html/>", "held", UNEXPECTED, 1, id="400 html held at once"),
        pytest.param(413, b"<html/>", "rejected", None, 1, id="413 rejected at once"),
        pytest.param(429, JSON_ERROR, "held", RATE_LIMIT, 3, id="429 without headers retried"),
        pytest.param(500, JSON_ERROR, "held", OUTAGE, 3, id="500 retried"),
        pytest.param(502, b"", "held", OUTAGE, 3, id="502 retried"),
        pytest.param(503, JSON_ERROR, "held", OUTAGE, 3, id="503 retried"),
        pytest.param(504, b"<html/>", "held", OUTAGE, 3, id="504 retried"),
    ],
)
def test_each_status_ends_as(
    status: int,
    body: JSONObject | bytes,
    outcome: str,
    cause: HoldCause | None,
    attempts: int,
) -> None:
    harness = make(sequence(answer(status, body)), replace(CONFIG, max_attempts=3))
    [result] = harness.client.send_batch(KEY, recipients(1))
    assert (result.outcome, result.cause, result.attempts, result.http_status) == (
        outcome,
        cause,
        attempts,
        status,
    )
    assert len(harness.request_times) == attempts
    assert harness.observer.accepted == [outcome == "sent"] * attempts
    assert (result.error == "") is (outcome == "sent")
    assert result.whole_request is False
    if outcome != "sent":
        assert result.first_failed_at == datetime.fromtimestamp(T0, UTC)
        assert result.dispatch_id is None


def test_the_defaults_try_three_times_within_thirty_seconds() -> None:
    defaults = BrazeClientConfig(rest_endpoint="https://rest.example.test")
    assert (defaults.max_attempts, defaults.max_retry_time_s) == (3, 30.0)


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
    assert harness.observer.accepted == [False, False, True]
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


def test_429_every_time_is_held_for_the_rate_limit_after_waiting_for_each_reset() -> None:
    clock = FakeClock()

    def limited(request: httpx.Request) -> httpx.Response:
        reset = str(int(clock.now + 100))
        return httpx.Response(
            429, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}
        )

    harness = make(limited, replace(CONFIG, max_attempts=3), clock=clock)
    results = harness.client.send_batch(KEY, recipients(2))
    assert [(r.outcome, r.cause, r.attempts, r.http_status) for r in results] == [
        ("held", RATE_LIMIT, 3, 429)
    ] * 2
    assert harness.request_times == [T0, T0 + 100, T0 + 200]  # each waited for its reset
    assert harness.observer.retries == ["rate_limited", "rate_limited"]
    # The retry loop adds no backoff on top of the rate limiter's waits.
    assert [s for s in harness.clock.sleeps if s > 0] == [pytest.approx(100), pytest.approx(100)]
    assert not any(harness.observer.accepted)


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
    assert (result.outcome, result.cause, result.attempts, result.http_status) == (
        "held",
        OUTAGE,
        4,
        503,
    )
    assert "HTTP 503: down" in result.error
    assert len(harness.request_times) == 4


def test_503_three_times_is_held_as_an_outage_after_the_default_three_attempts() -> None:
    config = BrazeClientConfig(rest_endpoint=CONFIG.rest_endpoint, requests_per_hour=360_000_000)
    harness = make(sequence(httpx.Response(503, text="busy")), config)
    results = harness.client.send_batch(KEY, recipients(3))
    assert [(r.outcome, r.cause, r.attempts, r.http_status) for r in results] == [
        ("held", OUTAGE, 3, 503)
    ] * 3
    assert len(harness.request_times) == 3
    assert harness.observer.retries == ["server_error", "server_error"]
    assert harness.observer.accepted == [False] * 3
    assert all(r.first_failed_at == datetime.fromtimestamp(T0, UTC) for r in results)


def test_total_retry_time_is_bounded() -> None:
    clock = FakeClock()

    def slow_failure(request: httpx.Request) -> httpx.Response:
        clock.now += 10  # each attempt takes 10 s
        return httpx.Response(500)

    config = replace(CONFIG, max_attempts=1000, max_retry_time_s=60, backoff_max_s=8)
    harness = make(slow_failure, config, clock=clock)
    [result] = harness.client.send_batch(KEY, recipients(1))
    assert (result.outcome, result.cause) == ("held", OUTAGE)
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
    assert harness.observer.accepted == [False, True]


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


def test_transport_errors_are_held_as_an_outage_with_no_status() -> None:
    harness = make(sequence(httpx.ReadTimeout("slow")), replace(CONFIG, max_attempts=2))
    [result] = harness.client.send_batch(KEY, recipients(1))
    assert (result.outcome, result.cause, result.http_status) == ("held", OUTAGE, None)
    assert result.attempts == 2
    assert "ReadTimeout" in result.error


def users_in(request: httpx.Request) -> list[str]:
    body = json.loads(request.content)
    return [str(r["external_user_id"]) for r in body["recipients"]]


def rejecting(*bad_users: str, status: int = 400) -> Handler:
    """Rejects any request naming one of these users, as Braze rejects a whole batch.

    The body names the users it refuses (as the emulator's does), so the answer to a half differs
    from the answer to the whole unless the half holds exactly the same bad users.
    """

    def handler(request: httpx.Request) -> httpx.Response:
        bad = [user for user in users_in(request) if user in bad_users]
        if bad:
            errors = [f"external_user_id {user} was rejected" for user in bad]
            return httpx.Response(status, json={"message": "Invalid recipient", "errors": errors})
        return ok()

    return handler


def counted(handler: Handler) -> tuple[Handler, list[int]]:
    """The handler, and the number of recipients of each request it answered."""
    sizes: list[int] = []

    def counting(request: httpx.Request) -> httpx.Response:
        sizes.append(len(users_in(request)))
        return handler(request)

    return counting, sizes


@pytest.mark.parametrize("bad", [0, 17, 49], ids=["first", "middle", "last"])
def test_one_bad_recipient_does_not_sink_the_other_49(bad: int) -> None:
    harness = make(rejecting(f"user-{bad}"))
    results = harness.client.send_batch(KEY, recipients(50))
    assert [r.index for r in results] == list(range(50))
    assert [r.index for r in results if r.outcome == "rejected"] == [bad]
    assert sum(r.outcome == "sent" for r in results) == 49
    assert not any(r.whole_request for r in results)
    assert len(harness.request_times) <= 2 * math.ceil(math.log2(50)) + 1
    assert results[bad].http_status == 400
    assert results[bad].cause is None
    assert "Invalid recipient" in results[bad].error
    involving = [b for b in harness.bodies if f'"user-{bad}"' in json.dumps(b)]
    assert results[bad].attempts == len(involving) >= 6  # 50 halves six times down to one
    assert results[(bad + 25) % 50].attempts == 2  # the whole batch, then its own half


def test_two_bad_recipients_named_in_the_answer_are_both_found() -> None:
    handler, sizes = counted(rejecting("user-3", "user-40"))
    harness = make(handler)
    results = harness.client.send_batch(KEY, recipients(50))
    assert [r.index for r in results if r.outcome == "rejected"] == [3, 40]
    assert sum(r.outcome == "sent" for r in results) == 48
    assert not any(r.whole_request for r in results)
    assert [r.cause for r in results] == [None] * 50
    assert "user-3 " in results[3].error
    assert "user-40 " in results[40].error
    assert sizes[:3] == [50, 25, 25]  # both halves failed, but not as the whole did: go on
    assert len(sizes) <= 4 * math.ceil(math.log2(50)) + 1


def test_a_request_braze_refuses_whatever_its_recipients_is_rejected_in_three_requests() -> None:
    # An invalid Canvas id: every request gets the very same answer.
    refused = {"message": "Invalid Canvas ID", "errors": ["canvas_id canvas-1 is not valid"]}
    handler, sizes = counted(sequence(httpx.Response(400, json=refused)))
    harness = make(handler)
    results = harness.client.send_batch(KEY, recipients(50))
    assert sizes == [50, 25, 25]  # the whole and its two halves, instead of 99 requests
    assert [r.index for r in results] == list(range(50))
    assert {(r.outcome, r.http_status, r.whole_request, r.cause) for r in results} == {
        ("rejected", 400, True, None)
    }
    assert all("Invalid Canvas ID" in r.error for r in results)
    assert [r.attempts for r in results] == [2] * 50  # the whole, then its own half
    assert all(r.first_failed_at == datetime.fromtimestamp(T0, UTC) for r in results)


def test_the_early_stop_applies_to_each_part_of_a_bisection() -> None:
    # The first half's answer differs from the whole's, so bisection goes on below it; the second
    # half and both of its own halves get the very same answer, so that part stops there.
    def handler(request: httpx.Request) -> httpx.Response:
        users = users_in(request)
        message = "first half" if users == ["user-0", "user-1"] else "other"
        return httpx.Response(400, json={"message": message})

    counting, sizes = counted(handler)
    harness = make(counting)
    results = harness.client.send_batch(KEY, recipients(4))
    assert sizes == [4, 2, 2, 1, 1, 1, 1]
    assert [(r.outcome, r.whole_request) for r in results] == [
        ("rejected", False),
        ("rejected", False),
        ("rejected", True),
        ("rejected", True),
    ]


def test_a_413_is_bisected_to_single_recipients_even_when_every_answer_is_the_same() -> None:
    # Too large is about size: halves may pass, so no early stop (that is for 400s only).
    handler, sizes = counted(sequence(httpx.Response(413, text="Request Entity Too Large")))
    harness = make(handler)
    results = harness.client.send_batch(KEY, recipients(8))
    assert len(sizes) == 2 * 8 - 1
    assert {(r.outcome, r.http_status, r.whole_request) for r in results} == {
        ("rejected", 413, False)
    }


def test_413_is_bisected_too() -> None:
    harness = make(rejecting("user-5", status=413))
    results = harness.client.send_batch(KEY, recipients(8))
    assert [r.outcome for r in results].count("rejected") == 1
    assert results[5].http_status == 413
    assert not any(r.whole_request for r in results)


def test_a_half_that_fails_with_503_during_a_bisection_holds_only_its_recipients() -> None:
    whole = [f"user-{i}" for i in range(50)]

    def handler(request: httpx.Request) -> httpx.Response:
        users = users_in(request)
        if users != whole and "user-25" in users:  # the second half, whenever it is alone
            return httpx.Response(503, text="busy")
        return rejecting("user-3")(request)

    counting, sizes = counted(handler)
    harness = make(counting, replace(CONFIG, max_attempts=3))
    results = harness.client.send_batch(KEY, recipients(50))
    assert [r.index for r in results if r.outcome == "held"] == list(range(25, 50))
    assert {(r.cause, r.http_status, r.attempts) for r in results[25:]} == {(OUTAGE, 503, 4)}
    assert [r.index for r in results if r.outcome == "rejected"] == [3]
    assert [r.index for r in results if r.outcome == "sent"] == [*range(3), *range(4, 25)]
    assert not any(r.whole_request for r in results)
    assert sizes.count(25) == 1 + 3  # the first half once, the second half three attempts


@pytest.mark.parametrize(
    ("status", "cause"),
    [
        pytest.param(401, AUTH, id="401"),
        pytest.param(403, AUTH, id="403"),
        pytest.param(404, UNEXPECTED, id="404"),
    ],
)
def test_account_errors_hold_everyone_without_bisecting(status: int, cause: HoldCause) -> None:
    harness = make(sequence(httpx.Response(status, json={"message": "nope"})))
    results = harness.client.send_batch(KEY, recipients(50))
    assert {(r.outcome, r.cause, r.http_status) for r in results} == {("held", cause, status)}
    assert len(harness.request_times) == 1


def test_a_400_that_is_not_braze_json_is_held_without_bisecting() -> None:
    harness = make(sequence(httpx.Response(400, text="<html>Bad Request</html>")))
    results = harness.client.send_batch(KEY, recipients(50))
    assert {(r.outcome, r.cause, r.http_status) for r in results} == {("held", UNEXPECTED, 400)}
    assert len(harness.request_times) == 1


def test_bisection_can_be_switched_off() -> None:
    harness = make(rejecting("user-1"), replace(CONFIG, split_on_reject=False))
    results = harness.client.send_batch(KEY, recipients(4))
    assert {(r.outcome, r.whole_request) for r in results} == {("rejected", False)}
    assert len(harness.request_times) == 1


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({"x": math.nan}, id="NaN"),
        pytest.param({"x": [math.inf]}, id="inf (an event's 1e400)"),
        pytest.param({"x": "\ud800"}, id="lone surrogate value"),
        pytest.param({"\udfff": 1}, id="lone surrogate key"),
    ],
)
def test_a_recipient_that_is_not_strict_json_is_rejected_alone(bad: JSONObject) -> None:
    harness = make(sequence(ok()))
    batch: list[JSONObject] = [*recipients(2), {"external_user_id": "u", "context": bad}]
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
    assert harness.observer.accepted == [True]


def echo_key(request: httpx.Request) -> httpx.Response:
    """A 401 that echoes the credentials it got, as a careless server or proxy might."""
    return httpx.Response(401, text=f"bad credentials: {request.headers['authorization']}")


def test_the_api_key_never_leaks(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    harness = make(echo_key)
    results = harness.client.send_batch(KEY, recipients(3))
    assert all(r.outcome == "held" and r.cause is AUTH for r in results)
    assert all("[redacted]" in r.error for r in results)
    assert API_KEY not in repr(results)
    assert API_KEY not in repr(harness.client)
    assert API_KEY not in caplog.text


def test_a_401_is_held_for_auth_after_one_request() -> None:
    harness = make(sequence(httpx.Response(401, json={"message": "Invalid API key"})))
    results = harness.client.send_batch(KEY, recipients(5))
    assert [(r.outcome, r.cause, r.http_status, r.attempts) for r in results] == [
        ("held", AUTH, 401, 1)
    ] * 5
    assert len(harness.request_times) == 1
    assert harness.observer.retries == []
    assert harness.observer.accepted == [False]


def accepting_only(key: str) -> Handler:
    """Braze with one valid key; any other key is refused, and echoed back."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers["authorization"] == f"Bearer {key}":
            return ok()
        return echo_key(request)

    return handler


def test_a_rotated_key_is_read_before_an_auth_probe(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    valid = [NEW_API_KEY]  # the key Braze accepts; the client starts with the old one
    reads: list[str] = []

    def braze(request: httpx.Request) -> httpx.Response:
        return accepting_only(valid[0])(request)

    def key_source() -> str:
        reads.append(NEW_API_KEY)
        return NEW_API_KEY

    harness = make(braze, key_source=key_source)
    [first] = harness.client.send_batch(KEY, recipients(1))
    assert (first.outcome, first.cause, first.attempts) == ("held", AUTH, 1)
    assert reads == []  # nothing re-reads the key but a probe after an auth failure

    for cause in (HoldCause.OUTAGE, HoldCause.RATE_LIMIT, HoldCause.UNEXPECTED_RESPONSE):
        harness.client.prepare_probe(cause)
    assert reads == []
    harness.client.prepare_probe(HoldCause.AUTH)
    assert reads == [NEW_API_KEY]

    [second] = harness.client.send_batch(KEY, recipients(1))
    assert (second.outcome, second.cause, second.error) == ("sent", None, "")
    assert harness.observer.accepted == [False, True]

    valid[0] = "sk-test-some-third-key"  # the new key is revoked in turn: its echo is redacted too
    [third] = harness.client.send_batch(KEY, recipients(1))
    assert (third.outcome, third.cause) == ("held", AUTH)
    for result in (first, second, third):
        for key in (API_KEY, NEW_API_KEY):
            assert key not in result.error
            assert key not in repr(result)
    assert first.error == third.error == "HTTP 401: bad credentials: Bearer [redacted]"
    assert API_KEY not in caplog.text
    assert NEW_API_KEY not in caplog.text


def test_reload_api_key_says_whether_the_key_changed() -> None:
    keys = iter([API_KEY, NEW_API_KEY, NEW_API_KEY])
    harness = make(accepting_only(NEW_API_KEY), key_source=lambda: next(keys))
    assert harness.client.reload_api_key() is False  # the same key
    assert harness.client.reload_api_key() is True
    assert harness.client.reload_api_key() is False
    [result] = harness.client.send_batch(KEY, recipients(1))
    assert result.outcome == "sent"


def test_reload_api_key_without_a_key_source_keeps_the_key() -> None:
    harness = make(accepting_only(API_KEY))
    assert harness.client.reload_api_key() is False
    harness.client.prepare_probe(HoldCause.AUTH)
    [result] = harness.client.send_batch(KEY, recipients(1))
    assert result.outcome == "sent"


def unreadable_key() -> str:
    raise OSError("the key file is gone")


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(lambda: f'"{NEW_API_KEY}"', id="quoted"),
        pytest.param(lambda: f"{NEW_API_KEY}\n", id="newline"),
        pytest.param(lambda: "", id="empty"),
        pytest.param(unreadable_key, id="unreadable"),
    ],
)
def test_a_bad_rotated_key_keeps_the_old_one_without_echoing_it(
    source: Callable[[], str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    harness = make(accepting_only(API_KEY), key_source=source)
    assert harness.client.reload_api_key() is False
    harness.client.prepare_probe(HoldCause.AUTH)
    [result] = harness.client.send_batch(KEY, recipients(1))
    assert result.outcome == "sent"
    assert NEW_API_KEY not in caplog.text
    assert "could not re-read the Braze API key" in caplog.text


def test_a_key_echoed_across_the_error_cut_does_not_leak_in_part() -> None:
    def echo_late(request: httpx.Request) -> httpx.Response:
        # The cut keeps 1997 characters of "HTTP 401: " + this: the key straddles the cut.
        return httpx.Response(401, text="x" * 1970 + request.headers["authorization"])

    harness = make(echo_late)
    [result] = harness.client.send_batch(KEY, recipients(1))
    assert len(result.error) <= 2000
    assert API_KEY[:8] not in result.error


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


PROXY_PAGE = b"<html><body><form action='/login'>Sign in to the proxy</form></body></html>"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(PROXY_PAGE, id="html"),
        pytest.param(b"[1, 2]", id="json list"),
        pytest.param(b'"success"', id="json string"),
        pytest.param(b"\xff\xfe", id="not utf-8"),
        pytest.param(b"", id="empty"),
        pytest.param(b'{"message": "failure"}', id="other message"),
        pytest.param(b'{"dispatch_id": "d-1"}', id="no message"),
        pytest.param(b'{"dispatch_id": ' + b'"' + b"x" * 5000 + b'"}', id="oversized dispatch id"),
    ],
)
@pytest.mark.parametrize("status", [200, 201, 202])
def test_a_2xx_that_is_not_braze_success_is_held_not_sent(status: int, body: bytes) -> None:
    harness = make(sequence(httpx.Response(status, content=body)))
    results = harness.client.send_batch(KEY, recipients(3))
    assert [(r.outcome, r.cause, r.http_status, r.attempts) for r in results] == [
        ("held", UNEXPECTED, status, 1)
    ] * 3
    assert all(r.dispatch_id is None and not r.whole_request for r in results)
    assert all("not Braze's JSON success answer" in r.error for r in results)
    assert len(harness.request_times) == 1  # not retried by the client, not bisected
    assert harness.observer.retries == []
    assert harness.observer.accepted == [False]


def test_a_proxy_page_with_200_is_held_after_one_request_and_not_accepted() -> None:
    proxy = httpx.Response(200, content=PROXY_PAGE, headers={"content-type": "text/html"})
    harness = make(sequence(proxy, ok()))
    results = harness.client.send_batch(KEY, recipients(50))
    assert {(r.outcome, r.cause, r.http_status) for r in results} == {("held", UNEXPECTED, 200)}
    assert len(harness.request_times) == 1
    assert harness.observer.done == [("/canvas/trigger/send", 200, 50)]
    assert harness.observer.accepted == [False]
    assert "Sign in to the proxy" in results[0].error


def test_a_success_with_an_oversized_dispatch_id_is_sent_without_it() -> None:
    body = b'{"message": "success", "dispatch_id": "' + b"x" * 5000 + b'"}'
    harness = make(sequence(httpx.Response(201, content=body)))
    [result] = harness.client.send_batch(KEY, recipients(1))
    assert (result.outcome, result.dispatch_id, result.error) == ("sent", None, "")


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
    # A cut body is not Braze's JSON error, so it is not the event's fault.
    assert (result.outcome, result.cause) == ("held", UNEXPECTED)
    assert len(result.error) <= 2000
    assert chunks_read <= 20


def test_a_success_too_large_to_read_whole_is_not_sent() -> None:
    body = b'{"message": "success", "padding": "' + b" " * 2_000_000 + b'"}'
    harness = make(sequence(httpx.Response(201, content=body)))
    [result] = harness.client.send_batch(KEY, recipients(1))
    assert (result.outcome, result.cause) == ("held", UNEXPECTED)


def test_send_raw_returns_the_parsed_body() -> None:
    body = {"message": "success", "schedule_id": "s-1"}
    harness = make(sequence(httpx.Response(503), httpx.Response(201, json=body)))
    raw = harness.client.send_raw(
        Endpoint.CANVAS_SCHEDULE_DELETE, {"canvas_id": "c", "schedule_id": "s-1"}
    )
    assert (raw.ok, raw.status, raw.body, raw.attempts, raw.error) == (True, 201, body, 2, "")


def test_send_raw_is_not_ok_on_a_proxy_page() -> None:
    harness = make(sequence(httpx.Response(200, content=PROXY_PAGE)))
    raw = harness.client.send_raw(
        Endpoint.CANVAS_SCHEDULE_DELETE, {"canvas_id": "c", "schedule_id": "s-1"}
    )
    assert (raw.ok, raw.status, raw.body, raw.attempts) == (False, 200, None, 1)
    assert "not Braze's JSON success answer" in raw.error


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


# Any answer at all: a hypothesis test that nothing but Braze's JSON success answer is "sent".

# Each `|` is a fair choice between its sides: Braze's success answer comes up often enough.
MESSAGE = st.sampled_from(sorted(SUCCESS_MESSAGES)) | st.one_of(
    st.sampled_from(["Success", "SUCCESS", "error", "", "queued "]),
    st.none(),
    st.integers(),
    st.lists(st.text(max_size=3), max_size=2),
    st.text(max_size=10),
)
SUCCESS_BODY = st.builds(
    lambda message, extra: json.dumps({**extra, "message": message}).encode(),
    MESSAGE,
    st.dictionaries(st.sampled_from(["dispatch_id", "errors", "notice", "x"]), st.text(max_size=8)),
)
ANY_BODY = SUCCESS_BODY | st.one_of(
    st.binary(max_size=200),
    st.sampled_from([PROXY_PAGE, b"", b"null", b"[]", b'"success"', b"{}", b"\xff"]),
    st.text(max_size=50).map(lambda text: text.encode()),
    MESSAGE.map(lambda message: json.dumps([{"message": message}]).encode()),
)
HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
RATE_LIMIT_VALUE = st.one_of(
    HEADER_TEXT,
    st.integers(min_value=-5, max_value=10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.integers(min_value=-10, max_value=4_000).map(lambda s: str(int(T0) + s)),
    st.just("9" * 5000),
)
HEADERS = st.dictionaries(
    st.sampled_from(
        [
            "X-RateLimit-Remaining",
            "X-RateLimit-Reset",
            "X-RateLimit-Limit",
            "Retry-After",
            "Content-Type",
            "X-Request-Id",
        ]
    ),
    RATE_LIMIT_VALUE,
    max_size=6,
)
CONTENT_ENCODING = st.none() | st.sampled_from(["gzip", "deflate", "br", "identity", "bogus"])
STATUS = st.sampled_from([200, 201, 202, 400, 413, 429, 503]) | st.integers(100, 599)
# Half the answers are a 2xx with Braze's JSON (whose message may or may not say success).
ANSWER = st.tuples(st.sampled_from([200, 201, 202]), SUCCESS_BODY) | st.tuples(STATUS, ANY_BODY)


def is_braze_success(status: int, body: bytes) -> bool:
    try:
        parsed = json.loads(body)
    except ValueError:
        return False
    message = parsed.get("message") if isinstance(parsed, dict) else None
    return 200 <= status < 300 and isinstance(message, str) and message in SUCCESS_MESSAGES


@settings(max_examples=200, deadline=None)
@given(
    answer=ANSWER,
    headers=HEADERS,
    encoding=CONTENT_ENCODING,
    count=st.integers(min_value=1, max_value=4),
)
def test_no_answer_raises_and_only_braze_success_is_sent(
    answer: tuple[int, bytes], headers: dict[str, str], encoding: str | None, count: int
) -> None:
    status, body = answer
    if encoding is not None:
        headers = {**headers, "Content-Encoding": encoding}

    def braze(request: httpx.Request) -> httpx.Response:
        # A stream, as from a real server: decoding (Content-Encoding) happens as the client reads.
        return httpx.Response(status, headers=headers, stream=httpx.ByteStream(body))

    # The fake clock's sleep moves time on at once: rate-limit waits and backoffs cost nothing,
    # and jitter is pinned to its ceiling.
    harness = make(braze, replace(CONFIG, max_attempts=3))
    try:
        results: list[RecipientResult] = harness.client.send_batch(KEY, recipients(count))
    finally:
        harness.client.close()
    assert [r.index for r in results] == list(range(count))
    success = is_braze_success(status, body)
    event(f"outcomes {sorted({r.outcome for r in results})}")
    for result in results:
        assert result.http_status == status
        if result.outcome == "sent":
            assert success
            assert (result.cause, result.error) == (None, "")
        elif result.outcome == "held":
            assert result.cause is not None
        else:
            assert status in (400, 413)
            assert result.cause is None
        assert API_KEY not in result.error
        assert len(result.error) <= 2000
    if not success:
        assert not any(harness.observer.accepted)  # nor counted as accepted in the metrics
    elif encoding in (None, "identity"):
        assert {r.outcome for r in results} == {"sent"}
        assert harness.observer.accepted == [True]
