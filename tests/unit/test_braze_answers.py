"""What one Braze answer means (`judge`): every status class against every body shape."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.braze.answers import SUCCESS_MESSAGES, HoldCause, Verdict, judge
from consumer.braze.retry import parse_json
from consumer.json_types import JSONValue

SUCCESS = b'{"dispatch_id": "d-1", "message": "success"}'
QUEUED = b'{"dispatch_id": "d-1", "message": "queued"}'
SUCCESS_WITH_ERRORS = b'{"message": "success", "errors": ["user-0 is not subscribed"]}'
OTHER_MESSAGE = b'{"message": "error"}'
UPPER_CASE = b'{"message": "SUCCESS"}'
NON_STRING_MESSAGE = b'{"message": 1}'
NULL_MESSAGE = b'{"message": null}'
NO_MESSAGE = b'{"dispatch_id": "d-1"}'
EMPTY_OBJECT = b"{}"
JSON_LIST = b'[{"message": "success"}]'
JSON_STRING = b'"success"'
JSON_NUMBER = b"201"
HTML = b"<html><body>Please log in to the proxy</body></html>"
EMPTY = b""
NOT_UTF8 = b"\xff\xfe"
BRAZE_ERROR = b'{"message": "Invalid Canvas ID", "errors": ["canvas_id c-1 is not valid"]}'

OUTAGE = HoldCause.OUTAGE
AUTH = HoldCause.AUTH
RATE_LIMIT = HoldCause.RATE_LIMIT
UNEXPECTED = HoldCause.UNEXPECTED_RESPONSE


def ok(status: int, body: bytes, id_: str) -> object:
    return pytest.param(status, body, "success", None, False, id=id_)


def rejected(status: int, body: bytes, id_: str) -> object:
    return pytest.param(status, body, "rejected", None, False, id=id_)


def failed(status: int, body: bytes, cause: HoldCause, retry_now: bool, id_: str) -> object:
    return pytest.param(status, body, "failed", cause, retry_now, id=id_)


def unexpected(status: int, body: bytes, id_: str) -> object:
    return failed(status, body, UNEXPECTED, False, id_)


CASES = [
    # 2xx: only Braze's JSON success answer is a success.
    ok(200, SUCCESS, "200 success"),
    ok(201, SUCCESS, "201 success"),
    ok(202, SUCCESS, "202 success"),
    ok(200, QUEUED, "200 queued"),
    ok(201, QUEUED, "201 queued"),
    ok(202, QUEUED, "202 queued (maintenance)"),
    ok(201, SUCCESS_WITH_ERRORS, "201 success with non-fatal errors"),
    ok(299, SUCCESS, "299 success (any 2xx)"),
    unexpected(200, OTHER_MESSAGE, "200 other message"),
    unexpected(201, OTHER_MESSAGE, "201 other message"),
    unexpected(202, OTHER_MESSAGE, "202 other message"),
    unexpected(201, UPPER_CASE, "201 message in the wrong case"),
    unexpected(201, NON_STRING_MESSAGE, "201 message not a string"),
    unexpected(201, NULL_MESSAGE, "201 message null"),
    unexpected(201, NO_MESSAGE, "201 object without message"),
    unexpected(201, EMPTY_OBJECT, "201 empty object"),
    unexpected(200, HTML, "200 html (proxy or captive portal)"),
    unexpected(201, HTML, "201 html"),
    unexpected(202, HTML, "202 html"),
    unexpected(200, EMPTY, "200 empty body (None)"),
    unexpected(201, EMPTY, "201 empty body (None)"),
    unexpected(202, EMPTY, "202 empty body (None)"),
    unexpected(204, EMPTY, "204 no content"),
    unexpected(201, NOT_UTF8, "201 not utf-8"),
    unexpected(200, JSON_LIST, "200 json list"),
    unexpected(201, JSON_LIST, "201 json list"),
    unexpected(202, JSON_LIST, "202 json list"),
    unexpected(201, JSON_STRING, "201 json string"),
    unexpected(201, JSON_NUMBER, "201 json number"),
    # 400: the request's fault only when Braze says so in its JSON.
    rejected(400, BRAZE_ERROR, "400 braze json error"),
    rejected(400, OTHER_MESSAGE, "400 json with any string message"),
    rejected(400, SUCCESS, "400 json saying success is still a 400"),
    unexpected(400, NO_MESSAGE, "400 json object without message"),
    unexpected(400, NON_STRING_MESSAGE, "400 json message not a string"),
    unexpected(400, JSON_LIST, "400 json list"),
    unexpected(400, HTML, "400 html"),
    unexpected(400, EMPTY, "400 empty body"),
    unexpected(400, NOT_UTF8, "400 not utf-8"),
    # 413: too large, whoever says it.
    rejected(413, BRAZE_ERROR, "413 json"),
    rejected(413, HTML, "413 html from a load balancer"),
    rejected(413, EMPTY, "413 empty body"),
    rejected(413, JSON_LIST, "413 json list"),
    # Auth: never retried by the client, never the event's fault.
    failed(401, BRAZE_ERROR, AUTH, False, "401 json"),
    failed(401, HTML, AUTH, False, "401 html"),
    failed(401, EMPTY, AUTH, False, "401 empty"),
    failed(403, BRAZE_ERROR, AUTH, False, "403 json"),
    failed(403, HTML, AUTH, False, "403 html"),
    failed(403, EMPTY, AUTH, False, "403 empty"),
    # Wrong endpoint: 404 and redirects.
    unexpected(404, BRAZE_ERROR, "404 json"),
    unexpected(404, HTML, "404 html"),
    unexpected(404, EMPTY, "404 empty"),
    unexpected(301, EMPTY, "301"),
    unexpected(302, HTML, "302 to a login page"),
    unexpected(307, SUCCESS, "307 even with a success body"),
    unexpected(308, EMPTY, "308"),
    unexpected(304, EMPTY, "304"),
    # 429: retried now, then held for the rate limit.
    failed(429, BRAZE_ERROR, RATE_LIMIT, True, "429 json"),
    failed(429, EMPTY, RATE_LIMIT, True, "429 empty"),
    failed(429, HTML, RATE_LIMIT, True, "429 html"),
    # 5xx: Braze or the way to it is down.
    failed(500, BRAZE_ERROR, OUTAGE, True, "500 json"),
    failed(500, EMPTY, OUTAGE, True, "500 empty"),
    failed(502, HTML, OUTAGE, True, "502 html from a gateway"),
    failed(502, EMPTY, OUTAGE, True, "502 empty"),
    failed(503, EMPTY, OUTAGE, True, "503 empty"),
    failed(503, SUCCESS, OUTAGE, True, "503 even with a success body"),
    failed(504, HTML, OUTAGE, True, "504 html"),
    failed(501, EMPTY, OUTAGE, True, "501"),
    failed(599, EMPTY, OUTAGE, True, "599"),
    # Statuses Braze does not document here.
    unexpected(418, BRAZE_ERROR, "418 json"),
    unexpected(418, EMPTY, "418 empty"),
    unexpected(405, EMPTY, "405"),
    unexpected(409, BRAZE_ERROR, "409"),
    unexpected(422, BRAZE_ERROR, "422"),
    unexpected(100, EMPTY, "100 continue"),
    unexpected(101, EMPTY, "101 switching protocols"),
    unexpected(103, SUCCESS, "103 early hints, even with a success body"),
    unexpected(199, SUCCESS, "199"),
]


@pytest.mark.parametrize(("status", "raw", "verdict", "cause", "retry_now"), CASES)
def test_judge(
    status: int, raw: bytes, verdict: Verdict, cause: HoldCause | None, retry_now: bool
) -> None:
    judgement = judge(status, parse_json(raw))
    assert (judgement.verdict, judgement.cause, judgement.retry_now) == (verdict, cause, retry_now)
    # Unexpected answers say what was wrong (it goes into logs and error texts).
    assert bool(judgement.why) is (cause is UNEXPECTED)


@pytest.mark.parametrize(
    ("status", "words"),
    [
        pytest.param(200, "not Braze's JSON success answer", id="2xx"),
        pytest.param(400, "not Braze's JSON error", id="400"),
        pytest.param(302, "redirect", id="redirect"),
        pytest.param(404, "404", id="404"),
        pytest.param(418, "418", id="other"),
    ],
)
def test_unexpected_answers_say_why(status: int, words: str) -> None:
    assert words in judge(status, None).why


# The statuses where the body matters come up often; any status in 100-599 may come.
statuses = st.sampled_from([200, 201, 202, 400, 413]) | st.integers(min_value=100, max_value=599)
json_values: st.SearchStrategy[JSONValue] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=10,
)
messages: st.SearchStrategy[JSONValue] = (
    st.sampled_from([*sorted(SUCCESS_MESSAGES), "Success", "error", ""]) | json_values
)
bodies: st.SearchStrategy[JSONValue] = json_values | st.dictionaries(
    st.text(max_size=5), json_values, max_size=3
).flatmap(lambda rest: messages.map(lambda message: {**rest, "message": message}))


@settings(max_examples=300)
@given(status=statuses, body=bodies)
def test_judge_is_total_and_consistent(status: int, body: JSONValue) -> None:
    judgement = judge(status, body)
    message = body.get("message") if isinstance(body, dict) else None
    braze_success = 200 <= status < 300 and isinstance(message, str) and message in SUCCESS_MESSAGES
    assert (judgement.verdict == "success") is braze_success
    if judgement.verdict == "rejected":
        assert status == 413 or (status == 400 and isinstance(message, str))
    assert (judgement.cause is None) is (judgement.verdict != "failed")
    assert judgement.retry_now is (status == 429 or 500 <= status < 600)
    if judgement.cause is HoldCause.AUTH:
        assert status in (401, 403)
    json.dumps(judgement.why)  # a plain string, safe for logs
