"""Delivery guarantees end to end (real broker, the emulator, the real `braze-consumer run`).

A failure of Braze or of the deployment (an outage, a bad key, a proxy in the way) holds the
service and dead-letters nothing; a Canvas Braze rejects costs a handful of requests; a crash or a
rebalance re-sends only what was in flight. These scenarios wait on real time (a 60 s outage, a
30 s auth failure, kills), so one module fixture runs them all concurrently, each with its own
emulator, topics, group and service processes on the session's broker, and each test asserts on
its own scenario's outcome. `pytest -s` prints one line of figures per scenario.
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from consumer.emulator.control import EmulatorControl
from consumer.emulator.faults import AnswerOverride
from consumer.emulator.server import start_emulator
from consumer.emulator.wire import RecordedRequestView
from tests.integration.kafka_helpers import committed_offsets, consume_all
from tests.integration.service_helpers import (
    API_KEY,
    CANVAS_SEND,
    Scenario,
    accepted_users,
    free_port,
    header_map,
    make_scenario,
    rule_yaml,
    scrape_total,
    wait_until,
)

# An answer read by the service is settled and committed in the same loop turn, a few ms later;
# a kill within this long after an answer may still re-send that request (its commit was not out).
ANSWER_TO_COMMIT_S = 0.25


@dataclass
class Outcome:
    """What one scenario did, from the emulator's record and the topics."""

    name: str
    events: int  # sends expected (one per user)
    sent: Counter[str]  # user -> accepted requests that carried it
    dead: int  # dead letters written
    requests: int  # Braze requests of the scenario (every status)
    facts: dict[str, object] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return self.events - len(self.sent)

    @property
    def duplicated(self) -> int:
        return sum(n - 1 for n in self.sent.values())

    def line(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in self.facts.items())
        return (
            f"{self.name}: events={self.events} sent={sum(self.sent.values())} "
            f"dead_lettered={self.dead} lost={self.lost} duplicated={self.duplicated} "
            f"requests={self.requests} {extra}"
        )


@dataclass
class Ctx:
    bootstrap: str
    workdir: Path


def _canvas_calls(control: EmulatorControl) -> list[RecordedRequestView]:
    return [r for r in control.requests() if r.path == CANVAS_SEND]


def _dead(scenario: Scenario, expected: int) -> list[dict[str, str]]:
    letters = consume_all(scenario.bootstrap, scenario.dlq_topic, expected, timeout_s=10)
    return [header_map(m.meta.headers) for m in letters]


def _backlog(scenario: Scenario, count: int, partitions: int) -> None:
    for part in range(partitions):
        scenario.produce_events([scenario.event(i) for i in range(part, count, partitions)], part)


def _scenario(ctx: Ctx, control: EmulatorControl, url: str, name: str, parts: int) -> Scenario:
    workdir = ctx.workdir / name
    workdir.mkdir()
    return make_scenario(ctx.bootstrap, workdir, control, url, partitions=parts)


# -- the scenarios ----------------------------------------------------------------------------


def outage(ctx: Ctx, control: EmulatorControl, url: str) -> Outcome:
    """Every request 503 for 60 s while a backlog of 3,000 is processed, then recovery."""
    scenario = _scenario(ctx, control, url, "outage", 3)
    count = 3_000
    _backlog(scenario, count, 3)
    control.set_faults(latency_ms=20)
    port = free_port()
    config = scenario.config(
        batching__max_recipients=10, braze__max_in_flight=8, metrics__port=port
    )
    service = scenario.start(config, exit_when_idle_s=3)
    wait_until(lambda: sum(accepted_users(_canvas_calls(control)).values()) >= 300, 90, "300 sent")
    control.set_faults(error_share=1.0, error_statuses=[503])
    first_seq = control.requests_page().last_seq
    time.sleep(10)  # the lag gauge is refreshed every 5 s
    holding = scrape_total(port, "braze_consumer_braze_holding")
    lag = scrape_total(port, "braze_consumer_lag_messages")
    time.sleep(50)
    outage_seq = control.requests_page().last_seq
    control.set_faults(error_share=0.0)
    code = service.wait(300)
    calls = _canvas_calls(control)
    during = [c for c in calls if first_seq < c.seq <= outage_seq]
    return Outcome(
        "outage-60s",
        count,
        accepted_users(calls),
        len(_dead(scenario, 0)),
        len(calls),
        {
            "exit": code,
            "requests_during_outage": len(during),
            "holding_gauge": holding,
            "lag_during_outage": lag,
            "log": service.log(),
        },
    )


