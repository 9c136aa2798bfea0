"""The Braze client's HTTP layer: what it needs (`HttpSender`), and httpx behind it.

`HttpSender.post` sends bytes to a path on one origin and reads back a bounded answer; two
implementations:

- `consumer.braze.pool.ConnectionPool` (the default): HTTP/1.1 keep-alive connections on the
  stdlib's `http.client`, about a third of httpx's CPU per request;
- `HttpxSender` (here): an `httpx.Client`, used when a proxy is configured in the environment
  (httpx honours HTTP_PROXY, HTTPS_PROXY and ALL_PROXY; the pool does not speak to proxies) and
  when a test injects an httpx transport.

Both return an `HttpAnswer` and raise `HttpTransportError` when no status arrived: `unsent` is
True only when the request certainly never left (no connection could be made). Neither retries
by itself: the server may have read the body, so the caller decides (BrazeClient treats such a
failure as "possibly processed").
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import httpx

from consumer.braze.limits import MAX_RESPONSE_READ_BYTES

__all__ = [
    "Headers",
    "HttpAnswer",
    "HttpSender",
    "HttpTransportError",
    "HttpxSender",
    "PoolClosedError",
    "proxy_configured",
]


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """A response whose status arrived."""

    status: int
    headers: Mapping[str, str]  # case-insensitive names
    body: bytes  # at most MAX_RESPONSE_READ_BYTES
    truncated: bool  # the body was cut at the limit, or broke off: do not trust it


class HttpTransportError(httpx.TransportError):
    """No status arrived. `kind` names the failure as httpx does (ConnectError, ReadTimeout...).

    It derives from httpx.TransportError so that code catching httpx's errors catches both
    senders' failures.
    """

    def __init__(self, message: str, *, kind: str, timeout: bool, unsent: bool) -> None:
        super().__init__(message)
        self.kind = kind
        self.timeout = timeout  # a timeout rather than a refusal or a broken connection
        self.unsent = unsent  # certainly never reached the server: connecting failed


class PoolClosedError(RuntimeError):
    """`close()` was called: the pool takes no more requests."""


class HttpSender(Protocol):
    """POST bytes to a path under one base URL; thread-safe."""

    def post(self, path: str, content: bytes, headers: Mapping[str, str]) -> HttpAnswer:
        """Raises HttpTransportError when no status arrived, RuntimeError once closed."""
        ...

    def close(self) -> None:
        """Close every connection; a `post` blocked on one fails promptly."""
        ...


class Headers(Mapping[str, str]):
    """Response headers, names case-insensitive. A repeated header's values are joined by ", ",
    as httpx does, so a header that must appear once reads as malformed when it is repeated."""

    __slots__ = ("_values",)

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        values: dict[str, str] = {}
        for name, value in pairs:
            key = name.lower()
            values[key] = f"{values[key]}, {value}" if key in values else value
        self._values = values

    def __getitem__(self, name: str) -> str:
        return self._values[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Headers({self._values!r})"


def proxy_configured() -> bool:
    """True when httpx (trust_env) would send through a proxy: HTTP_PROXY, HTTPS_PROXY or
    ALL_PROXY in any case (NO_PROXY alone changes nothing: it only exempts hosts from a proxy)."""
    proxies = urllib.request.getproxies()
    return any(proxies.get(scheme) for scheme in ("http", "https", "all"))


class HttpxSender:
    """An `httpx.Client` behind `HttpSender` (proxies from the environment, test transports)."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def post(self, path: str, content: bytes, headers: Mapping[str, str]) -> HttpAnswer:
        """See `HttpSender.post`; httpx's own errors become HttpTransportError."""
        try:
            with self._client.stream("POST", path, content=content, headers=headers) as response:
                body, truncated = _read_bounded(response)
                return HttpAnswer(response.status_code, response.headers, body, truncated)
        except HttpTransportError:
            raise
        except httpx.TransportError as exc:
            raise HttpTransportError(
                str(exc),
                kind=type(exc).__name__,
                timeout=isinstance(exc, httpx.TimeoutException),
                unsent=isinstance(
                    exc, httpx.ConnectTimeout | httpx.PoolTimeout | httpx.ConnectError
                ),
            ) from exc

    def close(self) -> None:
        self._client.close()


def _read_bounded(response: httpx.Response) -> tuple[bytes, bool]:
    """Read at most MAX_RESPONSE_READ_BYTES; returns (body, cut short)."""
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_RESPONSE_READ_BYTES:
                return b"".join(chunks)[:MAX_RESPONSE_READ_BYTES], True
    except httpx.HTTPError:
        # The status already arrived and decides the outcome; keep what came of the body.
        return b"".join(chunks), True
    return b"".join(chunks), False
