"""`braze-consumer emulator` as a process: the listening line, the key rules, signals exit 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

KEY = "cli-key-5d1c"
PREFIX = "braze emulator listening on "


CLI = ["consumer", "emulator"]
MODULE = ["consumer.emulator"]  # `python -m consumer.emulator`: the same, without the service


def spawn(args: list[str], env_key: str | None, launcher: list[str] = CLI) -> subprocess.Popen[str]:
    env = {name: value for name, value in os.environ.items() if name != "BRAZE_API_KEY"}
    if env_key is not None:
        env["BRAZE_API_KEY"] = env_key
    return subprocess.Popen(
        [sys.executable, "-m", *launcher, "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:  # only ours, by handle, if a test failed half-way
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize(
    ("args", "env_key", "sig", "launcher"),
    [
        pytest.param(["--api-key", KEY], None, signal.SIGTERM, CLI, id="key flag, SIGTERM"),
        pytest.param([], KEY, signal.SIGINT, CLI, id="key from BRAZE_API_KEY, SIGINT"),
        pytest.param(["--api-key", KEY], None, signal.SIGTERM, MODULE, id="python -m module"),
    ],
)
def test_serves_until_signalled(
    processes: list[subprocess.Popen[str]],
    args: list[str],
    env_key: str | None,
    sig: signal.Signals,
    launcher: list[str],
) -> None:
    process = spawn([*args, "--requests-per-second", "5"], env_key, launcher)
    processes.append(process)
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith(PREFIX), line
    url = line[len(PREFIX) :].strip()
    assert not url.endswith(":0")
    response = httpx.post(
        f"{url}/canvas/trigger/send",
        json={"canvas_id": "c", "broadcast": True},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert (response.status_code, response.headers["x-ratelimit-limit"]) == (201, "5")
    process.send_signal(sig)
    out, err = process.communicate(timeout=10)
    assert process.returncode == 0
    assert KEY not in line + out + err


def test_refuses_to_start_without_a_key(processes: list[subprocess.Popen[str]]) -> None:
    process = spawn([], env_key=None)
    processes.append(process)
    out, err = process.communicate(timeout=10)
    assert process.returncode == 2
    assert "BRAZE_API_KEY" in err
    assert PREFIX not in out
