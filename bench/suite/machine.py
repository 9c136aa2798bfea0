"""The machine a suite run measured on: CPU, RAM, Python, Kafka client, date, commit."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import confluent_kafka

REPO = Path(__file__).resolve().parents[2]


def machine_facts() -> list[tuple[str, str]]:
    librdkafka, _ = confluent_kafka.libversion()
    client = confluent_kafka.version()  # a string here; (string, int) in older releases
    client_text = str(client[0] if isinstance(client, tuple) else client)
    return [
        ("CPU", cpu_summary(_read("/proc/cpuinfo"))),
        ("CPUs this process may use", str(len(os.sched_getaffinity(0)))),
        ("RAM", ram_summary(_read("/proc/meminfo"))),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("Python", platform.python_version()),
        ("confluent-kafka", f"{client_text} (librdkafka {librdkafka})"),
        ("date", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("git commit", git_commit()),
        ("load average (1 min) at the start", f"{os.getloadavg()[0]:.1f}"),
    ]


def cpu_summary(cpuinfo: str) -> str:
    """ "AMD EPYC x 2" from /proc/cpuinfo (model name of the first CPU, count of processors)."""
    names = [
        line.split(":", 1)[1].strip()
        for line in cpuinfo.splitlines()
        if line.startswith("model name")
    ]
    count = sum(1 for line in cpuinfo.splitlines() if line.startswith("processor"))
    if not names and not count:
        return "unknown"
    return f"{names[0] if names else 'unknown model'} x {count}"


def ram_summary(meminfo: str) -> str:
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "unknown"


def git_commit() -> str:
    """HEAD and whether the working tree differs (read-only: no index refresh)."""
    try:
        head = _git("rev-parse", "--short=12", "HEAD")
        dirty = _git("--no-optional-locks", "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head} (working tree modified)" if dirty else head


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=REPO, check=True, capture_output=True, text=True, timeout=10
    )
    return done.stdout.strip()


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError:
        return ""
