"""The suite's child processes: pinned to a CPU, sampled from /proc, reaped with their rusage.

`os.wait4` on a child's pid returns its rusage: the CPU seconds of all its threads over its
whole life, exactly. Not its peak RSS: Linux carries the spawning process's high-water mark into
the child's `ru_maxrss` at exec (Python spawns with vfork, so the old address space is ours), so
a child of a 300 MB parent reports at least 300 MB. Peak RSS is the child's own VmHWM from
/proc/<pid>/status instead, read by a sampler thread every 50 ms with its CPU seconds (from
/proc/<pid>/stat, so CPU over part of a run, between two Braze requests, can be read off too).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.suite.stats import proc_stat_cpu_s, vm_hwm_kb

REPO = Path(__file__).resolve().parents[2]
TICKS_PER_S = os.sysconf("SC_CLK_TCK")
_LISTENING = re.compile(r"listening on (\S+)")


def cpu_plan() -> tuple[int | None, int | None]:
    """(the measured process's CPU, the stand-in's CPU): two different cores when there are two,
    so the emulator never competes with what it measures; None: no pinning (one core)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return cpus[0], cpus[1]


def machine_busy_share(window_s: float) -> float:
    """The share of all CPUs busy over the next `window_s` (from /proc/stat; 0.0 if unreadable)."""

    def totals() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]), idle

    try:
        total0, idle0 = totals()
        time.sleep(window_s)
        total1, idle1 = totals()
    except (OSError, ValueError, IndexError):
        return 0.0
    spent = total1 - total0
    return 0.0 if spent <= 0 else 1.0 - (idle1 - idle0) / spent


def wait_until_quiet(
    *, below: float = 0.10, window_s: float = 0.5, at_most_s: float = 20.0
) -> float:
    """Wait until the machine is nearly idle (the broker done with what was just produced: it
    flushes, collects and compacts for a few seconds after a large backlog); returns the seconds
    waited. A busy neighbour on the other CPU slows the measured process's every instruction, so
    what runs after a backlog would otherwise pay for the broker's housekeeping."""
    started = time.monotonic()
    while time.monotonic() - started < at_most_s:
        if machine_busy_share(window_s) < below:
            break
    return time.monotonic() - started


def read_peak_rss_kb(pid: int) -> int | None:
    try:
        return vm_hwm_kb(Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return None


def read_cpu_s(pid: int) -> float | None:
    try:
        return proc_stat_cpu_s(Path(f"/proc/{pid}/stat").read_text(), TICKS_PER_S)
    except (OSError, IndexError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class Exit:
    code: int
    cpu_s: float  # user + system, all threads, whole life
    started_s: float  # epoch seconds
    ended_s: float


class Child:
    """A subprocess with its output in `log_path`; `wait` or `stop` reaps it exactly once."""

    def __init__(
        self, args: list[str], *, cpu: int | None, log_path: Path, env: dict[str, str]
    ) -> None:
        self.log_path = log_path
        self.started_s = time.time()
        with log_path.open("wb") as out:
            self._proc = subprocess.Popen(
                args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        self._exit: Exit | None = None
        if cpu is not None:
            with contextlib.suppress(OSError):  # it already exited: wait() says how
                os.sched_setaffinity(self._proc.pid, {cpu})

    @property
    def pid(self) -> int:
        return self._proc.pid

    def running(self) -> bool:
        return self._exit is None and self._reap(block=False) is None

    def wait(self, timeout_s: float) -> Exit:
        """Its exit; past `timeout_s` it is stopped (SIGTERM, then SIGKILL) and that is said."""
        deadline = time.monotonic() + timeout_s
        while (done := self._reap(block=False)) is None:
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"still running after {timeout_s:.0f} s; stopped")
            time.sleep(0.02)
        return done

    def stop(self, grace_s: float = 30.0) -> Exit:
        if self._exit is not None:
            return self._exit
        self._signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while (done := self._reap(block=False)) is None:
            if time.monotonic() > deadline:
                self._signal(signal.SIGKILL)
                killed = self._reap(block=True)
                assert killed is not None  # a blocking wait4 returns the child
                return killed
            time.sleep(0.02)
        return done

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _signal(self, signum: int) -> None:
        if self._exit is None:  # never signal a reaped pid: it may belong to another process
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, signum)

    def _reap(self, *, block: bool) -> Exit | None:
        if self._exit is not None:
            return self._exit
        pid, status, usage = os.wait4(self._proc.pid, 0 if block else os.WNOHANG)
        if pid == 0:
            return None
        code = os.waitstatus_to_exitcode(status)
        self._proc.returncode = code  # reaped here: Popen must not wait for it again
        self._exit = Exit(
            code=code,
            cpu_s=usage.ru_utime + usage.ru_stime,
            started_s=self.started_s,
            ended_s=time.time(),
        )
        return self._exit


class Sampler:
    """Reads the CPU seconds of some pids every `interval_s` on a thread, as (epoch s, CPU s),
    and keeps each one's peak RSS (VmHWM, a high-water mark: a late reading loses nothing but
    growth in the last interval)."""

    def __init__(self, pids: dict[str, int], interval_s: float = 0.05) -> None:
        self._pids = pids
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.samples: dict[str, list[tuple[float, float]]] = {name: [] for name in pids}
        self._peak_kb: dict[str, int] = dict.fromkeys(pids, 0)
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def peak_rss_mb(self, name: str) -> float | None:
        return self._peak_kb[name] / 1024 if self._peak_kb[name] else None

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            now = time.time()
            for name, pid in self._pids.items():
                cpu = read_cpu_s(pid)
                if cpu is not None:
                    self.samples[name].append((now, cpu))
                peak_kb = read_peak_rss_kb(pid)
                if peak_kb:
                    self._peak_kb[name] = max(self._peak_kb[name], peak_kb)
            if self._stop.wait(self._interval_s):
                return


class Emulator:
    """The Braze stand-in as its own process (`python -m consumer.emulator`), on its own core."""

    def __init__(
        self,
        api_key: str,
        log_path: Path,
        *,
        cpu: int | None,
        per_hour: int,
        per_second: int | None = None,
    ) -> None:
        args = [sys.executable, "-m", *emulator_module(), "--port", "0"]
        args += ["--requests-per-hour", str(per_hour)]
        if per_second is not None:
            args += ["--requests-per-second", str(per_second)]
        env = dict(os.environ, BRAZE_API_KEY=api_key)  # not on the command line
        self.child = Child(args, cpu=cpu, log_path=log_path, env=env)
        self.url = self._wait_for_url(30.0)

    def cpu_s(self) -> float:
        return read_cpu_s(self.child.pid) or 0.0

    def stop(self) -> None:
        self.child.stop(grace_s=10.0)

    def _wait_for_url(self, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = _LISTENING.search(self.child.log_path.read_text(errors="replace"))
            if found:
                return found.group(1)
            if not self.child.running():
                raise RuntimeError(f"emulator exited:\n{self.child.log_tail()}")
            time.sleep(0.05)
        self.child.stop()
        raise TimeoutError(f"emulator did not start:\n{self.child.log_tail()}")


def emulator_module() -> list[str]:
    """`consumer.emulator` when it runs as a module, else the `emulator` command of the CLI."""
    if importlib.util.find_spec("consumer.emulator.__main__") is not None:
        return ["consumer.emulator"]
    return ["consumer", "emulator"]
