"""The emulator over real HTTP (loopback, httpx): statuses, bodies, headers, faults, control API."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from consumer.braze.limits import MAX_REQUEST_BYTES
from consumer.emulator import EmulatorControl, EmulatorControlError, RunningEmulator, start_emulator
from consumer.emulator.faults import CANVAS_ARCHIVED, AnswerOverride
from consumer.emulator.server import is_loopback

KEY = "test-key-7f3a"
SEND = {"canvas_id": "cv-1", "recipients": [{"external_user_id": "u-1"}]}
RATE_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1_900_000_000.25

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def emulator(clock: FakeClock) -> Iterator[RunningEmulator]:
    with start_emulator(api_keys=[KEY], clock=clock, seed=11) as running:
        yield running


@pytest.fixture
def control(emulator: RunningEmulator, clock: FakeClock) -> Iterator[EmulatorControl]:
    with EmulatorControl(emulator.url) as control:
        control.reset()
        control.set_budget()
        control.set_api_keys([KEY])
        clock.now_s = 1_900_000_000.25
        yield control


@pytest.fixture
def client(emulator: RunningEmulator, control: EmulatorControl) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=emulator.url, headers=headers, timeout=5.0) as client:
        yield client


def test_success_with_rate_limit_headers(client: httpx.Client) -> None:
    response = client.post("/canvas/trigger/send", json=SEND)
    assert response.status_code == 201
    assert set(response.json()) == {"dispatch_id", "message"}
    assert [response.headers[name] for name in RATE_HEADERS] == ["250000", "249999", "1900000800"]
    assert response.headers["content-length"] == str(len(response.content))


@pytest.mark.parametrize(
    ("method", "path", "headers", "content", "status"),
    [
        pytest.param(
            "POST", "/canvas/trigger/send", {"Authorization": "Bearer nope"}, b"{}", 401, id="401"
        ),
        pytest.param("POST", "/canvas/trigger/sends", {}, b"{}", 404, id="404"),
        pytest.param("GET", "/canvas/trigger/send", {}, b"", 405, id="405"),
        pytest.param("POST", "/canvas/trigger/send", {}, b"{]", 400, id="400 not JSON"),
        pytest.param("POST", "/canvas/trigger/send", {}, b"{}", 400, id="400 invalid"),
    ],
)
def test_errors_carry_braze_body_and_headers(
    client: httpx.Client,
    method: str,
    path: str,
    headers: dict[str, str],
    content: bytes,
    status: int,
) -> None:
    response = client.request(method, path, headers=headers, content=content)
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"message", "errors"}
    assert all(name in response.headers for name in RATE_HEADERS)


def test_401_does_not_echo_the_key(client: httpx.Client) -> None:
    response = client.post(
        "/canvas/trigger/send", json=SEND, headers={"Authorization": "Bearer leak-me"}
    )
    assert response.status_code == 401
    assert response.json()["message"].startswith("Invalid API key: ")
    assert "leak-me" not in response.text


def test_400_lists_every_problem(client: httpx.Client) -> None:
    body = {"canvas_id": "c", "recipients": [{"email": "a@example.com"}, {}]}
    response = client.post("/canvas/trigger/send", json=body)
    assert response.status_code == 400
    assert response.json() == {
        "message": "recipients[0]: prioritization is required with email",
        "errors": [
            "recipients[0]: prioritization is required with email",
            "recipients[1] must have exactly one of"
            " external_user_id, user_alias, email, braze_id (found 0)",
        ],
    }


def test_413_then_the_connection_still_serves(client: httpx.Client) -> None:
    response = client.post("/canvas/trigger/send", content=b" " * (MAX_REQUEST_BYTES + 1))
    assert response.status_code == 413
    assert client.post("/canvas/trigger/send", json=SEND).status_code == 201


def test_429_past_the_budget_and_reset_at_next_second(
    client: httpx.Client, control: EmulatorControl, clock: FakeClock
) -> None:
    control.set_budget(per_hour=100, per_second=2)
    statuses = [client.post("/canvas/trigger/send", json=SEND).status_code for _ in range(3)]
    assert statuses == [201, 201, 429]
    limited = client.post("/canvas/trigger/send", json=SEND)
    assert limited.json() == {"message": "Rate limit exceeded", "errors": []}
    assert [limited.headers[name] for name in RATE_HEADERS] == ["2", "0", "1900000001"]
    clock.now_s += 1
    assert client.post("/canvas/trigger/send", json=SEND).status_code == 201


def test_latency_is_added(client: httpx.Client, control: EmulatorControl) -> None:
    control.set_faults(latency_ms=150)
    started = time.perf_counter()
    assert client.post("/canvas/trigger/send", json=SEND).status_code == 201
    assert time.perf_counter() - started >= 0.15


def test_dropped_connection_is_a_transport_error(
    client: httpx.Client, control: EmulatorControl
) -> None:
    control.set_faults(drop_next=1)
    with pytest.raises(httpx.TransportError):
        client.post("/canvas/trigger/send", json=SEND)
    assert client.post("/canvas/trigger/send", json=SEND).status_code == 201
    assert [r.status for r in control.requests()] == [None, 201]


def test_status_sequence_over_http(client: httpx.Client, control: EmulatorControl) -> None:
    faults = control.set_faults(status_sequence=[503, 502, 201])
    assert faults.status_sequence == (503, 502, 201)
    statuses = [client.post("/canvas/trigger/send", json=SEND).status_code for _ in range(4)]
    assert statuses == [503, 502, 201, 201]
    assert control.faults().status_sequence == ()


def test_archived_canvas_answers_notice(client: httpx.Client, control: EmulatorControl) -> None:
    control.set_faults(archived_canvas_ids=["cv-1"])
    response = client.post("/canvas/trigger/send", json=SEND)
    assert response.status_code == 201
    assert response.json()["notice"] == CANVAS_ARCHIVED
    assert control.stats().recipients_sent == 0


def test_one_bad_recipient_rejects_the_batch(
    client: httpx.Client, control: EmulatorControl
) -> None:
    control.set_faults(reject_external_user_ids=["u-7"])
    batch = {"canvas_id": "c", "recipients": [{"external_user_id": f"u-{n}"} for n in range(50)]}
    assert client.post("/canvas/trigger/send", json=batch).status_code == 400
    batch["recipients"] = batch["recipients"][8:]
    assert client.post("/canvas/trigger/send", json=batch).status_code == 201


def test_record_cursor_stats_and_reset(client: httpx.Client, control: EmulatorControl) -> None:
    client.post("/canvas/trigger/send", json=SEND)
    client.post("/canvas/trigger/send", json={"canvas_id": "c"})
    page = control.requests_page()
    first = page.requests[0].seq  # seqs keep rising across resets, so old cursors stay valid
    assert [(r.seq - first, r.status, r.body) for r in page.requests] == [
        (0, 201, SEND),
        (1, 400, {"canvas_id": "c"}),
    ]
    assert page.last_seq == first + 1
    client.post("/nowhere", content=b"not json")
    newer = control.requests(since=page.last_seq)
    assert [(r.path, r.status, r.body) for r in newer] == [("/nowhere", 404, "not json")]
    stats = control.stats()
    assert (stats.requests_total, stats.accepted_requests, stats.recipients_sent) == (3, 1, 1)
    assert stats.by_path == {"/canvas/trigger/send": {"201": 1, "400": 1}, "/nowhere": {"404": 1}}
    control.reset()
    assert control.requests() == []
    assert control.stats().requests_total == 0


@pytest.mark.parametrize(
    ("call", "status"),
    [
        pytest.param(lambda c: c.set_faults(error_share=2.0), 400, id="share above 1"),
        pytest.param(lambda c: c.set_faults(latency_ms=(9, 3)), 400, id="reversed latency"),
        pytest.param(
            lambda c: c._send("POST", "faults", json={"nope": 1}), 400, id="unknown field"
        ),
        pytest.param(
            lambda c: c.set_faults(answer_override={"status": 600}),
            400,
            id="override status above 599",
        ),
        pytest.param(
            lambda c: c._send("POST", "faults", json={"answer_override": {"status": 99}}),
            400,
            id="override status below 100",
        ),
        pytest.param(
            lambda c: c.set_faults(answer_override={"status": 200, "body": "x" * (64 * 1024 + 1)}),
            400,
            id="override body too long",
        ),
        pytest.param(
            lambda c: c._send("POST", "faults", json={"answer_override": {"body": "no status"}}),
            400,
            id="override without status",
        ),
        pytest.param(lambda c: c._send("GET", "nothing"), 404, id="unknown route"),
        pytest.param(lambda c: c._send("POST", "stats"), 405, id="wrong method"),
    ],
)
def test_control_api_refuses_bad_calls(control: EmulatorControl, call: object, status: int) -> None:
    with pytest.raises(EmulatorControlError) as raised:
        call(control)  # type: ignore[operator]
    assert raised.value.status == status
    assert control.faults().answer_override is None  # a refused change changes nothing


def test_api_keys_are_replaced_at_run_time(client: httpx.Client, control: EmulatorControl) -> None:
    control.set_api_keys(["rotated"])
    assert client.post("/canvas/trigger/send", json=SEND).status_code == 401
    rotated = {"Authorization": "Bearer rotated"}
    assert client.post("/canvas/trigger/send", json=SEND, headers=rotated).status_code == 201


def test_ten_keep_alive_clients_at_once(
    emulator: RunningEmulator, control: EmulatorControl
) -> None:
    statuses: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        headers = {"Authorization": f"Bearer {KEY}"}
        with httpx.Client(base_url=emulator.url, headers=headers, timeout=5.0) as client:
            got = [client.post("/canvas/trigger/send", json=SEND).status_code for _ in range(30)]
        with lock:
            statuses.extend(got)

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [201] * 300
    assert control.stats().accepted_requests == 300


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        pytest.param("127.0.0.1", True, id="IPv4 loopback"),
        pytest.param("127.8.9.10", True, id="all of 127/8"),
        pytest.param("::1", True, id="IPv6 loopback"),
        pytest.param("::ffff:127.0.0.1", True, id="IPv4 loopback on a dual-stack socket"),
        pytest.param("localhost", True, id="localhost"),
        pytest.param("10.1.2.3", False, id="private address"),
        pytest.param("::ffff:10.1.2.3", False, id="mapped private address"),
        pytest.param("0.0.0.0", False, id="any address"),
        pytest.param("example.com", False, id="a name"),
    ],
)
def test_control_api_client_check(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


LOGIN_PAGE = "<html><body><form>Log in to the guest Wi-Fi</form></body></html>"


@pytest.mark.parametrize(
    ("override", "content_type", "content"),
    [
        pytest.param(
            AnswerOverride(status=200, body=LOGIN_PAGE),
            "text/html; charset=utf-8",
            LOGIN_PAGE.encode(),
            id="200 login page",
        ),
        pytest.param(
            AnswerOverride(status=302, body="<p>moved</p>"),
            "text/html; charset=utf-8",
            b"<p>moved</p>",
            id="302 without Location",
        ),
        pytest.param(
            AnswerOverride(status=502, body="Bad gateway: ü", content_type="text/plain"),
            "text/plain",
            "Bad gateway: ü".encode(),
            id="502 text",
        ),
        pytest.param(
            AnswerOverride(status=204, body="ignored"),
            "text/html; charset=utf-8",
            b"",
            id="204 has no body",
        ),
    ],
)
def test_answer_override_over_http(
    client: httpx.Client,
    control: EmulatorControl,
    override: AnswerOverride,
    content_type: str,
    content: bytes,
) -> None:
    faults = control.set_faults(answer_override=override)
    assert faults.answer_override is not None
    assert faults.answer_override.model_dump() == override.model_dump()
    response = client.post("/canvas/trigger/send", json=SEND)
    assert response.status_code == override.status
    assert (response.headers["content-type"], response.content) == (content_type, content)
    assert not any(name in response.headers for name in RATE_HEADERS)
    assert "location" not in response.headers
    assert control.budget().remaining == 250_000  # not counted
    assert [(r.status, r.message, r.recipients) for r in control.requests()] == [
        (override.status, None, 1)
    ]
    control.clear_faults()
    assert client.post("/canvas/trigger/send", json=SEND).status_code == 201  # same connection


@pytest.mark.parametrize(
    "turn_off",
    [
        pytest.param(lambda c: c.clear_faults(), id="clear_faults"),
        pytest.param(lambda c: c.set_faults(answer_override=False), id="set_faults False"),
        pytest.param(
            lambda c: c._send("POST", "faults", json={"answer_override": None}), id="null"
        ),
    ],
)
def test_answer_override_turns_off(
    client: httpx.Client, control: EmulatorControl, turn_off: object
) -> None:
    control.set_faults(answer_override=AnswerOverride(status=200, body=LOGIN_PAGE))
    control.set_faults(drop_next=0)  # other changes leave it in force
    assert client.post("/canvas/trigger/send", json=SEND).text == LOGIN_PAGE
    turn_off(control)  # type: ignore[operator]
    assert control.faults().answer_override is None
    response = client.post("/canvas/trigger/send", json=SEND)
    assert (response.status_code, response.headers["content-type"]) == (201, "application/json")


def test_invalid_target_over_http(client: httpx.Client, control: EmulatorControl) -> None:
    faults = control.set_faults(invalid_target_ids=["cmp-old", "cv-1"])
    assert faults.invalid_target_ids == {"cmp-old", "cv-1"}
    response = client.post("/canvas/trigger/send", json=SEND)
    assert (response.status_code, response.json()) == (
        400,
        {
            "message": "Invalid Canvas ID",
            "errors": ["canvas_id cv-1 is not an API-triggered Canvas"],
        },
    )
    campaign = {"campaign_id": "cmp-old", "broadcast": True}
    assert client.post("/campaigns/trigger/send", json=campaign).json()["message"] == (
        "Invalid Campaign ID"
    )
    campaign["campaign_id"] = "new"  # other ids are unaffected
    assert client.post("/campaigns/trigger/send", json=campaign).status_code == 201
    assert control.clear_faults().invalid_target_ids == frozenset()


def test_record_says_when_each_request_was_answered(
    client: httpx.Client, control: EmulatorControl
) -> None:
    control.set_faults(latency_ms=50)
    client.post("/canvas/trigger/send", json=SEND)
    control.set_faults(latency_ms=0)
    client.post("/canvas/trigger/send", json=SEND)
    slow, fast = control.requests()
    assert slow.answered_epoch_s == pytest.approx(slow.time_epoch_s + 0.05)
    assert fast.answered_epoch_s == fast.time_epoch_s
