"""How the emulator answers one request, decided without sockets (fixed clock, seeded faults)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.braze.limits import MAX_REQUEST_BYTES
from consumer.emulator.budget import BudgetLimits
from consumer.emulator.faults import CANVAS_PAUSED, AnswerOverride, FaultSettings
from consumer.emulator.state import EmulatorState, InboundRequest, Reply, _loads
from consumer.intents import Endpoint
from consumer.json_types import JSONObject, JSONValue

KEY = "secret-key-1"
NOW_S = 1_900_000_000.5
SEND = {"canvas_id": "cv-1", "recipients": [{"external_user_id": "u-1"}]}


def post(path: str, body: object = SEND, auth: str | None = f"Bearer {KEY}") -> InboundRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return InboundRequest("POST", path, auth, raw, len(raw))


def new_state(**limits: int) -> EmulatorState:
    return EmulatorState([KEY], BudgetLimits(**limits), seed=1, clock=lambda: NOW_S)


@pytest.mark.parametrize(
    ("request_", "status", "message"),
    [
        pytest.param(post("/canvas/trigger/sned"), 404, "Not Found", id="unknown path"),
        pytest.param(
            replace(post("/canvas/trigger/send"), method="GET"), 405, "Method Not Allowed", id="GET"
        ),
        pytest.param(
            InboundRequest(
                "POST", "/canvas/trigger/send", f"Bearer {KEY}", b"", MAX_REQUEST_BYTES + 1
            ),
            413,
            "Request Entity Too Large",
            id="body over 4 MB",
        ),
        pytest.param(post("/canvas/trigger/send", auth=None), 401, "Invalid API key", id="no auth"),
        pytest.param(
            post("/canvas/trigger/send", auth=KEY), 401, "Invalid API key", id="no Bearer"
        ),
        pytest.param(
            post("/canvas/trigger/send", auth=f'Bearer "{KEY}"'),
            401,
            "Invalid API key",
            id="quoted key",
        ),
        pytest.param(
            post("/canvas/trigger/send", auth="Bearer other"), 401, "Invalid API key", id="bad key"
        ),
        pytest.param(
            post("/canvas/trigger/send", b"{not json"), 400, "Invalid JSON", id="not JSON"
        ),
        pytest.param(
            post("/canvas/trigger/send", b"\xff\xfe"), 400, "Invalid JSON", id="not UTF-8"
        ),
        pytest.param(
            post("/canvas/trigger/send", {"canvas_id": "c"}), 400, "No Recipients", id="invalid"
        ),
        pytest.param(post("/canvas/trigger/send"), 201, "success", id="canvas send"),
        pytest.param(
            post("/campaigns/trigger/send", {"campaign_id": "c", "broadcast": True}),
            201,
            "success",
            id="campaign broadcast",
        ),
        pytest.param(
            post(
                "/canvas/trigger/schedule/update",
                {
                    "canvas_id": "c",
                    "schedule_id": "s",
                    "schedule": {"time": "2031-01-01T00:00:00Z"},
                },
            ),
            200,
            "success",
            id="schedule update",
        ),
        pytest.param(
            post("/campaigns/trigger/schedule/delete", {"campaign_id": "c", "schedule_id": "s"}),
            200,
            "success",
            id="schedule delete",
        ),
    ],
)
def test_answers(request_: InboundRequest, status: int, message: str) -> None:
    reply = new_state().handle(request_)
    assert reply.status == status
    assert str(reply.body["message"]).startswith(message)
    header_names = [name for name, _ in reply.headers]
    assert header_names[:3] == ["X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"]
    if status >= 400:
        assert isinstance(reply.body["errors"], list)
        assert reply.body["errors"]


def test_invalid_body_answers_first_problem_and_lists_all() -> None:
    reply = new_state().handle(post("/canvas/trigger/send", {"canvas_id": 5, "broadcast": "no"}))
    assert reply.body == {
        "message": "canvas_id must be a string of the canvas api identifier",
        "errors": [
            "canvas_id must be a string of the canvas api identifier",
            "broadcast must be a boolean",
            "No Recipients",
        ],
    }


def test_the_key_is_never_echoed() -> None:
    reply = new_state().handle(post("/canvas/trigger/send", auth="Bearer wrong-key-xyz"))
    assert "wrong-key-xyz" not in json.dumps(reply.body)


@pytest.mark.parametrize(
    ("endpoint", "body", "fields"),
    [
        pytest.param(Endpoint.CANVAS_SEND, SEND, {"dispatch_id", "message"}, id="send"),
        pytest.param(
            Endpoint.CAMPAIGN_SCHEDULE_CREATE,
            {"campaign_id": "c", "broadcast": True, "schedule": {"time": "2031-01-01T00:00:00Z"}},
            {"dispatch_id", "schedule_id", "message"},
            id="schedule create",
        ),
        pytest.param(
            Endpoint.SEND_ID_CREATE, {"campaign_id": "c"}, {"send_id", "message"}, id="send id"
        ),
    ],
)
def test_success_bodies(endpoint: Endpoint, body: object, fields: set[str]) -> None:
    state = new_state()
    first, second = (state.handle(post(endpoint.value, body)) for _ in range(2))
    assert first.status == 201
    assert set(first.body) == fields
    assert first.body["message"] == "success"
    generated = fields - {"message"}
    assert all(first.body[name] != second.body[name] for name in generated)  # random ids


def test_send_id_create_returns_the_given_send_id() -> None:
    reply = new_state().handle(post("/sends/id/create", {"campaign_id": "c", "send_id": "spring"}))
    assert reply.body["send_id"] == "spring"


def test_only_authenticated_requests_spend_the_budget() -> None:
    state = new_state(per_hour=2)
    for _ in range(3):
        assert state.handle(post("/canvas/trigger/send", auth="Bearer nope")).status == 401
    assert [state.handle(post("/canvas/trigger/send")).status for _ in range(3)] == [201, 201, 429]
    limited = state.handle(post("/canvas/trigger/send"))
    assert limited.body == {"message": "Rate limit exceeded", "errors": []}
    assert dict(limited.headers)["X-RateLimit-Remaining"] == "0"
    assert dict(limited.headers)["X-RateLimit-Reset"] == str(1_900_000_800)  # next clock hour


def test_invalid_requests_spend_the_budget_too() -> None:
    state = new_state(per_hour=5)
    state.handle(post("/canvas/trigger/send", {"canvas_id": "c"}))
    assert dict(state.handle(post("/canvas/trigger/send")).headers)["X-RateLimit-Remaining"] == "3"


def test_rejected_recipient_fails_the_whole_request() -> None:
    state = new_state()
    state.set_faults(FaultSettings(reject_external_user_ids=frozenset({"u-13"})))
    batch = {"canvas_id": "c", "recipients": [{"external_user_id": f"u-{n}"} for n in range(50)]}
    reply = state.handle(post("/canvas/trigger/send", batch))
    assert reply.status == 400
    assert reply.body["errors"] == ["external_user_id u-13 was rejected"]
    assert state.stats().recipients_sent == 0
    assert state.requests_since(0)[0].recipients == 50


def test_paused_canvas_succeeds_with_notice_and_sends_nothing() -> None:
    state = new_state()
    state.set_faults(FaultSettings(paused_canvas_ids=frozenset({"cv-1"})))
    reply = state.handle(post("/canvas/trigger/send"))
    assert (reply.status, reply.body["notice"]) == (201, CANVAS_PAUSED)
    assert state.stats().recipients_sent == 0
    assert state.requests_since(0)[0].notice == CANVAS_PAUSED


def test_injected_status_then_normal_processing() -> None:
    state = new_state()
    state.set_faults(FaultSettings(status_sequence=(503, 429, 201)))
    replies = [state.handle(post("/canvas/trigger/send")) for _ in range(4)]
    assert [r.status for r in replies] == [503, 429, 201, 201]
    assert replies[0].body == {"message": "Service Unavailable", "errors": []}
    assert replies[1].body["message"] == "Rate limit exceeded"


def test_dropped_request_has_no_answer_and_is_recorded() -> None:
    state = new_state()
    state.set_faults(FaultSettings(drop_next=1, latency_ms=(40, 40)))
    dropped = state.handle(post("/canvas/trigger/send"))
    assert (dropped.status, dropped.delay_s) == (None, 0.04)
    recorded = state.requests_since(0)[0]
    assert (recorded.status, recorded.recipients) == (None, 1)
    assert state.handle(post("/canvas/trigger/send")).status == 201


def test_record_keeps_the_body_and_answer() -> None:
    state = new_state()
    state.handle(post("/canvas/trigger/send"))
    recorded = state.requests_since(0)[0]
    assert json.loads(recorded.body_text) == SEND
    assert (recorded.seq, recorded.time_s, recorded.status, recorded.message) == (
        1,
        NOW_S,
        201,
        "success",
    )
    assert recorded.dispatch_id is not None


def test_reset_clears_record_faults_and_counters_but_not_keys_or_limits() -> None:
    state = new_state(per_hour=3)
    state.set_faults(FaultSettings(status_sequence=(500, 500)))
    state.handle(post("/canvas/trigger/send"))
    state.reset()
    assert state.requests_since(0) == []
    assert state.faults() == FaultSettings()
    limits, status = state.budget()
    assert (limits.per_hour, status.remaining) == (3, 3)
    assert state.handle(post("/canvas/trigger/send")).status == 201
    assert state.requests_since(0)[0].seq == 2


def test_api_keys_can_be_replaced_but_not_emptied() -> None:
    state = new_state()
    state.set_api_keys(["new"])
    assert state.handle(post("/canvas/trigger/send")).status == 401
    assert state.handle(post("/canvas/trigger/send", auth="Bearer new")).status == 201
    with pytest.raises(ValueError, match="at least one"):
        state.set_api_keys([""])


def recipients(*ids: str) -> list[JSONValue]:
    return [{"external_user_id": uid} for uid in ids]


SCHEDULE = {"time": "2031-01-01T00:00:00Z"}


@pytest.mark.parametrize(
    ("endpoint", "extra", "message", "error"),
    [
        pytest.param(
            Endpoint.CANVAS_SEND,
            {},
            "Invalid Canvas ID",
            "canvas_id bad-id is not an API-triggered Canvas",
            id="canvas send",
        ),
        pytest.param(
            Endpoint.CAMPAIGN_SEND,
            {},
            "Invalid Campaign ID",
            "campaign_id bad-id is not an API-triggered campaign",
            id="campaign send",
        ),
        pytest.param(
            Endpoint.CANVAS_SCHEDULE_CREATE,
            {"schedule": SCHEDULE},
            "Invalid Canvas ID",
            "canvas_id bad-id is not an API-triggered Canvas",
            id="canvas schedule create",
        ),
        pytest.param(
            Endpoint.CAMPAIGN_SCHEDULE_CREATE,
            {"schedule": SCHEDULE},
            "Invalid Campaign ID",
            "campaign_id bad-id is not an API-triggered campaign",
            id="campaign schedule create",
        ),
    ],
)
def test_invalid_target_fails_the_whole_request_whatever_the_recipients(
    endpoint: Endpoint, extra: JSONObject, message: str, error: str
) -> None:
    state = new_state()
    # A rejected recipient too: the invalid target is checked first and names no recipient.
    state.set_faults(
        FaultSettings(
            invalid_target_ids=frozenset({"bad-id"}), reject_external_user_ids=frozenset({"u-2"})
        )
    )

    def send(target: str, ids: list[JSONValue]) -> Reply:
        body: JSONObject = {endpoint.target_field: target, "recipients": ids, **extra}
        return state.handle(post(endpoint.value, body))

    first = send("bad-id", recipients("u-1", "u-2", "u-3"))
    second = send("bad-id", recipients("u-9"))
    assert first.status == second.status == 400
    assert first.body == second.body == {"message": message, "errors": [error]}
    assert send("good-id", recipients("u-1")).status == 201  # other ids are unaffected
    recorded = state.requests_since(0)
    assert [(r.status, r.message, r.recipients) for r in recorded] == [
        (400, message, 3),
        (400, message, 1),
        (201, "success", 1),
    ]
    assert state.stats().recipients_sent == 1


@pytest.mark.parametrize(
    ("request_", "status"),
    [
        pytest.param(post("/canvas/trigger/send", auth=None), 401, id="auth first"),
        pytest.param(
            post("/canvas/trigger/send", {"canvas_id": "bad-id"}), 400, id="contract first"
        ),
        pytest.param(
            post("/canvas/trigger/schedule/delete", {"canvas_id": "bad-id", "schedule_id": "s"}),
            200,
            id="not for schedule delete",
        ),
    ],
)
def test_invalid_target_comes_after_auth_and_contract(
    request_: InboundRequest, status: int
) -> None:
    state = new_state()
    state.set_faults(FaultSettings(invalid_target_ids=frozenset({"bad-id"})))
    reply = state.handle(request_)
    assert reply.status == status
    assert "Invalid Canvas ID" not in str(reply.body)


def test_invalid_target_comes_after_the_budget() -> None:
    state = new_state(per_hour=1)
    state.set_faults(FaultSettings(invalid_target_ids=frozenset({"bad-id"})))
    bad = {"canvas_id": "bad-id", "recipients": recipients("u-1")}
    assert [state.handle(post("/canvas/trigger/send", bad)).status for _ in range(2)] == [400, 429]


HTML = "<html><body>Please log in</body></html>"


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(post("/canvas/trigger/send"), id="valid send"),
        pytest.param(post("/canvas/trigger/send", auth=None), id="no auth"),
        pytest.param(post("/canvas/trigger/send", {"canvas_id": "c"}), id="invalid body"),
        pytest.param(post("/nowhere"), id="unknown path"),
        pytest.param(replace(post("/canvas/trigger/send"), method="GET"), id="GET"),
    ],
)
def test_answer_override_answers_everything_first(request_: InboundRequest) -> None:
    state = new_state(per_hour=5)
    state.set_faults(
        FaultSettings(
            answer_override=AnswerOverride(status=200, body=HTML),
            drop_next=1,
            status_sequence=(503,),
        )
    )
    reply = state.handle(request_)
    assert (reply.status, reply.content(), reply.content_type) == (
        200,
        HTML.encode(),
        "text/html; charset=utf-8",
    )
    assert reply.headers == ()  # no X-RateLimit-* from a proxy
    assert state.budget()[1].remaining == 5  # the budget is untouched
    assert (state.faults().drop_next, state.faults().status_sequence) == (1, (503,))
    recorded = state.requests_since(0)[0]
    assert (recorded.path, recorded.status, recorded.message) == (request_.path, 200, None)
    assert state.stats().accepted_requests == 1
    assert state.stats().recipients_sent == 0


def test_answer_override_then_back_to_braze() -> None:
    state = new_state()
    state.set_faults(
        FaultSettings(
            answer_override=AnswerOverride(status=302, body="moved", content_type="text/plain")
        )
    )
    assert state.handle(post("/canvas/trigger/send")).status == 302
    state.update_faults(lambda current: current.updated({"answer_override": None}))
    reply = state.handle(post("/canvas/trigger/send"))
    assert (reply.status, reply.content_type, reply.raw_body) == (201, "application/json", None)
    assert json.loads(reply.content()) == reply.body


def test_record_keeps_the_injected_latency() -> None:
    state = new_state()
    state.set_faults(FaultSettings(latency_ms=(250, 250)))
    state.handle(post("/canvas/trigger/send"))
    state.set_faults(FaultSettings())
    state.handle(post("/canvas/trigger/send"))
    assert [r.delay_s for r in state.requests_since(0)] == [0.25, 0.0]


def test_injected_status_without_a_stdlib_phrase() -> None:
    state = new_state()
    state.set_faults(FaultSettings(status_sequence=(599,)))
    reply = state.handle(post("/canvas/trigger/send"))
    assert (reply.status, reply.body["message"]) == (599, "Error")


@pytest.mark.parametrize(
    "auth", [pytest.param(f"Bearer {KEY}", id="400"), pytest.param(None, id="401 first")]
)
def test_json_nested_too_deeply_is_answered_and_recorded(auth: str | None) -> None:
    state = new_state()
    deep = b'{"canvas_id":"c","recipients":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    reply = state.handle(post("/canvas/trigger/send", deep, auth=auth))
    if auth is None:
        assert reply.status == 401
    else:
        assert (reply.status, reply.body["message"]) == (400, "Invalid JSON in request body")
        assert reply.body["errors"] == ["the JSON is nested too deeply to read"]
    assert [r.status for r in state.requests_since(0)] == [reply.status]


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63 - 10, max_value=2**80)  # past 64 bits: orjson reads a float
    | st.integers(min_value=-(2**80), max_value=-(2**63) + 10)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def read_with(read: Callable[[bytes], object], raw: bytes) -> tuple[str, str]:
    """What `read` makes of `raw`: the value's repr (tells 1 from 1.0, nan) or the error's text."""
    try:
        return "value", repr(read(raw))
    except ValueError as error:  # its text is quoted in the 400's errors
        return "error", str(error)


def same_as_json_loads(raw: bytes) -> None:
    assert read_with(_loads, raw) == read_with(json.loads, raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":123456789012345678901234567890}',
        b'{"a":-9223372036854775809,"b":18446744073709551615}',
        b'{"a":1e400,"b":-Infinity,"c":NaN}',
        b'{"a":"\\ud800"}',
        b'{"a":"\xed\xa0\x80"}',
        b'\xef\xbb\xbf{"a":1}',
        b'{"a":1,"a":2}',
        b'{"a":1e-400,"b":-0.0,"c":-0,"d":0.1}',
        '{"a":"é"}'.encode("utf-16"),
        b'{"a":"x\ny"}',
        b"{not json",
        b"",
        b"\xff\xfe",
    ],
)
def test_the_fast_json_reader_agrees_with_json_loads(raw: bytes) -> None:
    same_as_json_loads(raw)


@given(JSON_VALUES)
def test_the_fast_json_reader_agrees_on_any_json(value: object) -> None:
    same_as_json_loads(json.dumps({"canvas_id": "c", "recipients": [value]}).encode())
