"""The stdlib connection pool over real loopback sockets: the emulator, keep-alive, TLS, and raw
servers that answer with hostile things (none of it may hang or crash the caller)."""

from __future__ import annotations

import contextlib
import io
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from consumer.braze.client import BrazeClient, BrazeClientConfig, ClientClosedError
from consumer.braze.http import Headers, HttpTransportError, HttpxSender, PoolClosedError
from consumer.braze.limits import MAX_RESPONSE_READ_BYTES
from consumer.braze.pool import MAX_ANSWER_BYTES, ConnectionPool, tls_context
from consumer.braze.ratelimit import parse_quota
from consumer.emulator import RunningEmulator, start_emulator
from consumer.intents import BatchKey, Endpoint
from consumer.json_types import JSONObject

pytestmark = pytest.mark.timeout(60)

KEY = "sk-http-test-0123456789"
BATCH = BatchKey(Endpoint.CANVAS_SEND, "canvas-1")
PATH = "/canvas/trigger/send"
AUTH = {"Authorization": f"Bearer {KEY}"}
BODY = b'{"canvas_id":"canvas-1","recipients":[{"external_user_id":"u-1"}]}'
OK = b'{"dispatch_id":"d-1","message":"success"}'
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about the pool: a proxy in the CI's environment would pick httpx."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def recipients(count: int) -> list[JSONObject]:
    return [{"external_user_id": f"user-{i}"} for i in range(count)]


def answer(status: int = 201, body: bytes = OK, *headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# -- A raw loopback server ------------------------------------------------------------------------

Handler = Callable[[socket.socket, io.BufferedReader], None]


class RawServer:
    """Accepts on loopback; each connection goes to `handler` on its own thread. Counts accepted
    connections and the most open at once."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self._handler = handler
        self._tls = tls
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = int(self._listener.getsockname()[1])
        self.accepted = 0
        self.peak_open = 0
        self._open = 0
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def url(self, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}"

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._listener.close()
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(None)
            with self._lock:
                self.accepted += 1
                self._open += 1
                self.peak_open = max(self.peak_open, self._open)
                self._conns.append(conn)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            if self._tls is not None:
                conn = self._tls.wrap_socket(conn, server_side=True)
                with self._lock:
                    self._conns.append(conn)
            with conn.makefile("rb") as reader:
                self._handler(conn, reader)
        except (OSError, ValueError):
            pass
        finally:
            with self._lock:
                self._open -= 1
            with contextlib.suppress(OSError):
                conn.close()


@contextlib.contextmanager
def serving(handler: Handler, tls: ssl.SSLContext | None = None) -> Iterator[RawServer]:
    server = RawServer(handler, tls)
    try:
        yield server
    finally:
        server.stop()


def read_request(reader: io.BufferedReader) -> bytes | None:
    """One request's body, or None when the client closed the connection."""
    length = 0
    line = reader.readline()
    if not line:
        return None
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return reader.read(length)


def answering(*replies: bytes, then_close: bool = False) -> Handler:
    """Answers each request with the next reply (the last one repeats)."""

    def handler(conn: socket.socket, reader: io.BufferedReader) -> None:
        index = 0
        while read_request(reader) is not None:
            conn.sendall(replies[min(index, len(replies) - 1)])
            index += 1
            if then_close:
                return

    return handler


def pool_for(
    url: str,
    *,
    max_connections: int = 4,
    read_timeout_s: float = 2.0,
    pool_timeout_s: float = 2.0,
) -> ConnectionPool:
    return ConnectionPool(
        url,
        max_connections=max_connections,
        connect_timeout_s=2.0,
        read_timeout_s=read_timeout_s,
        write_timeout_s=2.0,
        pool_timeout_s=pool_timeout_s,
        headers={"Content-Type": "application/json"},
    )


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- Through BrazeClient, against the emulator ----------------------------------------------------


@pytest.fixture(scope="module")
def emulator() -> Iterator[RunningEmulator]:
    with start_emulator(api_keys=[KEY], requests_per_hour=100_000_000) as running:
        yield running


def client_config(url: str, **changes: object) -> BrazeClientConfig:
    config = BrazeClientConfig(rest_endpoint=url, requests_per_hour=1_000_000_000)
    return replace(config, **changes)  # type: ignore[arg-type]


def test_a_client_without_transport_sends_through_the_pool(emulator: RunningEmulator) -> None:
    with BrazeClient(client_config(emulator.url), KEY) as client:
        pool = client._http
        assert isinstance(pool, ConnectionPool)
        for _ in range(5):
            results = client.send_batch(BATCH, recipients(50))
            assert [r.outcome for r in results] == ["sent"] * 50
        assert pool.connections_opened == 1  # keep-alive: one connection for the five
    sent = [r for r in emulator.state.requests_since(0) if r.path == PATH]
    assert len(sent) >= 5


@pytest.mark.parametrize("name", ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "ALL_PROXY"])
def test_a_proxy_in_the_environment_keeps_httpx(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(name, "http://proxy.invalid:3128")
    with BrazeClient(client_config("https://rest.example.test"), KEY) as client:
        assert isinstance(client._http, HttpxSender)


def test_no_proxy_alone_keeps_the_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "localhost,.svc")
    with BrazeClient(client_config("https://rest.example.test"), KEY) as client:
        assert isinstance(client._http, ConnectionPool)


