"""Start-up failures print one clear line and exit 2; only runtime failures exit 1.

These run `braze-consumer run` as a process: no broker is needed, since each fails before the
consumer connects.
"""

from __future__ import annotations

import gc
import os
import socket
import subprocess
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from consumer.app import GC_YOUNG_THRESHOLD, load_all, settle_garbage_collector

REPO = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, **sections: object) -> Path:
    settings: dict[str, object] = {
        "kafka": {"bootstrap_servers": "127.0.0.1:1"},
        "braze": {"rest_endpoint": "http://127.0.0.1:1"},
        "rules": str(REPO / "config" / "rules.yaml"),
        "metrics": {"host": "127.0.0.1", "port": 0},
    }
    settings.update(sections)
    path = tmp_path / "consumer.yaml"
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return path


def _run(config: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRAZE_")}
    env["BRAZE_API_KEY"] = "startup-test-key-123"
    return subprocess.run(
        [sys.executable, "-m", "consumer", "run", "--config", str(config)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_unknown_librdkafka_property(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        kafka={"bootstrap_servers": "127.0.0.1:1", "client": {"no.such.property": 1}},
    )
    done = _run(config)
    assert done.returncode == 2
    assert 'cannot start: kafka client settings: No such configuration property: "no.such' in (
        done.stderr
    )
    assert "Traceback" not in done.stderr


def test_metrics_port_in_use(tmp_path: Path, busy_port: int) -> None:
    done = _run(_config(tmp_path, metrics={"host": "127.0.0.1", "port": busy_port}))
    assert done.returncode == 2
    assert f"cannot start: metrics port {busy_port}: Address already in use" in done.stderr
    assert "Traceback" not in done.stderr


def test_rules_folder_that_cannot_be_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Root reads any folder, so the refusal is simulated where the folder is listed.
    folder = tmp_path / "rules"
    folder.mkdir()

    def refuse(_self: Path) -> Iterator[Path]:
        raise PermissionError(13, "Permission denied", str(folder))

    monkeypatch.setattr(Path, "iterdir", refuse)
    monkeypatch.setenv("BRAZE_API_KEY", "startup-test-key-123")
    assert load_all(_config(tmp_path, rules=str(folder))) == 2
    err = capsys.readouterr().err
    assert f"{folder}: cannot read: Permission denied" in err
    assert "Traceback" not in err


def test_rules_file_over_rules_max_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules: []\n" + "# padding\n" * 200, encoding="utf-8")
    monkeypatch.setenv("BRAZE_API_KEY", "startup-test-key-123")
    config = _config(tmp_path, rules=str(rules), rules_max_bytes=1_024)
    assert load_all(config) == 2
    err = capsys.readouterr().err
    assert f"{rules}:" in err
    assert "Traceback" not in err


def test_the_collector_is_settled_once_set_up() -> None:
    before = gc.get_threshold()
    try:
        settle_garbage_collector()
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])
        assert gc.get_freeze_count() > 0  # start-up's objects are out of later collections
        assert gc.isenabled()
        ref = weakref.ref(_Node(None))  # garbage in a cycle: only the collector frees it
        assert ref() is not None
        keep: list[list[int]] = [[] for _ in range(3 * GC_YOUNG_THRESHOLD)]  # a young collection
        assert ref() is None  # a cycle still goes, without anybody calling gc.collect()
        del keep
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


class _Node:
    def __init__(self, other: object) -> None:
        self.me = self
        self.other = other
