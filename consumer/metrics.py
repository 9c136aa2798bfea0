"""Observability edge: the service's Prometheus metrics and the /metrics, /healthz, /readyz server.

Every stage reports through plain typed methods on `Metrics`; nothing else imports
prometheus_client. Labels carry only bounded values (topic, partition, rule id, reason, endpoint
path, status class), never a user identifier.
"""

from __future__ import annotations

import logging
import platform
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

from consumer import __version__
from consumer.braze.answers import HoldCause

log = logging.getLogger(__name__)

PREFIX = "braze_consumer_"
NO_RULE = "-"  # rule label of outcomes that happen before any rule applies (e.g. invalid_json)

# Braze answers in 100-300 ms when healthy; the long tail reaches the 30 s read timeout.
LATENCY_BUCKETS_S = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0)
# Dense near 50 so a drop below full batches under load is visible.
RECIPIENT_BUCKETS = (1, 2, 5, 10, 20, 30, 40, 45, 49, 50)

Clock = Callable[[], float]
_STOP_POLL_S = 0.05  # how soon `stop()` returns; the serving thread wakes this often when idle
# A scrape or a probe sends its request at once: a connection that sends nothing for this long is
# closed, so idle or slow connections cannot hold threads.
REQUEST_TIMEOUT_S = 2.0
# Connections served at once; more are closed at once instead of each starting a thread.
MAX_CONNECTIONS = 32


def status_class(status: int | None) -> str:
    """`2xx`/`4xx`/`5xx`, `429` on its own (the budget), `error` when no response came back."""
    if status is None:
        return "error"
    if status == 429:
        return "429"
    return f"{status // 100}xx"