def auth(ctx: Ctx, control: EmulatorControl, url: str) -> Outcome:
    """A wrong key in braze.api_key_file for 30 s, then the right key written to the file."""
    scenario = _scenario(ctx, control, url, "auth", 2)
    count = 1_000
    _backlog(scenario, count, 2)
    key_file = scenario.workdir / "api-key"
    key_file.write_text("wrong-key-0123456789\n", encoding="utf-8")
    port = free_port()
    config = scenario.config(braze__api_key_file=str(key_file), metrics__port=port)
    service = scenario.start(config, exit_when_idle_s=3, api_key=None)
    wait_until(lambda: len(_canvas_calls(control)) >= 1, 60, "a first request")
    time.sleep(30)
    holding = scrape_total(port, "braze_consumer_braze_holding")
    during = len(_canvas_calls(control))
    alive = service.proc.poll() is None
    key_file.write_text(API_KEY + "\n", encoding="utf-8")
    code = service.wait(300)
    calls = _canvas_calls(control)
    return Outcome(
        "auth-401-30s",
        count,
        accepted_users(calls),
        len(_dead(scenario, 0)),
        len(calls),
        {
            "exit": code,
            "requests_during_401": during,
            "alive_after_30s": alive,
            "key_in_log": "wrong-key-0123456789" in service.log() or API_KEY in service.log(),
            "holding_gauge": holding,
            "log": service.log(),
        },
    )


def proxy(ctx: Ctx, control: EmulatorControl, url: str) -> Outcome:
    """A proxy answers 200 with an HTML login page for 20 s, then Braze answers again."""
    scenario = _scenario(ctx, control, url, "proxy", 2)
    count = 1_000
    _backlog(scenario, count, 2)
    page = "<html><body><form action=/login>Sign in to continue</form></body></html>"
    control.set_faults(answer_override=AnswerOverride(status=200, body=page))
    port = free_port()
    service = scenario.start(scenario.config(metrics__port=port), exit_when_idle_s=3)
    wait_until(lambda: len(_canvas_calls(control)) >= 1, 60, "a first request")
    time.sleep(20)
    counted = scrape_total(port, "braze_consumer_recipients_sent_total")
    committed = committed_offsets(scenario.bootstrap, scenario.group, scenario.topic)
    during = len(_canvas_calls(control))
    control.set_faults(answer_override=False)
    code = service.wait(300)
    calls = _canvas_calls(control)
    return Outcome(
        "proxy-html-20s",
        count,
        accepted_users(calls),
        len(_dead(scenario, 0)),
        len(calls),
        {
            "exit": code,
            "counted_sent_during_proxy": counted,
            "committed_during_proxy": sum(committed.values()),
            "requests_during_proxy": during,
            "log": service.log(),
        },
    )


def rejected_target(ctx: Ctx, control: EmulatorControl, url: str) -> Outcome:
    """A rule whose Canvas id Braze rejects (500 events) among good events (1,000)."""
    scenario = _scenario(ctx, control, url, "rejected", 2)
    topic = scenario.topic
    rules = rule_yaml("welcome", topic, "user.signed_up", "canvas-welcome")
    rules += rule_yaml("broken", topic, "user.logged_in", "canvas-missing")
    scenario.rules_path.write_text("rules:\n" + rules, encoding="utf-8")
    values = []
    for i in range(1_500):
        kind = "user.logged_in" if i % 3 == 2 else "user.signed_up"
        values.append(scenario.event(i, kind=kind))
    scenario.produce_events(values)
    control.set_faults(invalid_target_ids=["canvas-missing"])
    service = scenario.start(scenario.config(), exit_when_idle_s=3)
    code = service.wait(300)
    calls = _canvas_calls(control)
    bad = [c for c in calls if isinstance(c.body, dict) and c.body["canvas_id"] == "canvas-missing"]
    letters = _dead(scenario, 500)
    return Outcome(
        "rejected-canvas",
        1_000,
        accepted_users(calls),
        len(letters),
        len(calls),
        {
            "exit": code,
            "requests_to_bad_canvas": len(bad),
            "dead_reasons": dict(Counter(h["dlq.reason"] for h in letters)),
            "dead_rules": dict(Counter(h["dlq.rule_id"] for h in letters)),
            "dead_errors_name_braze": all("Invalid Canvas ID" in h["dlq.error"] for h in letters),
            "log": service.log(),
        },
    )


