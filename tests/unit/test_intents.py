"""BatchKey.request_body: the exact JSON body for a group of recipients, per endpoint."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from consumer.braze.contract import validate_request
from consumer.intents import (
    LONE_SURROGATE,
    LONE_SURROGATE_KEY,
    NOT_FINITE,
    BatchKey,
    Endpoint,
    canonical_json,
    printable,
    strict_json_problem,
)
from consumer.json_types import JSONObject, JSONValue

ALICE: JSONObject = {"external_user_id": "alice", "context": {"order_id": "o-1"}}
BOB: JSONObject = {
    "user_alias": {"alias_name": "anon-7", "alias_label": "anon"},
    "trigger_properties": {"total": 12.5},
}
SCHEDULE: JSONObject = {"time": "2030-01-01T09:00:00Z", "in_local_time": False}
NOW = datetime(2029, 12, 31, tzinfo=UTC)


@pytest.mark.parametrize(
    ("key", "recipients", "expected"),
    [
        pytest.param(
            BatchKey(Endpoint.CANVAS_SEND, "canvas-1"),
            [ALICE],
            {"canvas_id": "canvas-1", "recipients": [ALICE]},
            id="canvas send",
        ),
        pytest.param(
            BatchKey(Endpoint.CAMPAIGN_SEND, "camp-1"),
            [BOB, ALICE],
            {"campaign_id": "camp-1", "recipients": [BOB, ALICE]},
            id="campaign send, order kept",
        ),
        pytest.param(
            BatchKey(Endpoint.CAMPAIGN_SEND, "camp-1", send_id="refunds-2024"),
            [BOB],
            {"campaign_id": "camp-1", "send_id": "refunds-2024", "recipients": [BOB]},
            id="campaign send with send_id",
        ),
        pytest.param(
            BatchKey(
                Endpoint.CAMPAIGN_SCHEDULE_CREATE,
                "camp-2",
                schedule_json=canonical_json(SCHEDULE),
            ),
            [BOB],
            {"campaign_id": "camp-2", "recipients": [BOB], "schedule": SCHEDULE},
            id="campaign schedule create",
        ),
        pytest.param(
            BatchKey(
                Endpoint.CANVAS_SCHEDULE_CREATE,
                "canvas-2",
                schedule_json='{"in_local_time":true,"time":"2030-01-01T09:00:00"}',
            ),
            [ALICE],
            {
                "canvas_id": "canvas-2",
                "recipients": [ALICE],
                "schedule": {"in_local_time": True, "time": "2030-01-01T09:00:00"},
            },
            id="canvas schedule create in local time",
        ),
        pytest.param(
            BatchKey(Endpoint.CANVAS_SEND, "canvas-1"),
            [],
            {"canvas_id": "canvas-1", "recipients": []},
            id="no recipients (the envelope the batcher measures)",
        ),
    ],
)
def test_request_body(key: BatchKey, recipients: list[JSONObject], expected: JSONObject) -> None:
    assert key.request_body(recipients) == expected


@pytest.mark.parametrize(
    ("key", "recipient"),
    [
        pytest.param(BatchKey(Endpoint.CANVAS_SEND, "c"), ALICE, id="canvas send"),
        pytest.param(
            BatchKey(Endpoint.CAMPAIGN_SEND, "c", send_id="s"),
            {"external_user_id": "bob", "trigger_properties": {"a": 1}},
            id="campaign send with send_id",
        ),
        pytest.param(
            BatchKey(Endpoint.CANVAS_SCHEDULE_CREATE, "c", schedule_json=canonical_json(SCHEDULE)),
            ALICE,
            id="canvas schedule",
        ),
        pytest.param(
            BatchKey(
                Endpoint.CAMPAIGN_SCHEDULE_CREATE, "c", schedule_json=canonical_json(SCHEDULE)
            ),
            {"external_user_id": "bob"},
            id="campaign schedule",
        ),
    ],
)
def test_request_body_passes_the_braze_contract(key: BatchKey, recipient: JSONObject) -> None:
    assert validate_request(key.endpoint, key.request_body([recipient]), now=NOW) == []


def test_request_body_does_not_share_the_callers_list() -> None:
    recipients = [ALICE]
    body = BatchKey(Endpoint.CANVAS_SEND, "c").request_body(recipients)
    recipients.append(BOB)
    assert body["recipients"] == [ALICE]


def test_schedule_is_a_fresh_object_each_time() -> None:
    key = BatchKey(Endpoint.CANVAS_SCHEDULE_CREATE, "c", schedule_json=canonical_json(SCHEDULE))
    first = key.request_body([ALICE])
    schedule = first["schedule"]
    assert isinstance(schedule, dict)
    schedule["time"] = "changed"
    assert key.request_body([ALICE])["schedule"] == SCHEDULE


@pytest.mark.parametrize(
    ("endpoint", "target", "properties", "is_canvas"),
    [
        pytest.param(Endpoint.CANVAS_SEND, "canvas_id", "context", True, id="canvas send"),
        pytest.param(
            Endpoint.CANVAS_SCHEDULE_CREATE, "canvas_id", "context", True, id="canvas schedule"
        ),
        pytest.param(
            Endpoint.CAMPAIGN_SEND, "campaign_id", "trigger_properties", False, id="campaign send"
        ),
        pytest.param(
            Endpoint.CAMPAIGN_SCHEDULE_CREATE,
            "campaign_id",
            "trigger_properties",
            False,
            id="campaign schedule",
        ),
    ],
)
def test_endpoint_fields(endpoint: Endpoint, target: str, properties: str, is_canvas: bool) -> None:
    assert endpoint.target_field == target
    assert endpoint.properties_field == properties
    assert endpoint.is_canvas is is_canvas


def test_label_names_the_target_never_a_recipient() -> None:
    key = BatchKey(Endpoint.CAMPAIGN_SEND, "camp-1", send_id="s")
    assert key.label == "/campaigns/trigger/send camp-1"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param({"b": 1, "a": [1, 2]}, '{"a":[1,2],"b":1}', id="sorted and compact"),
        pytest.param({"name": "Zoë"}, '{"name":"Zoë"}', id="non-ASCII kept"),
        pytest.param({"a": {"d": None, "c": True}}, '{"a":{"c":true,"d":null}}', id="nested"),
    ],
)
def test_canonical_json(value: JSONValue, expected: str) -> None:
    assert canonical_json(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({"a": math.inf}, id="inf"),
        pytest.param([math.nan], id="nan"),
        pytest.param({"a": {"b": -math.inf}}, id="nested -inf"),
    ],
)
def test_canonical_json_refuses_non_finite_numbers(value: JSONValue) -> None:
    with pytest.raises(ValueError, match="JSON compliant"):
        canonical_json(value)


def test_canonical_json_of_a_lone_surrogate_does_not_encode() -> None:
    # The size computation's .encode("utf-8") is the check: UnicodeEncodeError is a ValueError.
    with pytest.raises(ValueError, match="surrogates not allowed"):
        canonical_json({"a": "\ud800"}).encode("utf-8")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param({"a": [1, "x", None, True, 2.5]}, None, id="strict"),
        pytest.param("\U0001f600", None, id="astral character"),
        pytest.param(math.inf, ("", NOT_FINITE), id="inf itself"),
        pytest.param({"total": math.nan}, (".total", NOT_FINITE), id="nan"),
        pytest.param({"a": [0, {"b": -math.inf}]}, (".a[1].b", NOT_FINITE), id="deep"),
        pytest.param(["ok", "\ud800"], ("[1]", LONE_SURROGATE), id="high surrogate"),
        pytest.param({"n": "x\udfff"}, (".n", LONE_SURROGATE), id="low surrogate"),
        pytest.param({"k": {"\ud800": 1}}, (".k.\\ud800", LONE_SURROGATE_KEY), id="key"),
        pytest.param(
            {"a": math.inf, "b": "\ud800"}, (".a", NOT_FINITE), id="the first problem in order"
        ),
    ],
)
def test_strict_json_problem(value: JSONValue, expected: tuple[str, str] | None) -> None:
    assert strict_json_problem(value) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("plain é \U0001f600", "plain é \U0001f600", id="unchanged"),
        pytest.param("a\ud800b", "a\\ud800b", id="lone surrogate escaped"),
    ],
)
def test_printable(text: str, expected: str) -> None:
    assert printable(text) == expected
    printable(text).encode("utf-8")
