"""The emulator's own HTTP/1.1 loop, byte by byte over a raw socket: what http.server did before."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator

import pytest

from consumer.emulator import RunningEmulator, start_emulator

KEY = "raw-key-1"
SEND = json.dumps({"canvas_id": "cv", "recipients": [{"external_user_id": "u"}]}).encode()


@pytest.fixture(scope="module")
def emulator() -> Iterator[RunningEmulator]:
    with start_emulator(api_keys=[KEY]) as running:
        yield running


def post(body: bytes = SEND, *, version: str = "HTTP/1.1", extra: str = "") -> bytes:
    head = (
        f"POST /canvas/trigger/send {version}\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


def exchange(emulator: RunningEmulator, data: bytes, *, wait_s: float = 0.5) -> tuple[bytes, bool]:
    """Everything answered to `data`, and whether the emulator then closed the connection."""
    with socket.create_connection((emulator.host, emulator.port), timeout=wait_s) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            return received, False
        return received, True


def answers(received: bytes) -> list[tuple[str, dict[str, str], bytes]]:
    """(status line, headers, body) of each answer in `received`, using Content-Length."""
    found = []
    while received:
        head, _, rest = received.partition(b"\r\n\r\n")
        status, *lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines)
        size = int(headers.get("Content-Length", "0"))
        found.append((status, headers, rest[:size]))
        received = rest[size:]
    return found


def test_an_answer_is_one_status_line_then_server_date_and_ours_in_order(
    emulator: RunningEmulator,
) -> None:
    received, closed = exchange(emulator, post())
    assert not closed  # HTTP/1.1 keeps the connection
    ((status, headers, body),) = answers(received)
    assert status == "HTTP/1.1 201 Created"
    assert list(headers) == [
        "Server",
        "Date",
        "Content-Type",
        "Content-Length",
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
    ]
    assert headers["Server"].startswith("BaseHTTP/")
    assert re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", headers["Date"])
    assert json.loads(body)["message"] == "success"


def test_pipelined_requests_are_answered_in_order_on_one_connection(
    emulator: RunningEmulator,
) -> None:
    bad = post(b"{nope")
    received, closed = exchange(emulator, post() + bad + post())
    assert [status for status, _, _ in answers(received)] == [
        "HTTP/1.1 201 Created",
        "HTTP/1.1 400 Bad Request",
        "HTTP/1.1 201 Created",
    ]
    assert not closed


@pytest.mark.parametrize(
    ("data", "closes"),
    [
        pytest.param(post(extra="Connection: close\r\n"), True, id="1.1 close"),
        pytest.param(post(version="HTTP/1.0"), True, id="1.0"),
        pytest.param(
            post(version="HTTP/1.0", extra="Connection: keep-alive\r\n"), False, id="1.0 ka"
        ),
        pytest.param(b"\r\n" + post(), False, id="empty line first"),
    ],
)
def test_keep_alive_rules(emulator: RunningEmulator, data: bytes, closes: bool) -> None:
    received, closed = exchange(emulator, data)
    ((status, headers, _),) = answers(received)
    assert status == "HTTP/1.1 201 Created"
    assert closed is closes
    assert (headers.get("Connection") == "close") is closes


def test_head_gets_the_length_but_no_body(emulator: RunningEmulator) -> None:
    received, _ = exchange(emulator, b"HEAD /canvas/trigger/send HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n")
    assert b"\r\nContent-Length: " in head
    assert b"\r\nAllow: POST" in head
    assert body == b""


def test_expect_100_continue(emulator: RunningEmulator) -> None:
    received, _ = exchange(emulator, post(extra="Expect: 100-continue\r\n"))
    assert received.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n")


@pytest.mark.parametrize(
    ("data", "status"),
    [
        pytest.param(b"NONSENSE\r\n\r\n", "HTTP/1.1 400 Bad Request", id="bad request line"),
        pytest.param(
            b"GET / HTTP/2.0\r\n\r\n", "HTTP/1.1 505 HTTP Version Not Supported", id="2.0"
        ),
        pytest.param(b"BREW / HTTP/1.1\r\n\r\n", "HTTP/1.1 501 Not Implemented", id="method"),
        pytest.param(
            b"GET /" + b"x" * 70_000 + b" HTTP/1.1\r\n\r\n",
            "HTTP/1.1 414 Request-URI Too Long",
            id="414",
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n",
            "HTTP/1.1 431 Request Header Fields Too Large",
            id="too many headers",
        ),
        pytest.param(
            b"POST /canvas/trigger/send HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "HTTP/1.1 411 Length Required",
            id="chunked",
        ),
        pytest.param(
            b"POST /canvas/trigger/send HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            "HTTP/1.1 401 Unauthorized",
            id="unreadable length",
        ),
    ],
)
def test_what_cannot_be_read_is_answered_then_closed(
    emulator: RunningEmulator, data: bytes, status: str
) -> None:
    received, closed = exchange(emulator, data)
    ((got, headers, body),) = answers(received)
    assert got == status
    assert closed
    assert headers["Connection"] == "close"
    assert set(json.loads(body)) == {"message", "errors"}


def test_dropped_request_closes_without_a_byte(emulator: RunningEmulator) -> None:
    emulator.state.update_faults(lambda current: current.updated({"drop_next": 1}))
    assert exchange(emulator, post()) == (b"", True)
