"""Rules hot reload in the running service: a new rule takes effect without a rebalance, an
invalid change is refused and the old rules keep running, dead letters name the rules version."""

from __future__ import annotations

import signal

from tests.integration.kafka_helpers import consume_all
from tests.integration.service_helpers import (
    RULES_TEMPLATE,
    Scenario,
    free_port,
    header_map,
    rule_yaml,
    scrape_total,
    wait_until,
)


def test_rules_change_takes_effect_without_a_rebalance(scenario: Scenario) -> None:
    port = free_port()
    service = scenario.start(scenario.config(metrics__port=port), exit_when_idle_s=None)
    try:
        login = [scenario.event(i, kind="user.logged_in") for i in range(5)]
        scenario.produce_events(login)
        skipped = "braze_consumer_events_skipped_total"
        wait_until(lambda: scrape_total(port, skipped) >= 5, 60, "5 unmatched events")

        login_rule = rule_yaml("login", scenario.topic, "user.logged_in", "canvas-login")
        rules = RULES_TEMPLATE.format(topic=scenario.topic) + login_rule
        scenario.rules_path.write_text(rules, encoding="utf-8")
        reloads = "braze_consumer_rules_reloads_total"
        wait_until(lambda: scrape_total(port, reloads) >= 1, 30, "the rules reloaded")
        scenario.produce_events([scenario.event(i, kind="user.logged_in") for i in range(5, 10)])
        wait_until(
            lambda: len(set(scenario.sent_users("canvas-login"))) == 5, 60, "the new rule sending"
        )
        assert set(scenario.sent_users("canvas-login")) == {f"u-{i}" for i in range(5, 10)}

        scenario.rules_path.write_text("rules:\n  - id: broken\n", encoding="utf-8")
        wait_until(lambda: scrape_total(port, reloads) >= 2, 30, "the invalid change refused")
        scenario.produce_events([scenario.event(i, kind="user.logged_in") for i in range(10, 13)])
        wait_until(
            lambda: len(set(scenario.sent_users("canvas-login"))) == 8,
            60,
            "the old rules still sending",
        )
    finally:
        service.signal(signal.SIGTERM)
        assert service.wait(60) == 0, service.log()
    log = service.log()
    assert log.count("assigned ") == 1, log  # no rebalance: one assignment for the whole run
    assert "rules reloaded: version" in log
    assert "rules change refused" in log


def test_dead_letters_name_the_rules_version(scenario: Scenario) -> None:
    scenario.produce_events([b"not json"])
    service = scenario.start(scenario.config())
    assert service.wait(120) == 0, service.log()
    [letter] = consume_all(scenario.bootstrap, scenario.dlq_topic, expected=1, timeout_s=30)
    version = header_map(letter.meta.headers)["dlq.rules_version"]
    assert len(version) == 12
    assert f"rules version {version}" in service.log()
