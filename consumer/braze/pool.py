"""The Braze client's default HTTP layer (`consumer.braze.http.HttpSender`): a keep-alive pool.

`ConnectionPool`: HTTP/1.1 keep-alive connections on the stdlib's `http.client` parser, at most
`max_connections`, idle ones reused newest first. It costs about a third of httpx's CPU per
request (0.2 ms against 0.7 ms for a 14 KB POST on loopback), which matters with hundreds of
requests a second from many threads sharing the GIL. (`consumer.braze.http.HttpxSender` takes its
place when a proxy is configured in the environment or a test injects an httpx transport.)

It returns an `HttpAnswer` and raises `HttpTransportError` when no status arrived: `unsent` is
True only when the request certainly never left (no connection could be made). The pool never
retries by itself, not even on a reused connection the server had closed meanwhile (the
stale keep-alive race): the server may have read the body, so the caller decides, and
BrazeClient treats such a failure as "possibly processed" and retries it itself. httpx behaves
the same (httpcore retries connecting only, and httpx asks for no retries), and the race is kept
rare the way httpcore keeps it rare: an idle connection is dropped after KEEPALIVE_EXPIRY_S, or
when its socket turns readable (the server closed it, or sent bytes nobody asked for).

What a server answers cannot crash the caller, and its cost is bounded: the body is read up to
MAX_RESPONSE_READ_BYTES (then the connection is dropped), a whole answer up to MAX_ANSWER_BYTES
(an endless stream of 1xx answers, headers or chunk trailers), every socket read waits at most
the read timeout, and anything `http.client` refuses (a garbage status line, an over-long line,
more than 100 headers) is an `HttpTransportError`. An answer whose status arrived but whose body
broke off is returned with `truncated=True`: its status still decides. As with httpx, timeouts
are per read: a server trickling bytes just faster than the read timeout holds its request as
long as it keeps that up, within MAX_ANSWER_BYTES.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import os
import re
import select
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final, cast
from urllib.parse import urlsplit

import certifi

from consumer.braze.http import Headers, HttpAnswer, HttpTransportError, PoolClosedError
from consumer.braze.limits import MAX_RESPONSE_READ_BYTES

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = ["KEEPALIVE_EXPIRY_S", "MAX_ANSWER_BYTES", "ConnectionPool", "tls_context"]

# httpx's default: an idle keep-alive connection older than this is closed, not reused.
KEEPALIVE_EXPIRY_S: Final = 5.0
# Everything read for one answer: status lines, headers, chunk framing, body and trailers. Braze's
# answers are a few hundred bytes; this only stops a server that never stops talking.
MAX_ANSWER_BYTES: Final = 4 * MAX_RESPONSE_READ_BYTES
# Bodies up to this size go out in one send with the request head (one syscall, one packet).
_JOIN_BODY_BYTES: Final = 64 * 1024
_READ_CHUNK_BYTES: Final = 64 * 1024
# What may not appear in a request line or header: a server must not read two requests from one.
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")
_UNSAFE_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_USER_AGENT: Final = "braze-trigger-consumer"


def tls_context() -> ssl.SSLContext:
    """The context httpx 0.28 makes (verify=True, trust_env): the CA file SSL_CERT_FILE, else the
    CA directory SSL_CERT_DIR, else certifi's bundle; hostnames checked, TLS 1.2 at least."""
    if cafile := os.environ.get("SSL_CERT_FILE"):
        context = ssl.create_default_context(cafile=cafile)
    elif capath := os.environ.get("SSL_CERT_DIR"):
        context = ssl.create_default_context(capath=capath)
    else:
        context = ssl.create_default_context(cafile=certifi.where())
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    context.minimum_version = max(context.minimum_version, ssl.TLSVersion.TLSv1_2)
    context.set_alpn_protocols(["http/1.1"])
    return context