def kills(ctx: Ctx, control: EmulatorControl, url: str) -> Outcome:
    """SIGKILL 5 times at random moments while 6,000 sends (600 requests) are worked through."""
    scenario = _scenario(ctx, control, url, "kills", 6)
    count = 6_000
    _backlog(scenario, count, 6)
    control.set_faults(latency_ms=(100, 200))
    config = scenario.config(batching__max_recipients=10, braze__max_in_flight=6)
    rng = random.Random(7)
    kill_times: list[float] = []
    for _ in range(5):
        service = scenario.start(config, exit_when_idle_s=None)
        seen = len(_canvas_calls(control))

        def sending(before: int = seen) -> bool:
            return len(_canvas_calls(control)) > before

        wait_until(sending, 90, "sending again")
        time.sleep(rng.uniform(0.5, 4.0))
        kill_times.append(time.time())
        service.kill9()
    final = scenario.start(config, exit_when_idle_s=3)
    code = final.wait(300)
    calls = _canvas_calls(control)
    accepted = [c for c in calls if c.status is not None and 200 <= c.status < 300]
    in_flight = sum(
        c.recipients
        for t in kill_times
        for c in accepted
        if c.time_epoch_s <= t < c.answered_epoch_s
    )
    in_doubt = sum(
        c.recipients
        for t in kill_times
        for c in accepted
        if c.time_epoch_s <= t < c.answered_epoch_s + ANSWER_TO_COMMIT_S
    )
    return Outcome(
        "sigkill-x5",
        count,
        accepted_users(calls),
        len(_dead(scenario, 0)),
        len(calls),
        {
            "exit": code,
            "in_flight_at_kills": in_flight,
            "in_doubt_at_kills": in_doubt,
            "log": final.log(),
        },
    )


def rebalance(ctx: Ctx, control: EmulatorControl, url: str) -> Outcome:
    """A second consumer joins mid-stream and later leaves (SIGTERM) while the first goes on."""
    scenario = _scenario(ctx, control, url, "rebalance", 4)
    count = 2_000
    _backlog(scenario, count, 4)
    control.set_faults(latency_ms=(50, 100))
    config = scenario.config(batching__max_recipients=10, braze__max_in_flight=4)
    first = scenario.start(config, exit_when_idle_s=3)

    def sent() -> int:
        return sum(accepted_users(_canvas_calls(control)).values())

    wait_until(lambda: sent() >= 300, 90, "first consumer sending")
    second = scenario.start(config, exit_when_idle_s=None)
    wait_until(lambda: sent() >= 1_200, 120, "both consumers sending")
    second.signal(signal.SIGTERM)
    second_code = second.wait(60)
    code = first.wait(300)
    calls = _canvas_calls(control)
    committed = committed_offsets(scenario.bootstrap, scenario.group, scenario.topic)
    return Outcome(
        "join-and-leave",
        count,
        accepted_users(calls),
        len(_dead(scenario, 0)),
        len(calls),
        {
            "exit": code,
            "second_exit": second_code,
            "committed": sum(committed.values()),
            "log": first.log() + second.log(),
        },
    )


SCENARIOS: dict[str, Callable[[Ctx, EmulatorControl, str], Outcome]] = {
    "outage": outage,
    "auth": auth,
    "proxy": proxy,
    "rejected": rejected_target,
    "kills": kills,
    "rebalance": rebalance,
}


def _run(ctx: Ctx, name: str) -> Outcome:
    with start_emulator(api_keys=(API_KEY,)) as running:
        return SCENARIOS[name](ctx, EmulatorControl(running.url), running.url)


