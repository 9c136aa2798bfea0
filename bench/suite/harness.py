"""One service run's set-up: a fresh emulator process, the service's settings, the service.

The service runs with its defaults except what the run needs: the broker, a fresh group, the
emulator's address, the generated rules, metrics on port 0, and the run's Braze budget.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from bench.suite.procs import Child, Emulator, Exit, Sampler
from bench.suite.stats import Recorded, Steady, cpu_at, sent_ms_of
from bench.suite.workload import rules_yaml
from consumer.emulator.control import EmulatorControl
from consumer.emulator.wire import RecordedRequestView

API_KEY = "bench-suite-key"
# 100,000 requests/s: neither the emulator's nor the service's budget limits a run that sets it.
UNLIMITED_PER_HOUR = 360_000_000
IDLE_S = 1.0  # --exit-when-idle


@dataclass(frozen=True, slots=True)
class Bench:
    """What every run shares."""

    bootstrap: str
    workdir: Path
    service_cpu: int | None
    emulator_cpu: int | None
    budget_key: str  # the Braze setting that holds the request budget
    in_flight: int  # braze.max_in_flight for (d): the default, or 16 when the default is lower
    profile_dir: Path | None = None  # record each service run with py-spy (GIL samples) here


@dataclass(frozen=True, slots=True)
class Measured:
    """A service run's raw material."""

    exit: Exit
    peak_rss_mb: float | None
    records: list[Recorded]
    complete: bool  # the emulator's record still holds every request
    summary: dict[str, Any]  # the service's --summary-json
    service_samples: list[tuple[float, float]]
    emulator_samples: list[tuple[float, float]]

    def service_cpu_s(self, steady: Steady) -> float:
        """The service's CPU seconds between the steady part's first and last request."""
        return cpu_at(self.service_samples, steady.last_s) - cpu_at(
            self.service_samples, steady.first_s
        )

    def standin_cpu_s(self, steady: Steady) -> float:
        """The emulator's CPU seconds over the same interval."""
        return cpu_at(self.emulator_samples, steady.last_s) - cpu_at(
            self.emulator_samples, steady.first_s
        )


class Setup:
    """`with Setup(...) as setup`: the emulator is up; `start_service` starts the service; on
    the way out both are stopped, also when the run failed."""

    def __init__(
        self,
        bench: Bench,
        key: str,
        topic: str,
        braze: dict[str, Any],
        *,
        per_second: int | None = None,
        latency_ms: int = 0,
    ) -> None:
        self._bench = bench
        self._dir = bench.workdir / key
        self._dir.mkdir(parents=True, exist_ok=True)
        self._topic = topic
        self._braze = braze
        self._per_second = per_second
        self._latency_ms = latency_ms
        self._child: Child | None = None

    def __enter__(self) -> Setup:
        self.emulator = Emulator(
            API_KEY,
            self._dir / "emulator.log",
            cpu=self._bench.emulator_cpu,
            per_hour=UNLIMITED_PER_HOUR,
            per_second=self._per_second,
        )
        try:
            self.control = EmulatorControl(self.emulator.url, timeout_s=60.0)
            if self._latency_ms:
                self.control.set_faults(latency_ms=self._latency_ms)
        except BaseException:
            self.emulator.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if self._child is not None:
                self._child.stop()
            self.control.close()
        finally:
            self.emulator.stop()

    def start_service(self, *, exit_when_idle: bool) -> Child:
        config = self._write_config()
        args = [sys.executable, "-m", "consumer", "run", "--config", str(config)]
        args += ["--summary-json", str(self._dir / "summary.json")]
        if exit_when_idle:
            args += ["--exit-when-idle", str(IDLE_S)]
        if self._bench.profile_dir is not None:
            args = _profiled(args, self._bench.profile_dir / f"{self._dir.name}.txt")
        env = dict(os.environ, BRAZE_API_KEY=API_KEY)
        log = self._dir / "service.log"
        self._child = Child(args, cpu=self._bench.service_cpu, log_path=log, env=env)
        return self._child

    def run_service(self, timeout_s: float) -> Measured:
        """The service over the backlog until it is caught up and idle."""
        child = self.start_service(exit_when_idle=True)
        with Sampler({"service": child.pid, "emulator": self.emulator.child.pid}) as sampler:
            done = child.wait(timeout_s)
        return self.measured(done, sampler)

    def wait_for_recipients(self, count: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.control.stats().recipients_sent < count:
            if self._child is not None and not self._child.running():
                raise RuntimeError(f"the service exited early:\n{self._child.log_tail()}")
            if time.monotonic() > deadline:
                sent = self.control.stats().recipients_sent
                raise TimeoutError(f"{sent} of {count} recipients after {timeout_s:.0f} s")
            time.sleep(0.1)

    def measured(self, done: Exit, sampler: Sampler) -> Measured:
        if done.code != 0:
            tail = self._child.log_tail() if self._child else ""
            raise RuntimeError(f"the service exited {done.code}:\n{tail}")
        records = fetch_records(self.control)
        stats = self.control.stats()
        complete = bool(records) and records[0][0] == 1 and len(records) == stats.requests_total
        summary_path = self._dir / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        return Measured(
            exit=done,
            peak_rss_mb=sampler.peak_rss_mb("service"),
            records=[recorded for _, recorded in records],
            complete=complete,
            summary=summary,
            service_samples=sampler.samples["service"],
            emulator_samples=sampler.samples["emulator"],
        )

    def _write_config(self) -> Path:
        rules = self._dir / "rules.yaml"
        rules.write_text(rules_yaml(self._topic), encoding="utf-8")
        group = f"suite-{self._topic}-{uuid.uuid4().hex[:6]}"
        settings = {
            "kafka": {"bootstrap_servers": self._bench.bootstrap, "group_id": group},
            "braze": {"rest_endpoint": self.emulator.url, **self._braze},
            "rules": str(rules),
            "metrics": {"host": "127.0.0.1", "port": 0},
        }
        path = self._dir / "consumer.yaml"
        path.write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
        return path


def _profiled(args: list[str], out: Path) -> list[str]:
    """`args` under py-spy: raw stacks of the samples that hold the GIL, subprocesses too. The
    figures of a profiled run are not comparable with an unprofiled one."""
    py_spy = Path(sys.executable).with_name("py-spy")
    out.parent.mkdir(parents=True, exist_ok=True)
    record = [str(py_spy), "record", "--gil", "--format", "raw", "--rate", "250"]
    return [*record, "--output", str(out), "--", *args]


def fetch_records(control: EmulatorControl) -> list[tuple[int, Recorded]]:
    """Every recorded request, oldest first, with its seq (1 for a fresh emulator's first)."""
    found: list[tuple[int, Recorded]] = []
    since = 0
    while page := control.requests_page(since, limit=500).requests:
        found.extend((view.seq, _recorded(view)) for view in page)
        since = page[-1].seq
    return found


def _recorded(view: RecordedRequestView) -> Recorded:
    accepted = view.status is not None and 200 <= view.status <= 299
    return Recorded(view.time_epoch_s, view.recipients, accepted, sent_ms_of(view.body))