def test_threads_share_the_pool_within_max_in_flight(emulator: RunningEmulator) -> None:
    config = client_config(emulator.url, max_in_flight=8)
    outcomes: list[str] = []
    lock = threading.Lock()
    with BrazeClient(config, KEY) as client:
        pool = client._http
        assert isinstance(pool, ConnectionPool)

        def work() -> None:
            for _ in range(20):
                results = client.send_batch(BATCH, recipients(3))
                with lock:
                    outcomes.extend(r.outcome for r in results)

        threads = [threading.Thread(target=work) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert outcomes == ["sent"] * (16 * 20 * 3)
        assert 1 <= pool.connections_opened <= 8


def test_connections_never_exceed_the_maximum_and_are_reused() -> None:
    def slow(conn: socket.socket, reader: io.BufferedReader) -> None:
        while read_request(reader) is not None:
            time.sleep(0.002)
            conn.sendall(answer())

    with serving(slow) as server:
        pool = pool_for(server.url(), max_connections=3)

        def work() -> None:
            for _ in range(10):
                assert pool.post(PATH, BODY, AUTH).status == 201

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        pool.close()
        assert server.peak_open <= 3
        assert server.accepted <= 3


def test_sequential_requests_reuse_one_connection() -> None:
    with serving(answering(answer())) as server:
        pool = pool_for(server.url())
        for _ in range(30):
            result = pool.post(PATH, BODY, AUTH)
            assert (result.status, result.body, result.truncated) == (201, OK, False)
        assert server.accepted == 1
        assert pool.idle_connections() == 1
        pool.close()


def test_a_large_body_goes_out_whole() -> None:
    received: list[int] = []

    def measuring(conn: socket.socket, reader: io.BufferedReader) -> None:
        while (body := read_request(reader)) is not None:
            received.append(len(body))
            conn.sendall(answer())

    big = b"x" * (3 * 1024 * 1024)
    with serving(measuring) as server:
        pool = pool_for(server.url())
        assert pool.post(PATH, big, AUTH).status == 201
        assert pool.post(PATH, BODY, AUTH).status == 201
        pool.close()
    assert received == [len(big), len(BODY)]


def test_the_request_carries_the_base_path_and_headers() -> None:
    heads: list[bytes] = []

    def recording(conn: socket.socket, reader: io.BufferedReader) -> None:
        while line := reader.readline():
            heads.append(line)
            if line == b"\r\n":
                break
        reader.read(len(BODY))
        conn.sendall(answer())

    with serving(recording) as server:
        pool = pool_for(server.url() + "/prefix/")
        assert pool.post(PATH, BODY, AUTH).status == 201
        pool.close()
    text = b"".join(heads).decode()
    assert text.startswith(f"POST /prefix{PATH} HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}\r\n" in text
    assert f"Authorization: Bearer {KEY}\r\n" in text
    assert "Content-Type: application/json\r\n" in text
    assert f"Content-Length: {len(BODY)}\r\n" in text


def test_a_header_that_could_split_the_request_is_refused() -> None:
    pool = pool_for("http://127.0.0.1:9")
    with pytest.raises(ValueError, match="header"):
        pool.post(PATH, BODY, {"Authorization": "Bearer x\r\nX-Evil: 1"})
    with pytest.raises(ValueError, match="path"):
        pool.post("/a b", BODY, AUTH)
    pool.close()


# -- Hostile answers ------------------------------------------------------------------------------


def test_a_huge_body_is_cut_and_the_connection_dropped() -> None:
    size = MAX_RESPONSE_READ_BYTES * 3
    reply = f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode() + b"y" * size
    with serving(answering(reply)) as server:
        pool = pool_for(server.url())
        result = pool.post(PATH, BODY, AUTH)
        assert (result.status, result.truncated) == (200, True)
        assert result.body == b"y" * MAX_RESPONSE_READ_BYTES
        assert pool.idle_connections() == 0
        assert pool.open_connections() == 0
        pool.close()


def test_a_body_that_never_ends_times_out_with_its_status() -> None:
    def stalling(conn: socket.socket, reader: io.BufferedReader) -> None:
        read_request(reader)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\npartial")
        time.sleep(5)

    with serving(stalling) as server:
        pool = pool_for(server.url(), read_timeout_s=0.3)
        started = time.monotonic()
        result = pool.post(PATH, BODY, AUTH)
        assert time.monotonic() - started < 2
        assert (result.status, result.body, result.truncated) == (200, b"partial", True)
        assert pool.open_connections() == 0
        pool.close()


def test_no_answer_at_all_is_a_read_timeout() -> None:
    def silent(conn: socket.socket, reader: io.BufferedReader) -> None:
        read_request(reader)
        time.sleep(5)

    with serving(silent) as server:
        pool = pool_for(server.url(), read_timeout_s=0.3)
        with pytest.raises(HttpTransportError) as raised:
            pool.post(PATH, BODY, AUTH)
        error = raised.value
        assert (error.kind, error.timeout, error.unsent) == ("ReadTimeout", True, False)
        pool.close()


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(b"SMTP ready\r\n\r\n", id="garbage status line"),
        pytest.param(b"HTTP/1.1 abc OK\r\n\r\n", id="status not a number"),
        pytest.param(b"HTTP/1.1 200 " + b"x" * 70_000 + b"\r\n\r\n", id="status line too long"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\n" + b"X-Many: 1\r\n" * 101 + b"\r\n", id="too many headers"
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nX-Long: " + b"x" * 70_000 + b"\r\n\r\n", id="header too long"
        ),
        pytest.param(b"HTTP/9.0 200 OK\r\n\r\n", id="unknown protocol"),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", id="tls to plain http"),
    ],
)
def test_a_garbage_answer_is_a_transport_error(reply: bytes) -> None:
    with serving(answering(reply, then_close=True)) as server:
        pool = pool_for(server.url())
        with pytest.raises(HttpTransportError) as raised:
            pool.post(PATH, BODY, AUTH)
        error = raised.value
        assert (error.kind, error.timeout, error.unsent) == ("RemoteProtocolError", False, False)
        assert pool.open_connections() == 0
        pool.close()