@pytest.fixture(scope="module")
def outcomes(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    ctx = Ctx(kafka_bootstrap, tmp_path_factory.mktemp("delivery"))
    with ThreadPoolExecutor(len(SCENARIOS)) as pool:
        futures = {name: pool.submit(_run, ctx, name) for name in SCENARIOS}
        results = {name: future.result() for name, future in futures.items()}
    print()
    for outcome in results.values():
        print(outcome.line().split(" log=")[0])
    return results


def _every_event_once(outcome: Outcome) -> None:
    log = str(outcome.facts.get("log", ""))
    assert outcome.facts["exit"] == 0, log
    assert outcome.lost == 0, log
    assert outcome.duplicated == 0, outcome.line()


def test_outage_holds_then_sends_everything_once(outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes["outage"]
    _every_event_once(outcome)
    assert outcome.dead == 0
    assert outcome.facts["holding_gauge"] == 1
    # Every event was fetched, but most are not committed: the lag counts from the commits.
    assert float(str(outcome.facts["lag_during_outage"])) >= 1_000, outcome.line()
    # 8 requests in flight when it began, 3 attempts each, then single probes at most every 30 s.
    assert int(str(outcome.facts["requests_during_outage"])) <= 60, outcome.line()


def test_bad_key_holds_and_recovers_from_the_key_file(outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes["auth"]
    _every_event_once(outcome)
    assert outcome.dead == 0
    assert outcome.facts["alive_after_30s"] is True  # no restart, no halt
    assert outcome.facts["key_in_log"] is False
    assert outcome.facts["holding_gauge"] == 1
    # 401 is not retried: the first wave of requests, then one probe at a time.
    assert int(str(outcome.facts["requests_during_401"])) <= 40, outcome.line()


def test_a_proxy_page_is_never_counted_as_sent(outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes["proxy"]
    _every_event_once(outcome)
    assert outcome.dead == 0
    assert outcome.facts["counted_sent_during_proxy"] == 0
    assert outcome.facts["committed_during_proxy"] == 0


def test_a_rejected_canvas_costs_a_handful_of_requests(outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes["rejected"]
    _every_event_once(outcome)
    assert outcome.dead == 500
    assert outcome.facts["dead_reasons"] == {"braze_rejected": 500}
    assert outcome.facts["dead_rules"] == {"broken": 500}
    assert outcome.facts["dead_errors_name_braze"] is True
    assert int(str(outcome.facts["requests_to_bad_canvas"])) <= 10, outcome.line()


def test_sigkill_resends_only_what_was_in_flight(outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes["kills"]
    log = str(outcome.facts["log"])
    assert outcome.facts["exit"] == 0, log
    assert outcome.lost == 0, log
    assert outcome.dead == 0
    assert outcome.duplicated <= int(str(outcome.facts["in_doubt_at_kills"])), outcome.line()


def test_a_consumer_joining_and_leaving_loses_nothing(outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes["rebalance"]
    log = str(outcome.facts["log"])
    assert outcome.facts["exit"] == 0, log
    assert outcome.facts["second_exit"] == 0, log
    assert outcome.lost == 0, log
    assert outcome.dead == 0
    assert outcome.facts["committed"] == outcome.events


# -- the dead-letter guard (no waiting on real time) --------------------------------------------


def test_guard_stops_a_bad_rules_deploy(scenario: Scenario) -> None:
    # Every match fails mapping: the user id is read from a field the events do not have.
    broken = rule_yaml("welcome", scenario.topic, "user.signed_up", "canvas-welcome", "data.x.id")
    scenario.rules_path.write_text("rules:\n" + broken, encoding="utf-8")
    scenario.produce_events([scenario.event(i) for i in range(1_000)])
    service = scenario.start(scenario.config(), exit_when_idle_s=3)
    assert service.wait(120) == 1, service.log()
    assert "matched events were dead-lettered" in service.log()
    committed = committed_offsets(scenario.bootstrap, scenario.group, scenario.topic)
    assert committed.get(0, 0) < 200  # stopped after about min_events, not the whole stream


def test_guard_ignores_rare_errors_among_unmatched_events(scenario: Scenario) -> None:
    values = []
    for i in range(2_000):
        if i % 200 == 0:  # 10 mapping errors: no user id
            values.append(b'{"type": "user.signed_up", "data": {"seq": 1}}')
        elif i % 20 == 0:  # 90 good sends
            values.append(scenario.event(i))
        else:  # 1,900 events no rule matches
            values.append(scenario.event(i, kind="page.viewed"))
    scenario.produce_events(values)
    service = scenario.start(scenario.config(), exit_when_idle_s=3)
    assert service.wait(120) == 0, service.log()
    assert len(scenario.sent_users()) == 90
    assert len(consume_all(scenario.bootstrap, scenario.dlq_topic, 10, timeout_s=10)) == 10
    assert committed_offsets(scenario.bootstrap, scenario.group, scenario.topic) == {0: 2_000}
