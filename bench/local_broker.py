"""The benchmarks' Kafka broker: KAFKA_BOOTSTRAP_SERVERS when set, else scripts/kafka-local."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def local_broker(port: int, name: str) -> Iterator[str]:
    """Yields a bootstrap address; a broker started here (on `port`, state in .cache/`name`) is
    stopped on the way out, also when the benchmark fails."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    env = dict(os.environ, KAFKA_PORT=str(port), KAFKA_OWNER_PID=str(os.getpid()))
    env["KAFKA_LOCAL_DIR"] = str(REPO / ".cache" / name)
    script = REPO / "scripts" / "kafka-local"
    out = subprocess.run([script, "start"], env=env, check=True, capture_output=True, text=True)
    try:
        yield out.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([script, "stop"], env=env, check=False, capture_output=True)
