"""The example rules and events in config/ preview cleanly and every body passes the contract."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from consumer.braze.contract import validate_request
from consumer.events import KafkaMeta
from consumer.intents import Endpoint
from consumer.rules import load_rules
from consumer.rules.command import preview_lines

CONFIG = Path(__file__).resolve().parents[2] / "config"
EVENT_FILES = sorted((CONFIG / "events").glob("*.jsonl"))
NOW_MS = 1_714_558_000_000  # 2024-05-01T10:06:40Z, the day the example events happen


def preview_all() -> list[Any]:
    """Every report as plain JSON (`Any`: the tests index into it freely)."""
    table = load_rules(CONFIG / "rules.yaml")
    reports: list[Any] = []
    for path in EVENT_FILES:
        topic = path.name.removesuffix(".jsonl")  # events/<topic>.jsonl
        meta = KafkaMeta(topic, 0, 0, timestamp_ms=NOW_MS, headers=(("x-source", b"web"),))
        with path.open("rb") as lines:
            reports += json.loads(json.dumps(list(preview_lines(table, meta, lines, NOW_MS))))
    return reports


REPORTS = preview_all()
REQUESTS = [request for report in REPORTS for request in report["requests"]]


def test_there_is_an_event_file_for_every_topic() -> None:
    table = load_rules(CONFIG / "rules.yaml")
    assert {path.name.removesuffix(".jsonl") for path in EVENT_FILES} == table.topics


@pytest.mark.parametrize("request_json", REQUESTS, ids=[r["rule_id"] for r in REQUESTS])
def test_every_previewed_body_satisfies_the_braze_contract(request_json: Any) -> None:
    now = datetime.fromtimestamp(NOW_MS / 1000, UTC)
    endpoint = Endpoint(request_json["endpoint"])
    assert validate_request(endpoint, request_json["body"], now=now) == []


def test_examples_cover_every_endpoint_identifier_and_outcome() -> None:
    assert {request["endpoint"] for request in REQUESTS} == {
        "/campaigns/trigger/send",
        "/canvas/trigger/send",
        "/campaigns/trigger/schedule/create",
        "/canvas/trigger/schedule/create",
    }
    recipients = [recipient for r in REQUESTS for recipient in r["body"]["recipients"]]
    identifiers = {key for recipient in recipients for key in recipient}
    assert {"external_user_id", "user_alias", "email"} <= identifiers
    reasons = {error["reason"] for report in REPORTS for error in report["errors"]}
    assert reasons == {"invalid_json", "mapping_error"}
    assert any(report["skipped"] for report in REPORTS)
    assert any(not report["matched"] for report in REPORTS)


def test_every_example_rule_sends_at_least_once() -> None:
    table = load_rules(CONFIG / "rules.yaml")
    assert {request["rule_id"] for request in REQUESTS} == set(table.rule_ids)
