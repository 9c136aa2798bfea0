"""Emulator: the HTTP side (stdlib `ThreadingHTTPServer`, HTTP/1.1 keep-alive), in-process or CLI.

Reads a request, lets `EmulatorState` or the control API decide, sleeps any injected latency, then
answers with an exact Content-Length, or closes the socket without a word for a dropped request.
A benchmark runs it as "Braze answering at once", so the per-request path stays lean: our own
HTTP/1.1 parsing, one write per answer, no per-request logging (bench/emulator_cpu.py measures).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Sequence
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from consumer.braze.limits import MAX_REQUEST_BYTES
from consumer.emulator.budget import BRAZE_REQUESTS_PER_HOUR, BudgetLimits
from consumer.emulator.control_api import PREFIX, handle_control
from consumer.emulator.record import MAX_RECORDED_REQUESTS, Recorder
from consumer.emulator.state import EmulatorState, InboundRequest, Reply

_log = logging.getLogger(__name__)
# Past this a too-large body is not even read away: we answer 413 and close the connection.
_MAX_DISCARD_BYTES = 4 * MAX_REQUEST_BYTES
_CHUNK_BYTES = 64 * 1024
_READ_BUFFER_BYTES = 64 * 1024
_MAX_LINE_BYTES = 65536  # a request line or header line, as http.server allows
_MAX_HEADERS = 100
_IDLE_TIMEOUT_S = 60.0  # a keep-alive connection idle this long is closed
_SHUTDOWN_POLL_S = 0.05  # how often serve_forever looks for stop(); keeps test teardown quick
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})
_PHRASES = {status: phrase for status, (phrase, _) in BaseHTTPRequestHandler.responses.items()}
_SERVER_HEADER = (
    f"Server: {BaseHTTPRequestHandler.server_version} {BaseHTTPRequestHandler.sys_version}\r\n"
)
_date_cache: tuple[int, str] = (0, "")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # `stop()` must not wait for idle keep-alive clients

    def __init__(self, address: tuple[str, int], state: EmulatorState) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.state = state
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._open_lock:
            for sock in self._open:
                with contextlib.suppress(OSError):  # already closed by the peer
                    sock.shutdown(socket.SHUT_RDWR)


class _Handler(socketserver.StreamRequestHandler):
    """One keep-alive connection: HTTP/1.1 requests read and answered in turn, on its own thread.

    A lean loop rather than `BaseHTTPRequestHandler`, whose header parsing (the email package),
    per-request log call and two writes per answer cost more CPU than a benchmark's stand-in for
    Braze may spend. It answers the same way: status line, `Server`, `Date`, then our headers;
    keep-alive for HTTP/1.1 unless `Connection: close` (HTTP/1.0 only with `keep-alive`).
    """

    rbufsize = _READ_BUFFER_BYTES  # one recv takes a whole request of 50 recipients
    timeout = _IDLE_TIMEOUT_S  # a keep-alive connection idle this long is closed
    disable_nagle_algorithm = True  # the answer leaves at once, no 40 ms delayed-ACK stall
    server: _Server

    def handle(self) -> None:
        # A timeout, a reset by the peer or `stop()` shutting the socket down ends the connection.
        with contextlib.suppress(OSError):
            while self._handle_one():
                pass

    def _handle_one(self) -> bool:
        """Read and answer one request; whether the connection stays open for another."""
        line = self.rfile.readline(_MAX_LINE_BYTES + 1)
        if line in (b"\r\n", b"\n"):  # an empty line before a request is ignored (RFC 9112 2.2)
            line = self.rfile.readline(_MAX_LINE_BYTES + 1)
        if not line:
            return False  # the client closed the connection
        if len(line) > _MAX_LINE_BYTES:
            return self._refuse(414, "the request line is too long")
        words = line.decode("latin-1").split()
        if len(words) != 3:
            return self._refuse(400, f"Bad request syntax ({line[:200]!r})")
        method, target, version = words
        keep_alive = version == "HTTP/1.1"
        if not keep_alive and version != "HTTP/1.0":
            newer = version.startswith("HTTP/") and version[5:6].isdigit() and version[5] >= "2"
            if newer:
                return self._refuse(505, f"Invalid HTTP version ({version})")
            return self._refuse(400, f"Bad request version ({version!r})")
        headers = self._read_headers()
        if isinstance(headers, str):
            return self._refuse(431, headers)
        connection = headers.get("connection", "").lower()
        if connection == "close":
            keep_alive = False
        elif connection == "keep-alive":
            keep_alive = True
        if method not in _METHODS:
            return self._refuse(501, f"Unsupported method ({method!r})")
        if headers.get("expect", "").lower() == "100-continue" and version == "HTTP/1.1":
            self.request.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        if target.startswith("//"):  # as http.server does: never an absolute URI without scheme
            target = "/" + target.lstrip("/")
        return self._serve(method, target, headers, keep_alive)

    def _read_headers(self) -> dict[str, str] | str:
        """Header name (lower case) -> value of its first occurrence, or why they are refused."""
        headers: dict[str, str] = {}
        for _ in range(_MAX_HEADERS + 1):
            line = self.rfile.readline(_MAX_LINE_BYTES + 1)
            if line in (b"\r\n", b"\n", b""):
                return headers
            if len(line) > _MAX_LINE_BYTES:
                return "Line too long"
            name, _, value = line.decode("latin-1").partition(":")
            headers.setdefault(name.strip().lower(), value.strip())
        return "Too many headers"

    def _serve(self, method: str, target: str, headers: dict[str, str], keep_alive: bool) -> bool:
        path, _, query = target.partition("?")
        if headers.get("transfer-encoding", "").lower() == "chunked":
            self._write(Reply(411, {"message": "Length Required", "errors": []}), method, False)
            return False
        body, size, readable = self._read_body(headers.get("content-length", "0"))
        keep_alive = keep_alive and readable
        if path.startswith(PREFIX):
            reply = self._control(method, path, query, body)
            return self._write(reply, method, keep_alive)
        request = InboundRequest(method, path, headers.get("authorization"), body, size)
        reply = self.server.state.handle(request)
        if reply.delay_s > 0:
            time.sleep(reply.delay_s)
        if reply.status is None:
            return False  # closing the socket without a word: the client sees EOF
        return self._write(reply, method, keep_alive)

    def _read_body(self, content_length: str) -> tuple[bytes, int, bool]:
        """The body (b"" when over the limit), its size, and whether the connection can go on."""
        try:
            size = max(int(content_length), 0)
        except ValueError:
            return b"", 0, False  # cannot tell where the next request starts
        if size <= MAX_REQUEST_BYTES:
            return self.rfile.read(size), size, True
        if size > _MAX_DISCARD_BYTES:  # not even read away: answered 413, then closed
            return b"", size, False
        left = size
        while left > 0:
            chunk = self.rfile.read(min(left, _CHUNK_BYTES))
            if not chunk:
                break
            left -= len(chunk)
        return b"", size, True

    def _control(self, method: str, path: str, query: str, body: bytes) -> Reply:
        # The control API changes what every client sees, so only this machine may use it, even
        # when the emulator listens on all interfaces.
        if not is_loopback(str(self.client_address[0])):
            return Reply(403, {"message": "Forbidden", "errors": ["control API is loopback only"]})
        return handle_control(self.server.state, method, path, query, body)

    def _refuse(self, status: int, error: str) -> bool:
        """Answer a request we cannot parse, and close: where the next one starts is unknown."""
        phrase = _PHRASES.get(status, "")
        return self._write(Reply(status, {"message": phrase, "errors": [error]}), "", False)

    def _write(self, reply: Reply, method: str, keep_alive: bool) -> bool:
        """Send the answer in one write; whether the connection stays open."""
        status = reply.status
        assert status is not None
        data = reply.content()
        head = (
            f"HTTP/1.1 {status} {_PHRASES.get(status, '')}\r\n{_SERVER_HEADER}"
            f"Date: {_http_date()}\r\nContent-Type: {reply.content_type}\r\n"
        )
        if _bodiless(status):  # only an answer override gets here
            data = b""
            if status < 200:  # the client waits for a final answer: closing says none comes
                keep_alive = False
        else:
            head += f"Content-Length: {len(data)}\r\n"
        for name, value in reply.headers:
            head += f"{name}: {value}\r\n"
        if not keep_alive:
            head += "Connection: close\r\n"
        head += "\r\n"
        # Latin-1, strict, like http.server: an override's Content-Type is printable ASCII.
        self.request.sendall(head.encode("latin-1") + (b"" if method == "HEAD" else data))
        return keep_alive


def _http_date() -> str:
    """The `Date` header's value, formatted once per second."""
    global _date_cache  # noqa: PLW0603 (a per-second cache shared by every connection)
    now_s = int(time.time())
    cached_s, text = _date_cache
    if cached_s != now_s:
        text = formatdate(now_s, usegmt=True)
        _date_cache = (now_s, text)
    return text


