"""Small command-line frictions: `--version`, and `dlq replay` options that must fail clearly."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import consumer
from consumer import replay
from consumer.cli import COMMAND_MODULES, COMMAND_OF, build_parser, main
from consumer.reasons import Reason

REPO = Path(__file__).resolve().parents[2]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int | str | None, str, str]:
    """Exit code, stdout and stderr of `braze-consumer ARGV`, argparse's exits included."""
    try:
        code: int | str | None = main(list(argv))
    except SystemExit as exited:
        code = exited.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- --version ----------------------------------------------------------------------------------


def test_version_prints_the_package_version_and_exits_zero(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(capsys, "--version") == (0, f"braze-consumer {consumer.__version__}\n", "")


def test_the_version_is_the_one_pyproject_builds() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert consumer.__version__ == project["version"]


# -- dlq replay -----------------------------------------------------------------------------------


@pytest.fixture
def settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A valid settings file, no API key anywhere, and a replay that reads nothing."""
    monkeypatch.delenv("BRAZE_API_KEY", raising=False)
    for name in [name for name in os.environ if name.startswith("BRAZE_CONSUMER_")]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(replay.Replay, "run", lambda self, from_offset: 0)
    # No root handler bound to pytest's captured stderr, which closes after the test.
    monkeypatch.setattr(replay, "configure_logging", lambda *args, **kwargs: None, raising=False)
    path = tmp_path / "consumer.yaml"
    path.write_text(f"rules: {REPO / 'config' / 'rules.yaml'}\n", encoding="utf-8")
    return path


def test_dry_run_needs_no_api_key(capsys: pytest.CaptureFixture[str], settings_file: Path) -> None:
    code, _, err = run(capsys, "dlq", "replay", "--config", str(settings_file), "--dry-run")
    assert (code, err) == (0, "")


def test_a_real_replay_still_needs_the_api_key(
    capsys: pytest.CaptureFixture[str], settings_file: Path
) -> None:
    code, _, err = run(capsys, "dlq", "replay", "--config", str(settings_file))
    assert code == 2
    assert "no Braze API key" in err


def test_dry_run_still_reports_invalid_settings(
    capsys: pytest.CaptureFixture[str], settings_file: Path
) -> None:
    settings_file.write_text("kafka:\n  bootstrap_server: x\n", encoding="utf-8")
    code, _, err = run(capsys, "dlq", "replay", "--config", str(settings_file), "--dry-run")
    assert code == 2
    assert err == f"invalid settings:\n  {settings_file}:2: kafka.bootstrap_server: " + (
        "Extra inputs are not permitted\n"
    )


def test_an_unknown_reason_is_refused_listing_the_known_ones(
    capsys: pytest.CaptureFixture[str], settings_file: Path
) -> None:
    code, out, err = run(capsys, "dlq", "replay", "--dry-run", "--reason", "mapping_errr")
    assert (code, out) == (2, "")
    assert err.splitlines()[-1] == (
        "braze-consumer dlq replay: error: argument --reason: unknown reason 'mapping_errr'"
        " (did you mean mapping_error? known: invalid_json, invalid_payload, mapping_error,"
        " too_large, braze_rejected; from older versions: retries_exhausted)"
    )


@pytest.mark.parametrize("reason", [*Reason, "retries_exhausted"])
def test_every_reason_written_now_or_before_is_accepted(
    capsys: pytest.CaptureFixture[str], settings_file: Path, reason: str
) -> None:
    argv = ["dlq", "replay", "--config", str(settings_file), "--dry-run", "--reason", reason]
    assert run(capsys, *argv)[0] == 0


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        pytest.param(
            "--failed-after",
            "yesterday",
            "argument --failed-after: 'yesterday' is not an ISO 8601 time;"
            " give one with a UTC offset, e.g. 2026-01-01T00:00:00Z",
            id="not a time",
        ),
        pytest.param(
            "--failed-before",
            "2026-13-01T00:00:00Z",
            "argument --failed-before: '2026-13-01T00:00:00Z' is not an ISO 8601 time;"
            " give one with a UTC offset, e.g. 2026-01-01T00:00:00Z",
            id="month 13",
        ),
        pytest.param(
            "--failed-after",
            "2026-01-01T00:00:00",
            "argument --failed-after: '2026-01-01T00:00:00' has no UTC offset;"
            " add one, e.g. 2026-01-01T00:00:00Z",
            id="no offset",
        ),
    ],
)
def test_a_bad_time_gets_a_clean_message_with_an_example(
    capsys: pytest.CaptureFixture[str], option: str, value: str, message: str
) -> None:
    code, out, err = run(capsys, "dlq", "replay", "--dry-run", option, value)
    assert (code, out) == (2, "")
    assert err.splitlines()[-1] == f"braze-consumer dlq replay: error: {message}"
    assert "_aware" not in err


def test_times_with_an_offset_are_accepted(
    capsys: pytest.CaptureFixture[str], settings_file: Path
) -> None:
    times = ["--failed-after", "2026-01-01T00:00:00Z", "--failed-before", "2026-01-02T01:00+01:00"]
    argv = ["dlq", "replay", "--config", str(settings_file), "--dry-run", *times]
    assert run(capsys, *argv)[0] == 0


def test_each_command_is_found_in_the_module_cli_imports_for_it() -> None:
    assert set(commands_of(build_parser())) == set(COMMAND_OF)
    for command, module in COMMAND_OF.items():
        assert set(commands_of(build_parser([command]))) == {command}
        assert module in COMMAND_MODULES


def commands_of(parser: argparse.ArgumentParser) -> list[str]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(actions[0].choices)


def test_the_service_starts_without_importing_the_emulator_or_the_tools() -> None:
    code = (
        "import sys; from consumer.cli import build_parser; build_parser(['run']); "
        "print(sorted(m for m in sys.modules if m.startswith(('consumer.emulator', "
        "'consumer.replay', 'consumer.rules.command'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
