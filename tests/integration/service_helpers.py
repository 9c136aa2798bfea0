"""Run the real service (`python -m consumer run`) as a child process against the test broker
and the Braze emulator, and read back what it did: accepted requests, dead letters, commits."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from consumer.emulator.control import EmulatorControl
from consumer.emulator.wire import RecordedRequestView
from tests.integration.kafka_helpers import create_topic, produce, unique_name

API_KEY = "test-key-0123456789"
REPO = Path(__file__).resolve().parents[2]

RULES_TEMPLATE = """\
rules:
  - id: welcome
    topics: [{topic}]
    when:
      type: user.signed_up
    canvas: {{id: canvas-welcome}}
    recipient:
      external_user_id: "{{{{ data.user_id }}}}"
    properties:
      seq: "{{{{ data.seq }}}}"
"""


CANVAS_SEND = "/canvas/trigger/send"


def rule_yaml(rule_id: str, topic: str, kind: str, canvas: str, user: str = "data.user_id") -> str:
    """One entry of a rules file's `rules:` list: events of type `kind` to `canvas`."""
    return (
        f"  - id: {rule_id}\n    topics: [{topic}]\n    when: {{type: {kind}}}\n"
        f"    canvas: {{id: {canvas}}}\n"
        f'    recipient:\n      external_user_id: "{{{{ {user} }}}}"\n'
    )


def accepted_users(
    requests: Iterable[RecordedRequestView], canvas_id: str | None = None
) -> Counter[str]:
    """external_user_id -> how many Canvas sends Braze accepted with it (its success answer,
    not any 2xx: a proxy's page is not a send)."""
    counts: Counter[str] = Counter()
    for request in requests:
        body = request.body
        ok = request.status is not None and 200 <= request.status < 300
        if not (ok and request.path == CANVAS_SEND and request.message == "success"):
            continue
        if not isinstance(body, dict) or canvas_id not in (None, body.get("canvas_id")):
            continue
        recipients = body.get("recipients")
        for recipient in recipients if isinstance(recipients, list) else []:
            if isinstance(recipient, dict):
                counts[str(recipient.get("external_user_id"))] += 1
    return counts


@dataclass
class Scenario:
    """One topic, one consumer group, one dead-letter topic, one rules file."""

    bootstrap: str
    topic: str
    group: str
    dlq_topic: str
    rules_path: Path
    workdir: Path
    emulator: EmulatorControl
    emulator_url: str

    def event(self, seq: int, user_id: str | None = None, kind: str = "user.signed_up") -> bytes:
        user = user_id if user_id is not None else f"u-{seq}"
        return json.dumps({"type": kind, "data": {"user_id": user, "seq": seq}}).encode()

    def produce_events(self, values: list[bytes], partition: int | None = None) -> None:
        keys = [f"k-{i}".encode() for i in range(len(values))]
        produce(self.bootstrap, self.topic, values, keys=keys, partition=partition)

    def config(self, **overrides: Any) -> Path:
        """The service's settings; `section__key=value` overrides one key."""
        settings: dict[str, Any] = {
            "kafka": {
                "bootstrap_servers": self.bootstrap,
                "group_id": self.group,
                "dead_letter_topic": self.dlq_topic,
                "session_timeout_ms": 10_000,
            },
            "braze": {
                "rest_endpoint": self.emulator_url,
                "max_attempts": 4,
                "max_retry_time_s": 30,
                "read_timeout_ms": 5_000,
            },
            "batching": {"max_recipients": 50, "max_wait_ms": 200},
            "rules": str(self.rules_path),
            "metrics": {"host": "127.0.0.1", "port": 0},
            "shutdown": {"drain_timeout_s": 15, "revoke_timeout_s": 10},
        }
        for dotted, value in overrides.items():
            section, key = dotted.split("__")
            settings.setdefault(section, {})[key] = value
        path = self.workdir / f"consumer-{unique_name('cfg')}.yaml"
        path.write_text(yaml.safe_dump(settings), encoding="utf-8")
        return path

    def start(
        self, config: Path, exit_when_idle_s: float | None = 2.0, api_key: str | None = API_KEY
    ) -> ServiceProcess:
        """`api_key` None: no BRAZE_API_KEY, so the service reads braze.api_key_file."""
        return ServiceProcess.start(config, self.workdir, exit_when_idle_s, api_key)

    def sent_users(self, canvas_id: str | None = None) -> Counter[str]:
        """external_user_id -> how many accepted requests carried it."""
        return accepted_users(self.emulator.requests(), canvas_id)

    def accepted_bodies(self) -> list[dict[str, Any]]:
        """Bodies of the Canvas sends the emulator accepted, in arrival order."""
        bodies = []
        for r in self.emulator.requests():
            ok = r.status is not None and 200 <= r.status < 300
            if ok and r.path == CANVAS_SEND and isinstance(r.body, dict):
                bodies.append(r.body)
        return bodies


def make_scenario(
    bootstrap: str, tmp_path: Path, emulator: EmulatorControl, url: str, partitions: int = 1
) -> Scenario:
    topic = unique_name("events")
    dlq = unique_name("dlq")
    create_topic(bootstrap, topic, partitions)
    create_topic(bootstrap, dlq, 1)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES_TEMPLATE.format(topic=topic), encoding="utf-8")
    group = unique_name("group")
    return Scenario(bootstrap, topic, group, dlq, rules, tmp_path, emulator, url)


class ServiceProcess:
    """`braze-consumer run` in a child process, its log in the test's tmp dir."""

    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path

    @classmethod
    def start(
        cls,
        config: Path,
        workdir: Path,
        exit_when_idle_s: float | None,
        api_key: str | None = API_KEY,
    ) -> ServiceProcess:
        log_path = workdir / f"service-{unique_name('log')}.log"
        summary = log_path.with_suffix(".json")
        args = [sys.executable, "-m", "consumer", "run", "--config", str(config)]
        args += ["--summary-json", str(summary)]
        if exit_when_idle_s is not None:
            args += ["--exit-when-idle", str(exit_when_idle_s)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("BRAZE_")}
        if api_key is not None:
            env["BRAZE_API_KEY"] = api_key
        with log_path.open("wb") as log:
            proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        return cls(proc, log_path)

    def wait(self, timeout_s: float) -> int:
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"service did not exit in {timeout_s}s:\n{self.log()}") from None

    def signal(self, signum: signal.Signals) -> None:
        self.proc.send_signal(signum)

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-6000:]

    def summary(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.log_path.with_suffix(".json").read_text())
        return data

    def ensure_stopped(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def header_map(
    headers: Iterator[tuple[str, bytes | None]] | tuple[tuple[str, bytes | None], ...],
) -> dict[str, str]:
    return {name: (value or b"").decode() for name, value in headers}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def scrape_total(port: int, name: str) -> float:
    """Sum of every sample of metric `name` on the service's /metrics (0 when unreachable)."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return 0.0
    total = 0.0
    for family in text_string_to_metric_families(text):
        total += sum(s.value for s in family.samples if s.name == name)
    return total


def run_cli(
    args: list[str], timeout_s: float = 120, *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """`braze-consumer ARGS` with the test key; fails the test on a non-zero exit (unless
    `check` is False: the caller asserts the exit code it expects)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRAZE_CONSUMER_")}
    env["BRAZE_API_KEY"] = API_KEY
    result = subprocess.run(
        [sys.executable, "-m", "consumer", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    return result
