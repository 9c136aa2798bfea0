"""`--log-format json` with the broker unreachable: every line one JSON object, librdkafka's own
lines among them (not as raw `%3|...` text), each failure once and repeats counted, not flooded.

Needs no broker: the service is pointed at 127.0.0.1:1, where nothing listens.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
API_KEY = "json-logs-key-0123456789"
RUN_S = 8.0


def _config(tmp_path: Path) -> Path:
    settings = {
        "kafka": {"bootstrap_servers": "127.0.0.1:1"},
        "braze": {"rest_endpoint": "http://127.0.0.1:1"},
        "rules": str(REPO / "config" / "rules.yaml"),
        "metrics": {"host": "127.0.0.1", "port": 0},
    }
    path = tmp_path / "consumer.yaml"
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return path


def _objects(text: str, stream: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        assert not line.startswith("%"), f"raw librdkafka line on {stream}: {line}"
        parsed = json.loads(line)
        assert isinstance(parsed, dict), line
        assert {"time", "level", "logger", "message"} <= parsed.keys(), line
        out.append(parsed)
    return out


def test_json_lines_with_the_broker_unreachable(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRAZE_")}
    env["BRAZE_API_KEY"] = API_KEY
    args = [sys.executable, "-m", "consumer", "run", "--config", str(_config(tmp_path))]
    proc = subprocess.Popen(
        [*args, "--log-format", "json"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(RUN_S)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stdout, stderr = out.decode("utf-8"), err.decode("utf-8")
    assert proc.returncode == 0, stderr[-4000:]
    lines = _objects(stdout, "stdout") + _objects(stderr, "stderr")
    messages = [f"{o['level']} {o['logger']}: {o['message']}" for o in lines]
    report = "\n".join(messages)

    librdkafka = [o for o in lines if o["logger"] == "librdkafka"]
    assert any("FAIL" in o["message"] and "Connection refused" in o["message"] for o in librdkafka)
    assert any("(repeated" in o["message"] for o in librdkafka), report
    # Each failure once: librdkafka's line, not error_cb's copy of it.
    assert not any(o["message"].startswith("kafka client error: 127.0.0.1:1") for o in lines)
    assert len(lines) < 40, report
    assert "received SIGTERM: draining" in report
    assert API_KEY not in stdout + stderr
