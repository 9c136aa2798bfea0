"""`Bisection` and `run_with_retries` without HTTP: scripted answers per group of recipients."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from consumer.braze.answers import HoldCause, Verdict
from consumer.braze.retry import (
    Attempt,
    Bisection,
    RequestOutcome,
    RetryHooks,
    RetryPolicy,
    run_with_retries,
)

T0 = 1_700_000_000.0


def attempt(
    verdict: Verdict,
    status: int | None,
    detail: str = "",
    *,
    cause: HoldCause | None = None,
    retry_now: bool = False,
) -> Attempt:
    return Attempt(
        verdict=verdict,
        cause=cause,
        retry_now=retry_now,
        status=status,
        detail=detail,
        body={"message": "success", "dispatch_id": "d-1"} if verdict == "success" else None,
        finished_at_s=T0,
        rate_wait_s=0.0,
    )


SENT = attempt("success", 201)
REFUSED = attempt("rejected", 400, "HTTP 400: Invalid Canvas ID")
DOWN = attempt("failed", 503, "HTTP 503: busy", cause=HoldCause.OUTAGE, retry_now=True)


def scripted(answer: Callable[[list[int]], Attempt]) -> tuple[Bisection, list[list[int]]]:
    """A bisection of 10 recipients whose groups get `answer(group)`, one attempt each."""
    groups: list[list[int]] = []

    def send_group(indices: list[int]) -> RequestOutcome:
        groups.append(indices)
        last = answer(indices)
        first = None if last.verdict == "success" else last.finished_at_s
        return RequestOutcome(last=last, attempts=1, first_failed_at_s=first)

    return Bisection(10, send_group, split=True), groups


def test_sendable_indices_need_not_be_contiguous_for_the_early_stop() -> None:
    bisection, groups = scripted(lambda group: REFUSED)
    results = bisection.run([0, 2, 5, 9])
    assert groups == [[0, 2, 5, 9], [0, 2], [5, 9]]
    assert [(r.index, r.outcome, r.whole_request, r.attempts) for r in results] == [
        (0, "rejected", True, 2),
        (2, "rejected", True, 2),
        (5, "rejected", True, 2),
        (9, "rejected", True, 2),
    ]
    assert {r.first_failed_at for r in results} == {datetime.fromtimestamp(T0, UTC)}


def test_a_single_recipient_is_never_split_nor_marked_whole_request() -> None:
    bisection, groups = scripted(lambda group: REFUSED)
    [result] = bisection.run([4])
    assert groups == [[4]]
    assert (result.outcome, result.whole_request) == ("rejected", False)


@pytest.mark.parametrize(
    ("half", "expected"),
    [
        pytest.param(attempt("rejected", 400, "HTTP 400: other"), "rejected", id="other body"),
        pytest.param(attempt("rejected", 413, "HTTP 400: Invalid Canvas ID"), "rejected", id="413"),
        pytest.param(DOWN, "held", id="503"),
        pytest.param(SENT, "sent", id="sent"),
    ],
)
def test_no_early_stop_unless_both_halves_answer_exactly_as_the_whole(
    half: Attempt, expected: str
) -> None:
    # The whole is refused; the first half gets the same answer, the second half another one.
    whole = [0, 1, 2, 3]

    def answer(group: list[int]) -> Attempt:
        return half if group == [2, 3] else REFUSED

    bisection, _ = scripted(answer)
    results = bisection.run(whole)
    assert not any(r.whole_request for r in results[2:])
    assert {r.outcome for r in results[2:]} == {expected}


def test_a_held_half_keeps_its_cause_and_sent_ones_their_dispatch_id() -> None:
    def answer(group: list[int]) -> Attempt:
        if len(group) == 4:
            return attempt("rejected", 400, "HTTP 400: user 1")
        return DOWN if 3 in group else SENT

    bisection, _ = scripted(answer)
    results = bisection.run([0, 1, 2, 3])
    assert [(r.outcome, r.cause, r.dispatch_id) for r in results] == [
        ("sent", None, "d-1"),
        ("sent", None, "d-1"),
        ("held", HoldCause.OUTAGE, None),
        ("held", HoldCause.OUTAGE, None),
    ]


@pytest.mark.parametrize(
    ("answers", "attempts", "verdict"),
    [
        pytest.param([DOWN, DOWN, DOWN, SENT], 3, "failed", id="503s stop at max_attempts"),
        pytest.param([DOWN, SENT], 2, "success", id="a retry succeeds"),
        pytest.param([REFUSED, SENT], 1, "rejected", id="a rejection is not retried"),
        pytest.param(
            [attempt("failed", 401, "HTTP 401", cause=HoldCause.AUTH), SENT],
            1,
            "failed",
            id="auth is not retried",
        ),
        pytest.param(
            [attempt("failed", 200, "HTML", cause=HoldCause.UNEXPECTED_RESPONSE), SENT],
            1,
            "failed",
            id="an unexpected answer is not retried",
        ),
    ],
)
def test_only_answers_marked_retry_now_are_tried_again(
    answers: list[Attempt], attempts: int, verdict: Verdict
) -> None:
    remaining = list(answers)
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    hooks = RetryHooks(
        monotonic=lambda: now[0],
        sleep=sleep,
        jitter=lambda ceiling_s: ceiling_s,
        server_wait_s=lambda: 0.0,
        on_retry=lambda failed, sleep_s: None,
    )
    policy = RetryPolicy(
        max_attempts=3, max_retry_time_s=30, backoff_initial_s=0.5, backoff_max_s=30
    )
    outcome = run_with_retries(lambda: remaining.pop(0), policy, hooks)
    assert (outcome.attempts, outcome.last.verdict) == (attempts, verdict)
    assert (outcome.first_failed_at_s is None) is (answers[0].verdict == "success")
