"""The emulator's faults (seeded, consumed per request) and its bounded request record."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from consumer.emulator.faults import (
    CANVAS_ARCHIVED,
    CANVAS_PAUSED,
    MAX_OVERRIDE_BODY_BYTES,
    AnswerOverride,
    FaultPlan,
    FaultSettings,
)
from consumer.emulator.record import MAX_STATS_PATHS, OTHER_PATHS, RecordedRequest, Recorder


def statuses(plan: FaultPlan, count: int) -> list[int | None]:
    return [plan.take_status() for _ in range(count)]


def test_status_sequence_is_consumed_one_per_request() -> None:
    plan = FaultPlan(FaultSettings(status_sequence=(503, 503, 201, 429)))
    assert statuses(plan, 5) == [503, 503, None, 429, None]
    assert plan.settings.status_sequence == ()


def test_status_sequence_comes_before_the_error_share() -> None:
    plan = FaultPlan(FaultSettings(status_sequence=(200,), error_share=1.0, error_statuses=(502,)))
    assert statuses(plan, 2) == [None, 502]


def test_error_share_is_repeatable_with_a_seed() -> None:
    settings = FaultSettings(error_share=0.3)
    first = statuses(FaultPlan(settings, seed=7), 1000)
    assert first == statuses(FaultPlan(settings, seed=7), 1000)
    errors = [status for status in first if status is not None]
    assert 240 <= len(errors) <= 360  # 30 % of 1000, with room for the draw
    assert set(errors) == {500, 502, 503, 504}


@pytest.mark.parametrize(
    ("share", "expected_errors"),
    [pytest.param(0.0, 0, id="never"), pytest.param(1.0, 50, id="always")],
)
def test_error_share_bounds(share: float, expected_errors: int) -> None:
    plan = FaultPlan(FaultSettings(error_share=share), seed=1)
    assert sum(status is not None for status in statuses(plan, 50)) == expected_errors


def test_drop_next_drops_that_many_then_answers() -> None:
    plan = FaultPlan(FaultSettings(drop_next=2))
    assert [plan.take_drop() for _ in range(3)] == [True, True, False]


def test_drop_share_is_repeatable_with_a_seed() -> None:
    draws = [FaultPlan(FaultSettings(drop_share=0.5), seed=3) for _ in range(2)]
    first, second = ([plan.take_drop() for _ in range(200)] for plan in draws)
    assert first == second
    assert 70 <= sum(first) <= 130


@pytest.mark.parametrize(
    ("latency_ms", "low_s", "high_s"),
    [
        pytest.param((0, 0), 0.0, 0.0, id="none"),
        pytest.param((250, 250), 0.25, 0.25, id="fixed"),
        pytest.param((10, 30), 0.01, 0.03, id="range"),
    ],
)
def test_latency_is_drawn_from_the_range(
    latency_ms: tuple[int, int], low_s: float, high_s: float
) -> None:
    plan = FaultPlan(FaultSettings(latency_ms=latency_ms), seed=5)
    delays = [plan.delay_s() for _ in range(100)]
    assert all(low_s <= delay <= high_s for delay in delays)
    if low_s < high_s:
        assert len(set(delays)) > 50


def test_rejected_ids_and_canvas_notices() -> None:
    plan = FaultPlan(
        FaultSettings(
            reject_external_user_ids=frozenset({"bad"}),
            paused_canvas_ids=frozenset({"p", "both"}),
            archived_canvas_ids=frozenset({"a", "both"}),
        )
    )
    assert plan.rejected(["ok", "bad", "ok2", "bad"]) == ["bad", "bad"]
    assert [plan.canvas_notice(c) for c in ("p", "a", "both", "live")] == [
        CANVAS_PAUSED,
        CANVAS_ARCHIVED,
        CANVAS_ARCHIVED,
        None,
    ]


@pytest.mark.parametrize(
    ("target_id", "canvas", "expected"),
    [
        pytest.param(
            "cv-x",
            True,
            ("Invalid Canvas ID", "canvas_id cv-x is not an API-triggered Canvas"),
            id="canvas",
        ),
        pytest.param(
            "cv-x",
            False,
            ("Invalid Campaign ID", "campaign_id cv-x is not an API-triggered campaign"),
            id="campaign",
        ),
        pytest.param("cv-ok", True, None, id="other id"),
    ],
)
def test_invalid_target(target_id: str, canvas: bool, expected: tuple[str, str] | None) -> None:
    plan = FaultPlan(FaultSettings(invalid_target_ids=frozenset({"cv-x"})))
    assert plan.invalid_target(target_id, canvas=canvas) == expected


def test_answer_override_defaults_to_html() -> None:
    override = AnswerOverride(status=302, body="x" * MAX_OVERRIDE_BODY_BYTES)
    assert override.content_type == "text/html; charset=utf-8"


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        pytest.param({"status": 99}, "100-599", id="status below 100"),
        pytest.param({"status": 600}, "100-599", id="status above 599"),
        pytest.param({"body": "x" * (MAX_OVERRIDE_BODY_BYTES + 1)}, "limit", id="body too long"),
        pytest.param({"body": "é" * (MAX_OVERRIDE_BODY_BYTES // 2 + 1)}, "limit", id="bytes count"),
        pytest.param({"content_type": "text/html\r\nX-Evil: 1"}, "ASCII", id="header injection"),
        pytest.param({"content_type": " "}, "empty", id="blank content type"),
    ],
)
def test_answer_override_refuses_nonsense(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AnswerOverride(**{"status": 200, "body": "<html></html>", **changes})


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"latency_ms": (20, 10)}, id="latency range reversed"),
        pytest.param({"latency_ms": (-1, 10)}, id="negative latency"),
        pytest.param({"error_share": 1.5}, id="error share above 1"),
        pytest.param({"drop_share": -0.1}, id="negative drop share"),
        pytest.param({"drop_next": -1}, id="negative drop count"),
        pytest.param({"status_sequence": (99,)}, id="status below 100"),
        pytest.param({"error_statuses": ()}, id="no error statuses"),
    ],
)
def test_fault_settings_refuse_nonsense(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (each row has its own message)
        FaultSettings(**changes)


def entry(
    seq: int, body_text: str = "{}", status: int | None = 201, recipients: int = 1
) -> RecordedRequest:
    return RecordedRequest(
        seq=seq,
        time_s=1.0,
        method="POST",
        path="/canvas/trigger/send",
        status=status,
        body_text=body_text,
        body_bytes=len(body_text),
        body_truncated=False,
        recipients=recipients,
        message=None,
    )


def fill(recorder: Recorder, count: int, body_text: str = "{}") -> None:
    for _ in range(count):
        recorder.add(entry(recorder.next_seq(), body_text), sent=True)


def test_record_keeps_the_newest_entries_within_its_bound() -> None:
    recorder = Recorder(max_requests=3)
    fill(recorder, 5)
    assert [e.seq for e in recorder.since(0)] == [3, 4, 5]
    assert recorder.stats().requests_total == 5  # counts cover forgotten entries too


def test_record_is_bounded_in_body_size() -> None:
    one_entry = 10 + len("/canvas/trigger/send")  # the body and the path
    recorder = Recorder(max_chars=2 * one_entry + one_entry // 2)
    fill(recorder, 4, body_text="x" * 10)
    assert [e.seq for e in recorder.since(0)] == [3, 4]


def test_record_counts_error_texts_against_its_bound() -> None:
    recorder = Recorder(max_chars=10_000)
    refused = replace(entry(1, status=400), message="m" * 100, errors=("e" * 1000,) * 3)
    recorder.add(refused, sent=False)
    fill(recorder, 3, body_text="x" * 2400)
    # 3 x 2420 + the refused one's 3122 is past 10k; without its error texts it would not be.
    assert [e.seq for e in recorder.since(0)] == [2, 3, 4]


def test_stats_count_a_bounded_number_of_paths_by_name() -> None:
    recorder = Recorder()
    for n in range(MAX_STATS_PATHS + 5):
        recorder.add(replace(entry(n + 1, status=404), path=f"/probe/{n}"), sent=False)
    by_path = recorder.stats().by_path
    assert len(by_path) == MAX_STATS_PATHS + 1
    assert by_path[OTHER_PATHS] == {"404": 5}
    assert recorder.stats().requests_total == MAX_STATS_PATHS + 5


@pytest.mark.parametrize(
    ("since", "limit", "seqs"),
    [
        pytest.param(0, None, [1, 2, 3, 4], id="all"),
        pytest.param(2, None, [3, 4], id="cursor"),
        pytest.param(1, 2, [2, 3], id="cursor and limit"),
        pytest.param(4, None, [], id="nothing newer"),
    ],
)
def test_record_cursor(since: int, limit: int | None, seqs: list[int]) -> None:
    recorder = Recorder()
    fill(recorder, 4)
    assert [e.seq for e in recorder.since(since, limit)] == seqs


def test_stats_count_by_path_status_and_recipients() -> None:
    recorder = Recorder()
    recorder.add(entry(1, recipients=50), sent=True)
    recorder.add(entry(2, recipients=50), sent=True)
    recorder.add(entry(3, recipients=7), sent=False)  # a paused Canvas: accepted, nothing sent
    recorder.add(entry(4, status=400, recipients=3), sent=False)
    recorder.add(entry(5, status=None), sent=False)
    stats = recorder.stats()
    assert stats.requests_total == 5
    assert stats.accepted_requests == 3
    assert stats.recipients_sent == 100
    assert stats.recipients_per_request == {"50": 2}
    assert stats.by_status == {"201": 3, "400": 1, "dropped": 1}
    assert stats.by_path == {"/canvas/trigger/send": {"201": 3, "400": 1, "dropped": 1}}


def test_clear_forgets_but_sequence_keeps_rising() -> None:
    recorder = Recorder()
    fill(recorder, 2)
    recorder.clear()
    assert recorder.since(0) == []
    assert recorder.stats().requests_total == 0
    assert recorder.next_seq() == 3
    with pytest.raises(ValueError, match="seq order"):
        recorder.add(entry(1), sent=True)