def test_endless_informational_answers_stop_at_the_answer_limit() -> None:
    def chatty(conn: socket.socket, reader: io.BufferedReader) -> None:
        read_request(reader)
        line = b"HTTP/1.1 100 Continue\r\n\r\n" * 4096
        for _ in range(MAX_ANSWER_BYTES // len(line) + 10):
            conn.sendall(line)

    with serving(chatty) as server:
        pool = pool_for(server.url())
        with pytest.raises(HttpTransportError) as raised:
            pool.post(PATH, BODY, AUTH)
        assert raised.value.kind == "RemoteProtocolError"
        assert "longer than" in str(raised.value)
        pool.close()


def test_endless_chunk_trailers_are_cut() -> None:
    def trailing(conn: socket.socket, reader: io.BufferedReader) -> None:
        read_request(reader)
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n")
        trailer = b"X-Trailer: 1\r\n" * 4096
        for _ in range(MAX_ANSWER_BYTES // len(trailer) + 10):
            conn.sendall(trailer)

    with serving(trailing) as server:
        pool = pool_for(server.url())
        result = pool.post(PATH, BODY, AUTH)
        assert (result.status, result.body, result.truncated) == (200, b"ok", True)
        pool.close()


def test_a_body_shorter_than_its_length_is_truncated() -> None:
    reply = b"HTTP/1.1 503 Busy\r\nContent-Length: 100\r\n\r\nonly this"
    with serving(answering(reply, then_close=True)) as server:
        pool = pool_for(server.url())
        result = pool.post(PATH, BODY, AUTH)
        assert (result.status, result.body, result.truncated) == (503, b"only this", True)
        assert pool.open_connections() == 0
        pool.close()


def test_a_broken_chunked_body_is_truncated() -> None:
    reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\nzz\r\n"
    with serving(answering(reply, then_close=True)) as server:
        pool = pool_for(server.url())
        result = pool.post(PATH, BODY, AUTH)
        assert (result.status, result.body, result.truncated) == (200, b"abcd", True)
        pool.close()


def test_a_chunked_body_is_read_and_the_connection_kept() -> None:
    reply = (
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in (OK[:10], OK[10:]))
        + b"0\r\n\r\n"
    )
    with serving(answering(reply)) as server:
        pool = pool_for(server.url())
        for _ in range(3):
            result = pool.post(PATH, BODY, AUTH)
            assert (result.status, result.body, result.truncated) == (201, OK, False)
        assert server.accepted == 1
        pool.close()


@pytest.mark.parametrize("status", [204, 304])
def test_answers_without_a_body_keep_the_connection(status: int) -> None:
    reply = f"HTTP/1.1 {status} X\r\n\r\n".encode()
    with serving(answering(reply)) as server:
        pool = pool_for(server.url())
        for _ in range(3):
            result = pool.post(PATH, BODY, AUTH)
            assert (result.status, result.body, result.truncated) == (status, b"", False)
        assert server.accepted == 1
        pool.close()


def test_an_informational_answer_drops_the_connection() -> None:
    early = b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n" + answer()
    with serving(answering(early)) as server:
        pool = pool_for(server.url())
        result = pool.post(PATH, BODY, AUTH)
        assert (result.status, result.body) == (103, b"")
        assert pool.open_connections() == 0  # its final answer is still on the wire
        pool.close()


def test_100_continue_is_skipped() -> None:
    reply = b"HTTP/1.1 100 Continue\r\n\r\n" + answer()
    with serving(answering(reply)) as server:
        pool = pool_for(server.url())
        assert pool.post(PATH, BODY, AUTH).body == OK
        pool.close()


def test_connection_close_is_honoured() -> None:
    reply = answer(201, OK, "Connection: close")
    with serving(answering(reply, then_close=True)) as server:
        pool = pool_for(server.url())
        for _ in range(3):
            result = pool.post(PATH, BODY, AUTH)
            assert (result.status, result.body, result.truncated) == (201, OK, False)
        assert server.accepted == 3
        assert pool.open_connections() == 0
        pool.close()


def test_disagreeing_content_lengths_drop_the_connection() -> None:
    reply = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nContent-Length: 9\r\n\r\nokmore...."
    with serving(answering(reply)) as server:
        pool = pool_for(server.url())
        result = pool.post(PATH, BODY, AUTH)
        assert result.status == 201
        assert pool.open_connections() == 0
        pool.close()


def test_a_server_that_closes_without_answering() -> None:
    def rude(conn: socket.socket, reader: io.BufferedReader) -> None:
        read_request(reader)

    with serving(rude) as server:
        pool = pool_for(server.url())
        with pytest.raises(HttpTransportError) as raised:
            pool.post(PATH, BODY, AUTH)
        error = raised.value
        assert (error.kind, error.timeout, error.unsent) == ("RemoteProtocolError", False, False)
        pool.close()


def test_an_idle_connection_the_server_closed_is_not_reused() -> None:
    # The server answers once per connection, then closes it: the pool sees the idle socket turn
    # readable (EOF) and opens a new one instead of writing into a dead connection.
    with serving(answering(answer(), then_close=True)) as server:
        pool = pool_for(server.url())
        for _ in range(3):
            assert pool.post(PATH, BODY, AUTH).status == 201
            time.sleep(0.05)  # the server's FIN arrives
        assert server.accepted == 3
        pool.close()


def test_an_expired_idle_connection_is_not_reused() -> None:
    with serving(answering(answer())) as server:
        pool = ConnectionPool(
            server.url(),
            max_connections=2,
            connect_timeout_s=1,
            read_timeout_s=1,
            write_timeout_s=1,
            pool_timeout_s=1,
            keepalive_expiry_s=0.05,
        )
        assert pool.post(PATH, BODY, AUTH).status == 201
        time.sleep(0.1)
        assert pool.post(PATH, BODY, AUTH).status == 201
        assert server.accepted == 2
        pool.close()


def test_connect_refused_is_certainly_unsent() -> None:
    pool = pool_for(f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(HttpTransportError) as raised:
        pool.post(PATH, BODY, AUTH)
    error = raised.value
    assert (error.kind, error.timeout, error.unsent) == ("ConnectError", False, True)
    assert pool.open_connections() == 0
    pool.close()


def test_waiting_for_a_free_connection_times_out_unsent() -> None:
    def silent(conn: socket.socket, reader: io.BufferedReader) -> None:
        read_request(reader)
        time.sleep(5)

    with serving(silent) as server:
        pool = pool_for(server.url(), max_connections=1, pool_timeout_s=0.2, read_timeout_s=3)
        blocked = threading.Thread(target=lambda: _swallow(pool, BODY), daemon=True)
        blocked.start()
        time.sleep(0.1)
        with pytest.raises(HttpTransportError) as raised:
            pool.post(PATH, BODY, AUTH)
        assert (raised.value.kind, raised.value.timeout, raised.value.unsent) == (
            "PoolTimeout",
            True,
            True,
        )
        pool.close()
        blocked.join(2)
        assert not blocked.is_alive()


def _swallow(pool: ConnectionPool, body: bytes) -> None:
    with contextlib.suppress(HttpTransportError, PoolClosedError):
        pool.post(PATH, body, AUTH)


def test_repeated_rate_limit_headers_are_joined_not_trusted() -> None:
    reply = answer(
        201, OK, "X-RateLimit-Remaining: 5", "x-ratelimit-remaining: 6", "X-RateLimit-Reset: 9"
    )
    with serving(answering(reply)) as server:
        pool = pool_for(server.url())
        result = pool.post(PATH, BODY, AUTH)
        pool.close()
    assert result.headers["X-RATELIMIT-REMAINING"] == "5, 6"
    quota = parse_quota(result.headers)
    assert quota.remaining is None  # a repeated header reads as malformed, as with httpx


def test_headers_are_case_insensitive() -> None:
    headers = Headers([("Content-Type", "a"), ("X-A", "1"), ("x-a", "2")])
    assert headers["content-type"] == headers["CONTENT-TYPE"] == "a"
    assert "X-a" in headers
    assert dict(headers) == {"content-type": "a", "x-a": "1, 2"}


# -- close() --------------------------------------------------------------------------------------


def test_close_interrupts_a_post_waiting_for_its_answer() -> None:
    def silent(conn: socket.socket, reader: io.BufferedReader) -> None:
        read_request(reader)
        time.sleep(10)

    with serving(silent) as server:
        pool = pool_for(server.url(), read_timeout_s=30)
        errors: list[BaseException] = []

        def post() -> None:
            try:
                pool.post(PATH, BODY, AUTH)
            except HttpTransportError as exc:
                errors.append(exc)

        thread = threading.Thread(target=post)
        thread.start()
        time.sleep(0.2)
        started = time.monotonic()
        pool.close()
        thread.join(5)
        assert not thread.is_alive()
        assert time.monotonic() - started < 1
        assert len(errors) == 1
        with pytest.raises(PoolClosedError):
            pool.post(PATH, BODY, AUTH)


def test_closing_the_client_interrupts_a_send_in_flight() -> None:
    def silent(conn: socket.socket, reader: io.BufferedReader) -> None:
        read_request(reader)
        time.sleep(10)

    with serving(silent) as server:
        client = BrazeClient(client_config(server.url(), read_timeout_s=30.0), KEY)
        assert isinstance(client._http, ConnectionPool)
        errors: list[BaseException] = []

        def send() -> None:
            try:
                client.send_batch(BATCH, recipients(1))
            except ClientClosedError as exc:
                errors.append(exc)

        thread = threading.Thread(target=send)
        thread.start()
        time.sleep(0.2)
        started = time.monotonic()
        client.close()
        thread.join(5)
        assert not thread.is_alive()
        assert time.monotonic() - started < 1
        assert len(errors) == 1


# -- What BrazeClient makes of the pool's failures ------------------------------------------------


def quick_config(url: str) -> BrazeClientConfig:
    return client_config(
        url, max_attempts=2, backoff_initial_s=0.01, backoff_max_s=0.01, read_timeout_s=0.3
    )


def test_the_client_reports_a_refused_connection_as_unsent() -> None:
    with BrazeClient(quick_config(f"http://127.0.0.1:{closed_port()}"), KEY) as client:
        outcome = client.request_content(Endpoint.CANVAS_SEND, BODY, 1)
    last = outcome.last
    assert (last.verdict, last.status, last.possibly_processed) == ("failed", None, False)
    assert last.detail.startswith("connection error: ConnectError: ")
    assert outcome.attempts == 2


def test_the_client_reports_a_read_timeout_as_possibly_processed() -> None:
    def silent(conn: socket.socket, reader: io.BufferedReader) -> None:
        while read_request(reader) is not None:
            time.sleep(1)

    with serving(silent) as server, BrazeClient(quick_config(server.url()), KEY) as client:
        outcome = client.request_content(Endpoint.CANVAS_SEND, BODY, 1)
    last = outcome.last
    assert (last.verdict, last.status, last.possibly_processed) == ("failed", None, True)
    assert last.detail == "timeout: ReadTimeout"


def test_the_client_judges_a_truncated_success_as_unexpected() -> None:
    reply = b"HTTP/1.1 201 Created\r\nContent-Length: 100\r\n\r\n" + OK
    with (
        serving(answering(reply, then_close=True)) as server,
        BrazeClient(quick_config(server.url()), KEY) as client,
    ):
        [result] = client.send_batch(BATCH, recipients(1))
    assert (result.outcome, result.http_status) == ("held", 201)


# -- TLS ------------------------------------------------------------------------------------------


def test_the_tls_context_verifies_hostnames_and_loads_the_bundle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    context = tls_context()
    assert context.check_hostname
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert context.cert_store_stats()["x509_ca"] > 50  # certifi's bundle


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for `localhost` (the stdlib cannot make one)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    return cert, key


def tls_server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


def test_https_with_a_trusted_certificate(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # as httpx, the pool honours it
    with serving(answering(answer()), tls_server_context(certificate)) as server:
        pool = pool_for(server.url("localhost", "https"))
        for _ in range(3):
            assert pool.post(PATH, BODY, AUTH).body == OK
        assert server.accepted == 1
        pool.close()


def test_https_refuses_a_wrong_hostname(certificate: tuple[Path, Path]) -> None:
    context = tls_context()
    context.load_verify_locations(cafile=str(certificate[0]))
    with serving(answering(answer()), tls_server_context(certificate)) as server:
        pool = ConnectionPool(
            server.url("127.0.0.1", "https"),  # the certificate names localhost only
            max_connections=1,
            connect_timeout_s=2,
            read_timeout_s=2,
            write_timeout_s=2,
            pool_timeout_s=2,
            ssl_context=context,
        )
        with pytest.raises(HttpTransportError) as raised:
            pool.post(PATH, BODY, AUTH)
        assert (raised.value.kind, raised.value.unsent) == ("ConnectError", True)
        assert "certificate" in str(raised.value).lower()
        pool.close()


def test_https_refuses_an_untrusted_certificate(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with serving(answering(answer()), tls_server_context(certificate)) as server:
        pool = pool_for(server.url("localhost", "https"))
        with pytest.raises(HttpTransportError) as raised:
            pool.post(PATH, BODY, AUTH)
        assert (raised.value.kind, raised.value.unsent) == ("ConnectError", True)
        pool.close()
