"""Metrics as Prometheus sees them: scraped over HTTP, parsed with prometheus_client's parser."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from consumer.braze.answers import HoldCause
from consumer.metrics import (
    LATENCY_BUCKETS_S,
    MAX_CONNECTIONS,
    RECIPIENT_BUCKETS,
    REQUEST_TIMEOUT_S,
    Metrics,
    MetricsServer,
    status_class,
)

CANVAS = "/canvas/trigger/send"
# Label names that would carry a user identifier (or worse) into a time series.
FORBIDDEN_LABELS = {
    "user",
    "user_id",
    "external_user_id",
    "email",
    "alias",
    "alias_name",
    "user_alias",
    "phone",
    "key",
    "api_key",
    "recipient",
}


class FakeClock:
    def __init__(self, now_s: float = 1_000.0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(wall_clock=lambda: 1_700_000_000.0)


@pytest.fixture
def server(metrics: Metrics, clock: FakeClock) -> Iterator[MetricsServer]:
    srv = MetricsServer(metrics, host="127.0.0.1", port=0, max_silence_s=10.0, clock=clock)
    srv.start()
    yield srv
    srv.stop()


def get(server: MetricsServer, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{server.port}{path}", timeout=5.0)


def scrape(server: MetricsServer) -> dict[str, tuple[str, list[Sample]]]:
    """Family name -> (type, samples), from the live endpoint."""
    resp = get(server, "/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    return {f.name: (f.type, f.samples) for f in text_string_to_metric_families(resp.text)}


def value(families: dict[str, tuple[str, list[Sample]]], sample: str, **labels: str) -> float:
    for _, samples in families.values():
        for s in samples:
            if s.name == sample and s.labels == labels:
                return s.value
    raise AssertionError(f"no sample {sample}{labels}")


def test_status_classes() -> None:
    got = [status_class(s) for s in (None, 200, 201, 400, 404, 429, 500, 503)]
    assert got == ["error", "2xx", "2xx", "4xx", "4xx", "429", "5xx", "5xx"]


EXPECTED_TYPES = {
    "braze_consumer_events_consumed": "counter",
    "braze_consumer_braze_holding": "gauge",
    "braze_consumer_hold_probes": "counter",
    "braze_consumer_events_already_settled": "counter",
    "braze_consumer_target_rejections": "counter",
    "braze_consumer_events_matched": "counter",
    "braze_consumer_events_skipped": "counter",
    "braze_consumer_events_dead_lettered": "counter",
    "braze_consumer_recipients_sent": "counter",
    "braze_consumer_requests": "counter",
    "braze_consumer_request_duration_seconds": "histogram",
    "braze_consumer_recipients_per_request": "histogram",
    "braze_consumer_retries": "counter",
    "braze_consumer_rate_limit_waits": "counter",
    "braze_consumer_rate_limit_wait_seconds": "counter",
    "braze_consumer_in_flight_events": "gauge",
    "braze_consumer_in_flight_requests": "gauge",
    "braze_consumer_lag_messages": "gauge",
    "braze_consumer_last_success_timestamp_seconds": "gauge",
    "braze_consumer_buffered_recipients": "gauge",
    "braze_consumer_pending_batches": "gauge",
    "braze_consumer_paused_partitions": "gauge",
    "braze_consumer_commits": "counter",
    "braze_consumer_offsets_committed": "counter",
    "braze_consumer_dlq_write_failures": "counter",
    "braze_consumer_up": "gauge",
    "braze_consumer_ready": "gauge",
    "braze_consumer_build_info": "gauge",  # an Info is exposed as a gauge in the text format
}


def exercise(m: Metrics) -> None:
    """Touch every labelled series once, so each family has samples."""
    m.event_consumed("shop.orders")
    m.event_matched("order-shipped")
    m.event_skipped("order-shipped", "max_event_age")
    m.dead_lettered(None, "invalid_json")
    m.request_done(CANVAS, 201, 0.12, 50, True)
    m.retry_scheduled(CANVAS, "5xx")
    m.rate_limit_wait(2.5)
    m.set_lag("shop.orders", 3, 42)
    m.set_holding(HoldCause.AUTH)
    m.hold_probe(ok=False)
    m.already_settled("shop.orders")
    m.target_rejected("order-shipped", "canvas-1")


def test_every_family_has_its_name_and_type(metrics: Metrics, server: MetricsServer) -> None:
    exercise(metrics)
    families = scrape(server)
    got = {name: kind for name, (kind, _) in families.items() if name in EXPECTED_TYPES}
    assert got == EXPECTED_TYPES
    assert all(name.startswith("braze_consumer_") for name in families)


def test_counters_end_in_total(metrics: Metrics, server: MetricsServer) -> None:
    exercise(metrics)
    for kind, samples in scrape(server).values():
        if kind == "counter":
            names = {s.name for s in samples if not s.name.endswith("_created")}
            assert all(n.endswith("_total") for n in names), names


def test_no_user_identifier_in_label_names(metrics: Metrics, server: MetricsServer) -> None:
    exercise(metrics)
    label_names = {k for _, samples in scrape(server).values() for s in samples for k in s.labels}
    assert not label_names & FORBIDDEN_LABELS
    assert label_names <= {"topic", "partition", "rule", "reason", "endpoint", "status_class"} | {
        "le",
        "version",
        "python",
        "cause",  # why sends are held
        "result",  # of a hold probe
        "target",  # a Canvas or campaign id from the rules, never a user
    }


@pytest.mark.parametrize(
    ("status", "accepted", "recipients", "want_class", "want_sent", "want_success"),
    [
        pytest.param(201, True, 50, "2xx", 50.0, True, id="success counts recipients and time"),
        pytest.param(200, False, 50, "2xx", None, False, id="a 2xx that is not Braze's answer"),
        pytest.param(400, False, 50, "4xx", None, False, id="4xx sends nothing"),
        pytest.param(429, False, 7, "429", None, False, id="429 is its own class"),
        pytest.param(503, False, 7, "5xx", None, False, id="5xx sends nothing"),
        pytest.param(None, False, 7, "error", None, False, id="transport error"),
        pytest.param(201, True, 0, "2xx", None, False, id="send_id create is not a send"),
    ],
)
def test_request_done(
    metrics: Metrics,
    server: MetricsServer,
    status: int | None,
    accepted: bool,
    recipients: int,
    want_class: str,
    want_sent: float | None,
    want_success: bool,
) -> None:
    metrics.request_done(CANVAS, status, 0.25, recipients, accepted)
    f = scrape(server)
    assert value(f, "braze_consumer_requests_total", endpoint=CANVAS, status_class=want_class) == 1
    assert value(f, "braze_consumer_request_duration_seconds_sum", endpoint=CANVAS) == 0.25
    sent = [s.value for s in f["braze_consumer_recipients_sent"][1] if s.name.endswith("_total")]
    assert sent == ([] if want_sent is None else [want_sent])
    success = value(f, "braze_consumer_last_success_timestamp_seconds")
    assert success == (1_700_000_000.0 if want_success else 0.0)


def test_histogram_buckets(metrics: Metrics, server: MetricsServer) -> None:
    metrics.request_done(CANVAS, 201, 0.12, 49, True)
    f = scrape(server)
    latency = {
        s.labels["le"]: s.value
        for s in f["braze_consumer_request_duration_seconds"][1]
        if s.name.endswith("_bucket")
    }
    assert [float(le) for le in latency if le != "+Inf"] == list(LATENCY_BUCKETS_S)
    assert (latency["0.1"], latency["0.2"]) == (0, 1)
    per_req = {
        s.labels["le"]: s.value
        for s in f["braze_consumer_recipients_per_request"][1]
        if s.name.endswith("_bucket")
    }
    assert [float(le) for le in per_req if le != "+Inf"] == [float(b) for b in RECIPIENT_BUCKETS]
    assert (per_req["45.0"], per_req["49.0"]) == (0, 1)


Call = Callable[[Metrics], None]


@pytest.mark.parametrize(
    ("calls", "sample", "labels", "want"),
    [
        pytest.param(
            [lambda m: m.event_consumed("a"), lambda m: m.event_consumed("a")],
            "braze_consumer_events_consumed_total",
            {"topic": "a"},
            2.0,
            id="consumed by topic",
        ),
        pytest.param(
            [lambda m: m.dead_lettered(None, "invalid_json")],
            "braze_consumer_events_dead_lettered_total",
            {"rule": "-", "reason": "invalid_json"},
            1.0,
            id="dead letter without a rule",
        ),
        pytest.param(
            [lambda m: m.dead_lettered("r1", "braze_rejected")],
            "braze_consumer_events_dead_lettered_total",
            {"rule": "r1", "reason": "braze_rejected"},
            1.0,
            id="dead letter by rule",
        ),
        pytest.param(
            [
                lambda m: m.retry_scheduled(CANVAS, "429"),
                lambda m: m.retry_scheduled(CANVAS, "429"),
            ],
            "braze_consumer_retries_total",
            {"endpoint": CANVAS, "reason": "429"},
            2.0,
            id="retries by endpoint and reason",
        ),
        pytest.param(
            [lambda m: m.rate_limit_wait(1.5), lambda m: m.rate_limit_wait(2.0)],
            "braze_consumer_rate_limit_wait_seconds_total",
            {},
            3.5,
            id="rate-limit wait seconds add up",
        ),
        pytest.param(
            [lambda m: m.committed(3), lambda m: m.committed(2)],
            "braze_consumer_offsets_committed_total",
            {},
            5.0,
            id="offsets committed",
        ),
        pytest.param(
            [lambda m: m.committed(3), lambda m: m.committed(2)],
            "braze_consumer_commits_total",
            {},
            2.0,
            id="commits",
        ),
        pytest.param(
            [lambda m: m.set_buffered(120, 4), lambda m: m.set_buffered(80, 3)],
            "braze_consumer_pending_batches",
            {},
            3.0,
            id="gauges keep the last value",
        ),
        pytest.param(
            [lambda m: m.set_lag("a", 1, -4)],
            "braze_consumer_lag_messages",
            {"topic": "a", "partition": "1"},
            0.0,
            id="lag never negative",
        ),
    ],
)
def test_pipeline_methods(
    metrics: Metrics,
    server: MetricsServer,
    calls: list[Call],
    sample: str,
    labels: dict[str, str],
    want: float,
) -> None:
    for call in calls:
        call(metrics)
    assert value(scrape(server), sample, **labels) == want


def test_forget_partitions_removes_lag_series(metrics: Metrics, server: MetricsServer) -> None:
    for partition in range(3):
        metrics.set_lag("a", partition, 10 * partition)
    metrics.forget_partitions([("a", 0), ("a", 2), ("never-seen", 9)])
    lag = scrape(server)["braze_consumer_lag_messages"][1]
    assert [(s.labels["partition"], s.value) for s in lag] == [("1", 10.0)]


def test_two_instances_do_not_collide() -> None:
    first, second = Metrics(), Metrics()
    first.event_consumed("a")
    assert b'braze_consumer_events_consumed_total{topic="a"} 1.0' in first.render()
    assert b"braze_consumer_events_consumed_total{" not in second.render()


def test_healthz_follows_the_heartbeat(server: MetricsServer, clock: FakeClock) -> None:
    assert get(server, "/healthz").status_code == 200  # start-up counts as a beat
    clock.now_s += 10.5
    assert get(server, "/healthz").status_code == 503
    server.heartbeat(clock.now_s)
    assert get(server, "/healthz").status_code == 200
    clock.now_s += 9.0
    server.heartbeat()  # default: the injected clock
    clock.now_s += 9.0
    assert get(server, "/healthz").status_code == 200


def test_readyz_transitions(server: MetricsServer, clock: FakeClock) -> None:
    f = scrape(server)
    assert get(server, "/readyz").status_code == 503
    assert value(f, "braze_consumer_ready") == 0
    server.set_ready(True)
    assert get(server, "/readyz").status_code == 200
    assert value(scrape(server), "braze_consumer_ready") == 1
    clock.now_s += 11.0  # a stalled loop is not ready, whatever it said
    assert get(server, "/readyz").status_code == 503
    server.heartbeat()
    server.set_ready(False)
    assert get(server, "/readyz").status_code == 503
    assert value(scrape(server), "braze_consumer_ready") == 0


def test_unknown_path_is_404(server: MetricsServer) -> None:
    assert get(server, "/nope").status_code == 404


def test_port_before_start_is_an_error(metrics: Metrics) -> None:
    with pytest.raises(RuntimeError, match="not started"):
        _ = MetricsServer(metrics, host="127.0.0.1", port=0).port


def test_stop_frees_the_port(metrics: Metrics) -> None:
    srv = MetricsServer(metrics, host="127.0.0.1", port=0)
    srv.start()
    port = srv.port
    srv.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0)


def test_holding_gauge_names_one_cause_at_a_time(metrics: Metrics, server: MetricsServer) -> None:
    causes = [c.value for c in HoldCause]
    f = scrape(server)
    assert [value(f, "braze_consumer_braze_holding", cause=c) for c in causes] == [0.0] * 4
    metrics.set_holding(HoldCause.AUTH)
    f = scrape(server)
    held = {c: value(f, "braze_consumer_braze_holding", cause=c) for c in causes}
    assert held == {"outage": 0.0, "auth": 1.0, "rate_limit": 0.0, "unexpected_response": 0.0}
    metrics.set_holding(None)
    f = scrape(server)
    assert [value(f, "braze_consumer_braze_holding", cause=c) for c in causes] == [0.0] * 4


def test_idle_connections_neither_pile_up_threads_nor_block_probes(
    server: MetricsServer,
) -> None:
    before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(300)]
    try:
        time.sleep(0.3)
        assert threading.active_count() - before <= MAX_CONNECTIONS
        deadline = time.monotonic() + REQUEST_TIMEOUT_S + 5.0
        while time.monotonic() < deadline:  # the idle ones time out and free their threads
            try:
                if get(server, "/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise AssertionError("/healthz never answered while idle connections were open")
    finally:
        for sock in idle:
            sock.close()