class _Connection:
    """One socket and what the pool knows of it."""

    __slots__ = ("_poll", "idle_since", "sock", "timeout")

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self.sock = sock
        self.timeout = timeout
        self.idle_since = 0.0
        self._poll = _poller(sock)

    def readable(self) -> bool:
        """Idle and yet readable: the server closed it (EOF) or sent what nobody asked for."""
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return True
        return self._poll()

    def set_timeout(self, seconds: float) -> None:
        if seconds != self.timeout:
            self.sock.settimeout(seconds)
            self.timeout = seconds

    def interrupt(self) -> None:
        """Make a blocked send or receive on it return now (from another thread)."""
        # The plain socket's shutdown, also for TLS: SSLSocket.shutdown would also drop its TLS
        # state under the reading thread.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def _poller(sock: socket.socket) -> Callable[[], bool]:
    if sys.platform == "win32" or not hasattr(select, "poll"):  # pragma: no cover - Linux runs it
        fd = sock.fileno()
        return lambda: bool(select.select([fd], [], [], 0)[0])
    poll = select.poll()
    poll.register(sock, select.POLLIN)
    return lambda: bool(poll.poll(0))


class ConnectionPool:
    """HTTP/1.1 keep-alive connections to one origin, on `http.client`'s response parser.

    `post` takes the newest idle connection (or opens one, up to `max_connections`; beyond, it
    waits up to `pool_timeout_s`), sends the request, reads the answer and puts the connection
    back only if the answer was read to its end and did not say `Connection: close`.
    Timeouts: `connect_timeout_s` for TCP and TLS together, `write_timeout_s` per send,
    `read_timeout_s` per socket read.
    """

    def __init__(
        self,
        base_url: str,
        *,
        max_connections: int,
        connect_timeout_s: float,
        read_timeout_s: float,
        write_timeout_s: float,
        pool_timeout_s: float,
        headers: Mapping[str, str] | None = None,
        keepalive_expiry_s: float = KEEPALIVE_EXPIRY_S,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not self.serves(base_url):
            raise ValueError("the pool serves http(s) URLs with a host and no userinfo or query")
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        parts = urlsplit(base_url)
        https = parts.scheme == "https"
        default_port = 443 if https else 80
        self._host = _ascii_host(parts.hostname or "")
        self._port = parts.port or default_port
        self._server_hostname = self._host
        self._tls = (ssl_context or tls_context()) if https else None
        self._prefix = parts.path.rstrip("/")
        shown = f"[{self._host}]" if ":" in self._host else self._host
        host = shown if self._port == default_port else f"{shown}:{self._port}"
        fixed = {
            "Host": host,
            "Accept": "*/*",
            "Accept-Encoding": "identity",
            "Connection": "keep-alive",
            "User-Agent": _USER_AGENT,
            **(headers or {}),
        }
        self._fixed_head = "".join(_header_line(name, value) for name, value in fixed.items())
        self._max = max_connections
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._write_timeout_s = write_timeout_s
        self._pool_timeout_s = pool_timeout_s
        self._expiry_s = keepalive_expiry_s
        self._lock = threading.Lock()
        self._released = threading.Condition(self._lock)
        self._idle: list[_Connection] = []  # oldest first: reuse pops the newest
        self._busy: set[_Connection] = set()
        self._opened = 0  # idle + busy + being connected: never above max_connections
        self._closed = False
        self.connections_opened = 0  # ever, for tests and curiosity

    @staticmethod
    def serves(base_url: str) -> bool:
        """Whether the pool can serve this base URL (else the client keeps httpx)."""
        try:
            parts = urlsplit(base_url)
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError:
            return False
        return (
            parts.scheme in ("http", "https")
            and bool(parts.hostname)
            and not parts.username
            and not parts.password
            and not parts.query
            and not parts.fragment
        )

    def __repr__(self) -> str:
        scheme = "https" if self._tls else "http"
        return f"ConnectionPool({scheme}://{self._host}:{self._port}, max={self._max})"

    def post(self, path: str, content: bytes, headers: Mapping[str, str]) -> HttpAnswer:
        """POST `content` to `path` (under the base URL's path); see `HttpSender.post`."""
        head = self._head(path, len(content), headers)
        conn = self._acquire()
        reusable = False
        try:
            answer, reusable = self._exchange(conn, head, content)
            return answer
        finally:
            self._release(conn, reusable)

    def close(self) -> None:
        """Close idle connections and interrupt busy ones (their `post` fails at once); later
        `post`s raise PoolClosedError. A `post` still connecting fails when its connect returns
        (within `connect_timeout_s`: a blocking connect cannot be interrupted)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            self._opened -= len(idle)
            # Under the lock: an owner closes its socket only after leaving `_busy` (which takes
            # the lock), so no socket is shut down after its descriptor was closed and reused.
            for conn in self._busy:
                conn.interrupt()
            self._released.notify_all()
        for conn in idle:
            conn.close()

    def idle_connections(self) -> int:
        with self._lock:
            return len(self._idle)

    def open_connections(self) -> int:
        with self._lock:
            return self._opened

    def _head(self, path: str, length: int, headers: Mapping[str, str]) -> bytes:
        target = f"{self._prefix}{path}"
        if not target.startswith("/") or _UNSAFE.search(target):
            raise ValueError(f"not a request path: {target!r}")
        extra = "".join(_header_line(name, value) for name, value in headers.items())
        return (
            f"POST {target} HTTP/1.1\r\n{self._fixed_head}{extra}Content-Length: {length}\r\n\r\n"
        ).encode("ascii")

    def _acquire(self) -> _Connection:
        stale: list[_Connection] = []
        try:
            with self._lock:
                deadline: float | None = None
                while True:
                    if self._closed:
                        raise PoolClosedError("the connection pool is closed")
                    conn = self._take_idle(stale)
                    if conn is not None:
                        self._busy.add(conn)
                        return conn
                    if self._opened < self._max:
                        self._opened += 1
                        break
                    now = time.monotonic()
                    if deadline is None:
                        deadline = now + self._pool_timeout_s
                    if now >= deadline:
                        raise HttpTransportError(
                            "no free connection", kind="PoolTimeout", timeout=True, unsent=True
                        )
                    self._released.wait(deadline - now)
        finally:
            for conn in stale:
                conn.close()
        try:
            conn = self._connect()
        except BaseException:
            with self._lock:
                self._opened -= 1
                self._released.notify()
            raise
        with self._lock:
            if not self._closed:
                self._busy.add(conn)
                self.connections_opened += 1
                return conn
            self._opened -= 1
        conn.close()
        raise PoolClosedError("the connection pool is closed")

    def _take_idle(self, stale: list[_Connection]) -> _Connection | None:
        """The newest idle connection still good (holding the lock); `stale` gets the others."""
        idle = self._idle
        now = time.monotonic()
        while idle and now - idle[0].idle_since > self._expiry_s:
            stale.append(idle.pop(0))
            self._opened -= 1
        while idle:
            conn = idle.pop()
            if not conn.readable():
                return conn
            stale.append(conn)
            self._opened -= 1
        return None

    def _release(self, conn: _Connection, reusable: bool) -> None:
        with self._lock:
            self._busy.discard(conn)
            keep = reusable and not self._closed
            if keep:
                conn.idle_since = time.monotonic()
                self._idle.append(conn)
            else:
                self._opened -= 1
            self._released.notify()
        if not keep:
            conn.close()

    def _connect(self) -> _Connection:
        """TCP (and TLS) within the connect timeout; any failure means nothing was sent."""
        timeout = self._connect_timeout_s
        sock: socket.socket | None = None
        try:
            sock = socket.create_connection((self._host, self._port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self._server_hostname)
        except TimeoutError as exc:
            _close_quietly(sock)
            raise HttpTransportError(
                _describe(exc, "connect timed out"),
                kind="ConnectTimeout",
                timeout=True,
                unsent=True,
            ) from exc
        except (OSError, ValueError) as exc:  # refused, DNS, TLS (certificate, handshake)
            _close_quietly(sock)
            raise HttpTransportError(
                _describe(exc, "connect failed"), kind="ConnectError", timeout=False, unsent=True
            ) from exc
        return _Connection(sock, timeout)

    def _exchange(self, conn: _Connection, head: bytes, content: bytes) -> tuple[HttpAnswer, bool]:
        """Send, read the answer; (answer, whether the connection may be reused)."""
        sock = conn.sock
        write_failed = False
        try:
            conn.set_timeout(self._write_timeout_s)
            if len(content) <= _JOIN_BODY_BYTES:
                sock.sendall(head + content)
            else:
                sock.sendall(head)
                sock.sendall(content)
        except TimeoutError as exc:
            raise _after_send(exc, "WriteTimeout", "write timed out") from exc
        except OSError:
            # As httpcore does: the server may have answered early (a 413 for a body it will
            # not read) and closed; read what it said. Failing that, the read error is raised.
            write_failed = True
        response = http.client.HTTPResponse(
            cast(socket.socket, _Source(io.BufferedReader(_CappedReader(sock, MAX_ANSWER_BYTES)))),
            method="POST",
        )
        try:
            conn.set_timeout(self._read_timeout_s)
            response.begin()
        except TimeoutError as exc:
            raise _after_send(exc, "ReadTimeout", "read timed out") from exc
        except http.client.HTTPException as exc:  # RemoteDisconnected, BadStatusLine, too long
            raise _after_send(exc, "RemoteProtocolError", "bad answer") from exc
        except OSError as exc:
            raise _after_send(exc, "ReadError", "read failed") from exc
        except Exception as exc:  # whatever else a hostile answer makes the parser raise
            raise _after_send(exc, "RemoteProtocolError", "bad answer") from exc
        headers = Headers((name, str(value)) for name, value in response.msg.items())
        body, truncated = _read_body(response)
        response.close()
        reusable = (
            not truncated
            and not write_failed
            and not response.will_close
            and response.status >= 200  # a 1xx left its final answer unread on the wire
            and "," not in headers.get("content-length", "")  # disagreeing lengths
        )
        return HttpAnswer(response.status, headers, body, truncated), reusable


class _CappedReader(io.RawIOBase):
    """The socket as a raw stream that refuses to read more than `cap` bytes in all."""

    def __init__(self, sock: socket.socket, cap: int) -> None:
        super().__init__()
        self._sock = sock
        self._left = cap

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        if self._left <= 0:
            raise _AnswerTooLongError(f"the answer is longer than {MAX_ANSWER_BYTES} bytes")
        view = memoryview(buffer).cast("B")
        count = self._sock.recv_into(view[: self._left])
        self._left -= count
        return count


class _AnswerTooLongError(http.client.HTTPException):
    pass


class _Source:
    """What `HTTPResponse` wants of a socket: `makefile`, here the capped reader."""

    def __init__(self, reader: io.BufferedReader) -> None:
        self._reader = reader

    def makefile(self, mode: str) -> io.BufferedReader:
        return self._reader


def _read_body(response: http.client.HTTPResponse) -> tuple[bytes, bool]:
    """At most MAX_RESPONSE_READ_BYTES; (body, cut short or broken off)."""
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := response.read1(min(_READ_CHUNK_BYTES, MAX_RESPONSE_READ_BYTES + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_RESPONSE_READ_BYTES:
                return b"".join(chunks)[:MAX_RESPONSE_READ_BYTES], True
    except Exception:  # timeout, reset, IncompleteRead, a bad chunk size: the status stands
        return b"".join(chunks), True  # read1: what arrived before the failure is kept
    # http.client ends a Content-Length body at EOF without complaint: it says what is missing.
    missing = response.length is not None and response.length > 0
    return b"".join(chunks), missing


def _after_send(exc: BaseException, kind: str, fallback: str) -> HttpTransportError:
    timeout = kind.endswith("Timeout")
    return HttpTransportError(_describe(exc, fallback), kind=kind, timeout=timeout, unsent=False)


def _describe(exc: BaseException, fallback: str) -> str:
    text = str(exc)
    return text if text else f"{fallback} ({type(exc).__name__})"


def _close_quietly(sock: socket.socket | None) -> None:
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


def _header_line(name: str, value: str) -> str:
    if not name or _UNSAFE.search(name) or ":" in name or _UNSAFE_VALUE.search(value):
        raise ValueError(f"header {name!r} has characters a header may not have")
    return f"{name}: {value}\r\n"


def _ascii_host(host: str) -> str:
    try:
        host.encode("ascii")
    except UnicodeEncodeError:
        return host.encode("idna").decode("ascii")
    return host
