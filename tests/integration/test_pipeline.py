"""The service end to end: real Kafka broker, real `braze-consumer run` process, Braze emulator."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from consumer.emulator.control import EmulatorControl
from tests.integration.kafka_helpers import committed_offsets, consume_all
from tests.integration.service_helpers import (
    API_KEY,
    Scenario,
    free_port,
    header_map,
    make_scenario,
    run_cli,
    scrape_total,
    wait_until,
)


def _run_to_idle(scenario: Scenario, **overrides: object) -> None:
    service = scenario.start(scenario.config(**overrides))
    code = service.wait(120)
    assert code == 0, service.log()


def test_every_event_is_sent_skipped_or_dead_lettered(scenario: Scenario) -> None:
    good = [scenario.event(i) for i in range(120)]
    other = [scenario.event(1000 + i, kind="user.logged_in") for i in range(30)]
    malformed = [b"{not json", b"[1, 2]", b"\xff\xfe"]
    missing_user = [json.dumps({"type": "user.signed_up", "data": {"seq": 7}}).encode()]
    scenario.produce_events(good + other + malformed + missing_user)

    _run_to_idle(scenario)

    sent = scenario.sent_users()
    assert set(sent) == {f"u-{i}" for i in range(120)}
    dead = consume_all(scenario.bootstrap, scenario.dlq_topic, expected=4, timeout_s=30)
    reasons = sorted(header_map(m.meta.headers)["dlq.reason"] for m in dead)
    assert reasons == ["invalid_json"] * 3 + ["mapping_error"]
    total = len(good) + len(other) + len(malformed) + len(missing_user)
    assert committed_offsets(scenario.bootstrap, scenario.group, scenario.topic) == {0: total}


def test_full_batches_of_50_under_load(scenario: Scenario) -> None:
    scenario.produce_events([scenario.event(i) for i in range(1000)])

    _run_to_idle(scenario, batching__max_wait_ms=2000)

    sizes = [len(body["recipients"]) for body in scenario.accepted_bodies()]
    assert sum(sizes) == 1000
    assert sizes.count(50) >= 19, sizes


def test_partial_batch_is_sent_after_max_wait(scenario: Scenario) -> None:
    service = scenario.start(scenario.config(batching__max_wait_ms=300), exit_when_idle_s=None)
    try:
        scenario.produce_events([scenario.event(i) for i in range(3)])
        wait_until(lambda: sum(scenario.sent_users().values()) == 3, 60, "3 recipients sent")
        assert [len(b["recipients"]) for b in scenario.accepted_bodies()] == [3]
    finally:
        service.signal(signal.SIGTERM)
        assert service.wait(60) == 0, service.log()


def test_503_503_201_is_retried_to_success(scenario: Scenario) -> None:
    scenario.emulator.set_faults(status_sequence=[503, 503])
    scenario.produce_events([scenario.event(1)])

    _run_to_idle(scenario)

    calls = [r for r in scenario.emulator.requests() if r.path == "/canvas/trigger/send"]
    assert [r.status for r in calls] == [503, 503, 201]
    assert scenario.sent_users() == {"u-1": 1}
    assert committed_offsets(scenario.bootstrap, scenario.group, scenario.topic) == {0: 1}


def test_rejected_event_is_dead_lettered_with_documented_headers(scenario: Scenario) -> None:
    scenario.emulator.set_faults(reject_external_user_ids=["u-bad"])
    value = scenario.event(5, user_id="u-bad")
    scenario.produce_events([value])

    _run_to_idle(scenario)

    [letter] = consume_all(scenario.bootstrap, scenario.dlq_topic, expected=1, timeout_s=30)
    headers = header_map(letter.meta.headers)
    assert letter.value == value
    assert letter.meta.key == b"k-0"
    assert headers["dlq.reason"] == "braze_rejected"
    assert headers["dlq.http_status"] == "400"
    assert headers["dlq.rule_id"] == "welcome"
    assert headers["dlq.source.topic"] == scenario.topic
    assert (headers["dlq.source.partition"], headers["dlq.source.offset"]) == ("0", "0")
    assert int(headers["dlq.attempts"]) >= 1
    assert headers["dlq.failed_at"].endswith("Z")
    assert headers["dlq.first_failed_at"].endswith("Z")
    assert headers["dlq.error"]
    assert API_KEY not in json.dumps(headers)
    assert committed_offsets(scenario.bootstrap, scenario.group, scenario.topic) == {0: 1}


def test_one_bad_recipient_does_not_sink_the_batch(scenario: Scenario) -> None:
    scenario.emulator.set_faults(reject_external_user_ids=["u-17"])
    scenario.produce_events([scenario.event(i) for i in range(50)])

    _run_to_idle(scenario, batching__max_wait_ms=2000)

    assert set(scenario.sent_users()) == {f"u-{i}" for i in range(50)} - {"u-17"}
    [letter] = consume_all(scenario.bootstrap, scenario.dlq_topic, expected=1, timeout_s=30)
    assert header_map(letter.meta.headers)["dlq.source.offset"] == "17"


def test_429_is_honoured_until_reset(scenario: Scenario) -> None:
    scenario.emulator.set_budget(per_second=1)
    scenario.produce_events([scenario.event(i) for i in range(5)])

    _run_to_idle(scenario, batching__max_recipients=1)

    calls = [r for r in scenario.emulator.requests() if r.path == "/canvas/trigger/send"]
    accepted = [r for r in calls if r.status is not None and 200 <= r.status < 300]
    assert len(accepted) == 5
    # The per-second budget allows one request per clock second: a client that honours
    # X-RateLimit-Remaining/Reset never sends two in the same second.
    seconds = [int(r.time_epoch_s) for r in accepted]
    assert len(set(seconds)) == 5, seconds
    assert scenario.sent_users() == {f"u-{i}": 1 for i in range(5)}


@pytest.mark.parametrize(
    "commit_interval_ms",
    [
        pytest.param(60_000, id="no commit before the kill (worst case)"),
        pytest.param(200, id="commits every 200 ms"),
        pytest.param(0, id="commits after every turn that settled (the default)"),
    ],
)
def test_kill_9_between_send_and_commit_loses_nothing(
    scenario: Scenario, commit_interval_ms: int
) -> None:
    count = 400
    scenario.produce_events([scenario.event(i) for i in range(count)])
    # 200 ms answers, 2 at a time: ~4 s of sending, so the kill lands mid-stream with requests
    # in flight.
    scenario.emulator.set_faults(latency_ms=200)
    config = scenario.config(
        kafka__commit_interval_ms=commit_interval_ms,
        batching__max_recipients=10,
        braze__max_in_flight=2,
    )
    service = scenario.start(config, exit_when_idle_s=None)
    wait_until(lambda: sum(scenario.sent_users().values()) >= count // 2, 90, "half sent")
    service.kill9()
    scenario.emulator.set_faults(latency_ms=0)

    _run_to_idle(scenario)

    sent = scenario.sent_users()
    assert set(sent) == {f"u-{i}" for i in range(count)}
    duplicates = sum(n - 1 for n in sent.values())
    print(f"kill -9 duplicates (commit every {commit_interval_ms} ms): {duplicates} of {count}")
    assert committed_offsets(scenario.bootstrap, scenario.group, scenario.topic) == {0: count}


def test_second_consumer_joining_mid_stream_loses_nothing(
    kafka_bootstrap: str, tmp_path: Path, emulator: tuple[EmulatorControl, str]
) -> None:
    control, url = emulator
    scenario = make_scenario(kafka_bootstrap, tmp_path, control, url, partitions=4)
    control.set_faults(latency_ms=50)
    count = 800
    for part in range(4):
        values = [scenario.event(i) for i in range(part, count, 4)]
        scenario.produce_events(values, partition=part)
    config = scenario.config(batching__max_recipients=10)
    first = scenario.start(config, exit_when_idle_s=3)
    wait_until(lambda: sum(scenario.sent_users().values()) >= 100, 60, "first consumer sending")
    second = scenario.start(config, exit_when_idle_s=3)

    assert first.wait(120) == 0, first.log()
    assert second.wait(120) == 0, second.log()

    assert set(scenario.sent_users()) == {f"u-{i}" for i in range(count)}
    committed = committed_offsets(kafka_bootstrap, scenario.group, scenario.topic)
    assert committed == dict.fromkeys(range(4), count // 4)


def test_sigterm_drains_and_commits(scenario: Scenario) -> None:
    # A long max_wait keeps the batch partial: only the drain can send it.
    port = free_port()
    config = scenario.config(batching__max_wait_ms=60_000, metrics__port=port)
    service = scenario.start(config, exit_when_idle_s=None)
    scenario.produce_events([scenario.event(i) for i in range(7)])
    consumed = "braze_consumer_events_consumed_total"
    wait_until(lambda: scrape_total(port, consumed) >= 7, 60, "7 events consumed")
    assert scenario.sent_users() == {}
    service.signal(signal.SIGTERM)

    assert service.wait(60) == 0, service.log()
    assert sum(scenario.sent_users().values()) == 7
    assert committed_offsets(scenario.bootstrap, scenario.group, scenario.topic) == {0: 7}


def test_dlq_replay_resends_only_the_failed_rule(scenario: Scenario) -> None:
    scenario.emulator.set_faults(reject_external_user_ids=["u-3"])
    scenario.produce_events([scenario.event(i) for i in range(5)] + [b"not json"])
    _run_to_idle(scenario)
    assert set(scenario.sent_users()) == {"u-0", "u-1", "u-2", "u-4"}

    config = scenario.config()
    dry = run_cli(["dlq", "replay", "--config", str(config), "--dry-run"])
    listed = [json.loads(line) for line in dry.stdout.splitlines()]
    assert sorted(item["reason"] for item in listed) == ["braze_rejected", "invalid_json"]

    scenario.emulator.clear_faults()
    done = run_cli(["dlq", "replay", "--config", str(config), "--reason", "braze_rejected"])
    assert "selected 1" in done.stderr, done.stderr
    assert scenario.sent_users() == {f"u-{i}": 1 for i in range(5)}


def test_braze_timeouts_are_retried_not_dead_lettered(scenario: Scenario) -> None:
    # Every answer takes 1.5 s against a 1 s read timeout until the fault is lifted.
    scenario.emulator.set_faults(latency_ms=1500)
    config = scenario.config(braze__read_timeout_ms=1000, braze__max_attempts=20)
    service = scenario.start(config, exit_when_idle_s=2)
    scenario.produce_events([scenario.event(i) for i in range(3)])

    def calls() -> int:
        return sum(r.path == "/canvas/trigger/send" for r in scenario.emulator.requests())

    wait_until(lambda: calls() >= 2, 60, "a timed-out request and its retry")
    scenario.emulator.set_faults(latency_ms=0)

    assert service.wait(120) == 0, service.log()
    assert set(scenario.sent_users()) == {"u-0", "u-1", "u-2"}
    assert consume_all(scenario.bootstrap, scenario.dlq_topic, expected=0, timeout_s=3) == []
    assert committed_offsets(scenario.bootstrap, scenario.group, scenario.topic) == {0: 3}


def test_oversized_properties_are_dead_lettered_as_too_large(scenario: Scenario) -> None:
    huge = json.dumps(
        {"type": "user.signed_up", "data": {"user_id": "u-big", "seq": "x" * 60_000}}
    ).encode()
    scenario.produce_events([scenario.event(1), huge, scenario.event(2)])

    _run_to_idle(scenario)

    assert set(scenario.sent_users()) == {"u-1", "u-2"}
    [letter] = consume_all(scenario.bootstrap, scenario.dlq_topic, expected=1, timeout_s=30)
    assert header_map(letter.meta.headers)["dlq.reason"] == "too_large"
    assert letter.value == huge
