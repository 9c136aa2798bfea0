"""CPU per Braze request on the service's side: `BrazeClient.send_encoded` with 50 recipients,
one thread, against the emulator (its own process, on the other core), and the connection pool's
`post` of the same bytes alone. What (b) of `make bench` pays per request in its send workers.

    python -m bench.request_cpu [--requests 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from bench.suite.procs import Emulator, cpu_plan
from consumer.braze.client import BrazeClient
from consumer.braze.pool import ConnectionPool
from consumer.intents import BatchKey, Endpoint
from consumer.metrics import Metrics
from consumer.settings import BrazeSettings

API_KEY = "bench-request-cpu-key-0123456789"
KEY = BatchKey(Endpoint.CANVAS_SEND, "canvas-bench")


def recipients(count: int = 50) -> list[bytes]:
    """Recipients like make bench's: an id and six properties."""
    return [
        orjson.dumps(
            {
                "external_user_id": f"u-{n:07d}",
                "context": {
                    "order_id": f"o-{n:09d}",
                    "total": 12.5,
                    "currency": "EUR",
                    "sent_ms": 1_700_000_000_000,
                    "first_sku": "sku-00001",
                    "carrier": "DHL",
                },
            }
        )
        for n in range(count)
    ]


def cpu_per_call_us(call: Callable[[], object], count: int, repeat: int) -> float:
    """Best of `repeat` rounds: process CPU per call, in µs (after a warm-up round)."""
    for _ in range(50):
        call()
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        for _ in range(count):
            call()
        best = min(best, (time.process_time() - started) / count * 1e6)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    mine, theirs = cpu_plan()
    if mine is not None:
        os.sched_setaffinity(0, {mine})
    with tempfile.TemporaryDirectory(prefix="bench-request-") as tmp:
        emulator = Emulator(API_KEY, Path(tmp) / "emulator.log", cpu=theirs, per_hour=360_000_000)
        try:
            settings = BrazeSettings(rest_endpoint=emulator.url, requests_per_hour=360_000_000)
            client = BrazeClient(settings.client_config(), API_KEY, observer=Metrics())
            encoded = recipients()
            body = KEY.request_content(encoded)
            pool = ConnectionPool(
                emulator.url,
                max_connections=1,
                connect_timeout_s=5,
                read_timeout_s=5,
                write_timeout_s=5,
                pool_timeout_s=5,
            )
            headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
            whole = cpu_per_call_us(
                lambda: client.send_encoded(KEY, encoded), args.requests, args.repeat
            )
            post = cpu_per_call_us(
                lambda: pool.post(Endpoint.CANVAS_SEND.value, body, headers),
                args.requests,
                args.repeat,
            )
            outcome = client.send_encoded(KEY, encoded)[0].outcome
            client.close()
            pool.close()
        finally:
            emulator.stop()
    print(f"{len(body):,}-byte request of 50 recipients, one thread, best of {args.repeat}:")
    print(f"  BrazeClient.send_encoded  {whole:6.0f} µs of CPU per request ({outcome})")
    print(f"  ConnectionPool.post alone {post:6.0f} µs")
    print(f"  per recipient             {whole / 50:6.1f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