class RunningEmulator:
    """An emulator serving on a background thread; `stop()` or use it as a context manager."""

    def __init__(self, server: _Server) -> None:
        self._server = server
        self.state = server.state
        self.host = str(server.server_address[0])
        self.port = int(server.server_address[1])
        shown = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{shown}:{self.port}"
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": _SHUTDOWN_POLL_S},
            name=f"braze-emulator-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, close open connections, release the port. Safe to call twice."""
        if not self._thread.is_alive():
            return
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> RunningEmulator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def start_emulator(
    *,
    api_keys: Sequence[str],
    host: str = "127.0.0.1",
    port: int = 0,
    requests_per_hour: int = BRAZE_REQUESTS_PER_HOUR,
    requests_per_second: int | None = None,
    seed: int | None = None,
    clock: Callable[[], float] = time.time,
    max_recorded: int = MAX_RECORDED_REQUESTS,
) -> RunningEmulator:
    """Serve the emulator on `host:port` (0 picks a free port) until `stop()`."""
    state = EmulatorState(
        api_keys,
        BudgetLimits(per_hour=requests_per_hour, per_second=requests_per_second),
        seed=seed,
        clock=clock,
        recorder=Recorder(max_requests=max_recorded),
    )
    if not is_loopback(host):
        _log.warning(
            "braze emulator listening on %s, beyond loopback; control API stays local", host
        )
    return RunningEmulator(_Server((host, port), state))


def _bodiless(status: int) -> bool:
    """Whether HTTP forbids a body (and Content-Length) with `status` (RFC 9110 §6.4.1)."""
    return status < 200 or status in (204, 304)


def is_loopback(host: str) -> bool:
    """Whether `host` (an address, or "localhost") is this machine's loopback."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost"
    # A dual-stack socket shows IPv4 clients as ::ffff:a.b.c.d; judge the IPv4 address.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback
