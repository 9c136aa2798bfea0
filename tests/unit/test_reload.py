"""Rules hot reload: the watcher notices edits and ConfigMap symlink swaps, refuses bad tables."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from consumer.metrics import Metrics
from consumer.reload import RulesWatcher, load_versioned

RULE = """\
rules:
  - id: {rule_id}
    topics: [{topic}]
    when: {{type: x}}
    canvas: {{id: c-1}}
    recipient:
      external_user_id: "{{{{ user }}}}"
"""


def _watcher(path: Path, metrics: Metrics) -> RulesWatcher:
    return RulesWatcher(path, 1_048_576, load_versioned(path, 1_048_576), metrics, interval_s=2.0)


def _sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(f"braze_consumer_{name}", labels)
    return 0.0 if value is None else value


def test_an_edit_is_taken_after_the_interval(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(RULE.format(rule_id="a", topic="t"), encoding="utf-8")
    metrics = Metrics()
    watcher = _watcher(path, metrics)
    assert watcher.check(0.0) is None  # nothing changed
    path.write_text(RULE.format(rule_id="b", topic="t"), encoding="utf-8")
    assert watcher.check(1.0) is None  # not looked at yet
    loaded = watcher.check(2.0)
    assert loaded is not None
    assert loaded.table.rule_ids == ("b",)
    assert _sample(metrics, "rules_reloads_total", result="ok") == 1
    assert _sample(metrics, "rules_info", hash=loaded.version) == 1


def test_an_invalid_change_is_refused_and_the_old_rules_stay(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(RULE.format(rule_id="a", topic="t"), encoding="utf-8")
    metrics = Metrics()
    watcher = _watcher(path, metrics)
    path.write_text("rules:\n  - id: broken\n    topics: []\n", encoding="utf-8")
    assert watcher.check(10.0) is None
    assert _sample(metrics, "rules_reloads_total", result="failed") == 1
    assert "rules change refused" in caplog.text
    assert "Traceback" not in caplog.text
    assert watcher.check(20.0) is None  # the same bad files are not reported again
    assert _sample(metrics, "rules_reloads_total", result="failed") == 1


def test_a_touched_file_with_the_same_content_is_no_reload(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(RULE.format(rule_id="a", topic="t"), encoding="utf-8")
    metrics = Metrics()
    watcher = _watcher(path, metrics)
    os.utime(path, ns=(1, 1))
    assert watcher.check(10.0) is None
    assert _sample(metrics, "rules_reloads_total", result="ok") == 0


def test_a_configmap_symlink_swap_is_noticed(tmp_path: Path) -> None:
    # A ConfigMap volume: rules.yaml -> ..data/rules.yaml, ..data -> ..<timestamp>; an update
    # writes a new ..<timestamp> folder and swaps ..data in one rename.
    volume = tmp_path / "rules"
    volume.mkdir()
    first = volume / "..2026_11_23_1"
    first.mkdir()
    (first / "rules.yaml").write_text(RULE.format(rule_id="a", topic="t"), encoding="utf-8")
    (volume / "..data").symlink_to(first.name)
    (volume / "rules.yaml").symlink_to("..data/rules.yaml")
    metrics = Metrics()
    watcher = _watcher(volume, metrics)
    second = volume / "..2026_11_23_2"
    second.mkdir()
    (second / "rules.yaml").write_text(RULE.format(rule_id="a", topic="u"), encoding="utf-8")
    (volume / "..data_tmp").symlink_to(second.name)
    os.replace(volume / "..data_tmp", volume / "..data")
    loaded = watcher.check(10.0)
    assert loaded is not None
    assert loaded.table.topics == frozenset({"u"})


def test_the_version_is_a_hash_of_the_bytes_that_were_parsed(tmp_path: Path) -> None:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "a.yaml").write_text(RULE.format(rule_id="a", topic="t"), encoding="utf-8")
    (folder / "b.yaml").write_text(RULE.format(rule_id="b", topic="u"), encoding="utf-8")
    digest = hashlib.sha256()
    for name in ("a.yaml", "b.yaml"):
        digest.update(name.encode() + b"\0" + (folder / name).read_bytes() + b"\0")
    assert load_versioned(folder, 1 << 20).version == digest.hexdigest()[:12]
