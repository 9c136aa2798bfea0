"""Emulator: the HTTP side (stdlib `ThreadingHTTPServer`, HTTP/1.1 keep-alive), in-process or CLI.

Reads a request, lets `EmulatorState` or the control API decide, sleeps any injected latency, then
answers with an exact Content-Length, or closes the socket without a word for a dropped request.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
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
_IDLE_TIMEOUT_S = 60.0  # a keep-alive connection idle this long is closed
_SHUTDOWN_POLL_S = 0.05  # how often serve_forever looks for stop(); keeps test teardown quick


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


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every answer carries Content-Length
    disable_nagle_algorithm = True  # headers and body leave at once, no 40 ms delayed-ACK stall
    timeout = _IDLE_TIMEOUT_S
    server: _Server

    def do_POST(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s " + format, self.address_string(), *args)

    def _serve(self) -> None:
        path, _, query = self.path.partition("?")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            self._write(Reply(411, {"message": "Length Required", "errors": []}))
            return
        body, size = self._read_body()
        if path.startswith(PREFIX):
            self._write(self._control(path, query, body))
            return
        request = InboundRequest(self.command, path, self.headers.get("Authorization"), body, size)
        reply = self.server.state.handle(request)
        if reply.delay_s > 0:
            time.sleep(reply.delay_s)
        if reply.status is None:
            self.close_connection = True  # the server closes the socket: the client sees EOF
            return
        self._write(reply)

    def _read_body(self) -> tuple[bytes, int]:
        """The body, or b"" with its size when it is over the limit (read away, or not at all)."""
        try:
            size = max(int(self.headers.get("Content-Length", "0")), 0)
        except ValueError:
            size = 0
            self.close_connection = True  # cannot tell where the next request starts
        if size <= MAX_REQUEST_BYTES:
            return self.rfile.read(size), size
        if size > _MAX_DISCARD_BYTES:
            self.close_connection = True
            return b"", size
        left = size
        while left > 0:
            chunk = self.rfile.read(min(left, _CHUNK_BYTES))
            if not chunk:
                break
            left -= len(chunk)
        return b"", size

    def _control(self, path: str, query: str, body: bytes) -> Reply:
        # The control API changes what every client sees, so only this machine may use it, even
        # when the emulator listens on all interfaces.
        if not is_loopback(str(self.client_address[0])):
            return Reply(403, {"message": "Forbidden", "errors": ["control API is loopback only"]})
        return handle_control(self.server.state, self.command, path, query, body)

    def _write(self, reply: Reply) -> None:
        assert reply.status is not None
        data = reply.content()
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        if _bodiless(reply.status):  # only an answer override gets here
            data = b""
            if reply.status < 200:  # the client waits for a final answer: closing says none comes
                self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(data)))
        for name, value in reply.headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


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