class Metrics:
    """All the service's metrics, in a registry of their own so instances never collide."""

    def __init__(self, registry: CollectorRegistry | None = None, wall_clock: Clock = time.time):
        self.registry = registry if registry is not None else CollectorRegistry()
        self._wall_clock = wall_clock
        self._define_event_metrics()
        self._define_request_metrics()
        self._define_pipeline_metrics()
        self._build = Info(
            f"{PREFIX}build",
            "Version of the running service and of its rules.",
            registry=self.registry,
        )
        self._build.info({"version": __version__, "python": platform.python_version()})
        self._rules_info = self._gauge(
            "rules_info", "1 for the hash of the rules in use.", ["hash"]
        )
        self._rules_hash: str | None = None
        self._reloads = self._counter(
            "rules_reloads_total", "Changed rules files taken (ok) or refused (failed).", ["result"]
        )
        self._up.set(1)

    def _counter(self, name: str, doc: str, labels: Iterable[str] = ()) -> Counter:
        return Counter(PREFIX + name, doc, list(labels), registry=self.registry)

    def _gauge(self, name: str, doc: str, labels: Iterable[str] = ()) -> Gauge:
        return Gauge(PREFIX + name, doc, list(labels), registry=self.registry)

    def _define_event_metrics(self) -> None:
        self._consumed = self._counter("events_consumed_total", "Messages read.", ["topic"])
        self._matched = self._counter("events_matched_total", "Rule matches (sends).", ["rule"])
        self._skipped = self._counter(
            "events_skipped_total", "Rule matches skipped by the rule.", ["rule", "reason"]
        )
        self._dead_lettered = self._counter(
            "events_dead_lettered_total", "Dead-letter writes acknowledged.", ["rule", "reason"]
        )
        self._recipients = self._counter(
            "recipients_sent_total", "Recipients accepted by Braze (2xx).", ["endpoint"]
        )

    def _define_request_metrics(self) -> None:
        self._requests = self._counter(
            "requests_total", "Braze HTTP attempts by outcome.", ["endpoint", "status_class"]
        )
        self._latency = Histogram(
            f"{PREFIX}request_duration_seconds",
            "Braze HTTP attempt duration.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self._per_request = Histogram(
            f"{PREFIX}recipients_per_request",
            "Recipients in each Braze send attempt.",
            ["endpoint"],
            buckets=RECIPIENT_BUCKETS,
            registry=self.registry,
        )
        self._retries = self._counter(
            "retries_total", "Braze requests scheduled for another attempt.", ["endpoint", "reason"]
        )
        self._rl_waits = self._counter("rate_limit_waits_total", "Waits for the request budget.")
        self._rl_wait_s = self._counter(
            "rate_limit_wait_seconds_total", "Time spent waiting for the request budget."
        )
        self._budget_share = self._gauge(
            "budget_share",
            "This member's share of braze.requests_per_hour: its partitions / all subscribed.",
        )
        self._budget_rate = self._gauge(
            "budget_requests_per_hour", "Requests per hour this member may send (its share)."
        )
        self._in_flight_requests = self._gauge("in_flight_requests", "Braze requests under way.")
        self._last_success = self._gauge(
            "last_success_timestamp_seconds", "Unix time of the last 2xx send with recipients."
        )

    def _define_pipeline_metrics(self) -> None:
        self._in_flight_events = self._gauge("in_flight_events", "Events read but not settled.")
        self._buffered = self._gauge("buffered_recipients", "Recipients waiting in batches.")
        self._pending_batches = self._gauge("pending_batches", "Batches not yet sent.")
        self._paused = self._gauge("paused_partitions", "Partitions paused for backpressure.")
        self._lag = self._gauge(
            "lag_messages", "High watermark minus committed offset.", ["topic", "partition"]
        )
        self._lag_s = self._gauge(
            "lag_seconds",
            "Age of the oldest unsettled event read from the partition (0 when none).",
            ["topic", "partition"],
        )
        self._committed_offset = self._gauge(
            "committed_offset", "The last offset committed.", ["topic", "partition"]
        )
        self._commits = self._counter("commits_total", "Offset commits acknowledged.")
        self._schema_waiting = self._gauge(
            "schema_registry_waiting_events",
            "Events waiting for the Schema Registry (it failed to give their schema); none is "
            "dead-lettered for it.",
        )
        self._schema_failures = self._counter(
            "schema_registry_failures_total",
            "Schema fetches that failed for the registry's fault (unreachable, timeout, 5xx, "
            "401/403); the events wait and are retried.",
        )
        self._offsets_committed = self._counter(
            "offsets_committed_total", "Partition offsets advanced by commits."
        )
        self._dlq_failures = self._counter(
            "dlq_write_failures_total", "Dead-letter writes that failed (nothing committed)."
        )
        self._up = self._gauge("up", "1 while the process runs.")
        self._holding = self._gauge(
            "braze_holding",
            "1 for the cause while sends are held for a Braze or deployment failure, else 0.",
            ["cause"],
        )
        for cause in HoldCause:
            self._holding.labels(cause.value).set(0)
        self._probes = self._counter(
            "hold_probes_total", "Single requests sent to test Braze while holding.", ["result"]
        )
        self._already_settled = self._counter(
            "events_already_settled_total",
            "Events skipped on assignment: the commit metadata says an earlier owner settled them.",
            ["topic"],
        )
        self._target_rejections = self._counter(
            "target_rejections_total",
            "Intents dead-lettered without a request: Braze recently rejected their Canvas or "
            "campaign as a whole.",
            ["rule", "target"],
        )
        self._ready = self._gauge("ready", "1 when connected and assigned, else 0.")

    # --- Braze client protocol (structural; the client never imports this module) ---

    def request_done(
        self,
        endpoint: str,
        status: int | None,
        seconds: float,
        recipients: int,
        accepted: bool,
    ) -> None:
        """One HTTP attempt finished; `status` None means a transport error (no response);
        `accepted` means Braze's own success answer (a 2xx HTML page from a proxy is not)."""
        self._requests.labels(endpoint, status_class(status)).inc()
        self._latency.labels(endpoint).observe(seconds)
        if recipients <= 0:  # e.g. /sends/id/create: not a send
            return
        self._per_request.labels(endpoint).observe(recipients)
        if accepted:
            # Braze's success is final for these recipients, so counting here never double counts.
            self._recipients.labels(endpoint).inc(recipients)
            self._last_success.set(self._wall_clock())

    def retry_scheduled(self, endpoint: str, reason: str) -> None:
        self._retries.labels(endpoint, reason).inc()

    def rate_limit_wait(self, seconds: float) -> None:
        self._rl_waits.inc()
        self._rl_wait_s.inc(max(seconds, 0.0))

    def set_budget_share(self, share: float, requests_per_hour: float) -> None:
        self._budget_share.set(share)
        self._budget_rate.set(requests_per_hour)

    # --- pipeline ---

    # The pipeline counts events itself and hands the counts over once per loop turn: a counter's
    # `labels()` validates and locks on every call, which cost more than the rest of a skipped
    # event's handling (make bench).

    def event_consumed(self, topic: str, n: int = 1) -> None:
        self._consumed.labels(topic).inc(n)

    def event_matched(self, rule_id: str, n: int = 1) -> None:
        self._matched.labels(rule_id).inc(n)

    def event_skipped(self, rule_id: str, reason: str, n: int = 1) -> None:
        self._skipped.labels(rule_id, reason).inc(n)

    def dead_lettered(self, rule_id: str | None, reason: str) -> None:
        """Call once the dead-letter write is acknowledged."""
        self._dead_lettered.labels(rule_id or NO_RULE, reason).inc()

    def dlq_write_failed(self) -> None:
        self._dlq_failures.inc()

    def set_holding(self, cause: HoldCause | None) -> None:
        for each in HoldCause:
            self._holding.labels(each.value).set(1 if each is cause else 0)

    def hold_probe(self, ok: bool) -> None:
        self._probes.labels("ok" if ok else "failed").inc()

    def already_settled(self, topic: str) -> None:
        self._already_settled.labels(topic).inc()

    def target_rejected(self, rule_id: str, target_id: str) -> None:
        self._target_rejections.labels(rule_id, target_id).inc()

    def set_schema_waiting(self, events: int) -> None:
        self._schema_waiting.set(events)

    def schema_registry_failed(self) -> None:
        self._schema_failures.inc()

    def committed(self, partitions: int) -> None:
        """One acknowledged commit that advanced `partitions` partition offsets."""
        self._commits.inc()
        self._offsets_committed.inc(partitions)

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        self._lag.labels(topic, str(partition)).set(max(lag, 0))

    def set_lag_seconds(self, topic: str, partition: int, seconds: float) -> None:
        self._lag_s.labels(topic, str(partition)).set(max(seconds, 0.0))

    def set_committed_offset(self, topic: str, partition: int, offset: int) -> None:
        self._committed_offset.labels(topic, str(partition)).set(offset)

    def rules_loaded(self, rules_hash: str) -> None:
        """The rules now in use (at start and after each reload)."""
        if self._rules_hash is not None:
            self._rules_info.remove(self._rules_hash)
        self._rules_hash = rules_hash
        self._rules_info.labels(rules_hash).set(1)
        self._build.info(
            {"version": __version__, "python": platform.python_version(), "rules": rules_hash}
        )

    def rules_reload(self, ok: bool) -> None:
        self._reloads.labels("ok" if ok else "failed").inc()

    def forget_partitions(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Drop the series of revoked partitions, so another member's figure is not doubled."""
        for topic, partition in partitions:
            for gauge in (self._lag, self._lag_s, self._committed_offset):
                try:
                    gauge.remove(topic, str(partition))
                except KeyError:  # never reported: nothing to forget
                    continue

    def set_in_flight_events(self, n: int) -> None:
        self._in_flight_events.set(n)

    def set_in_flight_requests(self, n: int) -> None:
        self._in_flight_requests.set(n)

    def set_buffered(self, recipients: int, batches: int) -> None:
        self._buffered.set(recipients)
        self._pending_batches.set(batches)

    def set_paused_partitions(self, n: int) -> None:
        self._paused.set(n)

    def set_ready(self, ready: bool) -> None:
        self._ready.set(1 if ready else 0)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class Health:
    """Liveness (a heartbeat from the poll loop) and readiness, shared with the server threads."""

    def __init__(self, metrics: Metrics, max_silence_s: float, clock: Clock = time.monotonic):
        self._metrics = metrics
        self._max_silence_s = max_silence_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last_beat_s = clock()  # start-up counts as a beat: the loop has not run yet
        self._ready = False

    def heartbeat(self, now_s: float | None = None) -> None:
        """The poll loop is alive; `now_s` on the same clock as the one given here."""
        with self._lock:
            self._last_beat_s = self._clock() if now_s is None else now_s

    def set_ready(self, ready: bool) -> None:
        with self._lock:
            self._ready = ready
        self._metrics.set_ready(ready)

    def alive(self) -> bool:
        with self._lock:
            return self._clock() - self._last_beat_s <= self._max_silence_s

    def ready(self) -> bool:
        with self._lock:
            return self._ready


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, but at most `max_connections` of them."""

    daemon_threads = True
    request_queue_size = 128  # the listen backlog: a burst of connections is accepted, not stalled

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        max_connections: int,
    ) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_connections)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # busy: refuse rather than grow without bound
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def _handler_class(metrics: Metrics, health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = REQUEST_TIMEOUT_S

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, metrics.render(), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._probe(health.alive(), "alive", "event loop stalled")
            elif path == "/readyz":
                # A stalled loop is not ready either, whatever it last said.
                self._probe(health.ready() and health.alive(), "ready", "not ready")
            else:
                self._reply(404, b"not found\n", "text/plain; charset=utf-8")

        def _probe(self, ok: bool, yes: str, no: str) -> None:
            text = (yes if ok else no) + "\n"
            self._reply(200 if ok else 503, text.encode(), "text/plain; charset=utf-8")

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            # Probes and scrapes arrive every few seconds: keep them out of the service log.
            log.debug("metrics server: " + format, *args)

    return Handler


class MetricsServer:
    """Serves /metrics, /healthz and /readyz from a daemon thread."""

    def __init__(
        self,
        metrics: Metrics,
        host: str = "0.0.0.0",  # noqa: S104  # the kubelet and Prometheus reach the pod IP
        port: int = 9464,
        *,
        max_silence_s: float = 30.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.metrics = metrics
        self.health = Health(metrics, max_silence_s, clock)
        self._address = (host, port)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when 0 was asked for); only after `start()`."""
        if self._httpd is None:
            raise RuntimeError("metrics server not started")
        return int(self._httpd.server_address[1])

    def start(self) -> None:
        handler = _handler_class(self.metrics, self.health)
        self._httpd = _BoundedServer(self._address, handler, MAX_CONNECTIONS)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": _STOP_POLL_S},
            name="metrics-server",
            daemon=True,
        )
        self._thread.start()
        log.info("metrics on %s:%d (/metrics /healthz /readyz)", self._address[0], self.port)

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._httpd = None
        self._thread = None

    def heartbeat(self, now_s: float | None = None) -> None:
        self.health.heartbeat(now_s)

    def set_ready(self, ready: bool) -> None:
        self.health.set_ready(ready)
