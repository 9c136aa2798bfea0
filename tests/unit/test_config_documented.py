"""config/consumer.yaml documents every setting, as the README promises.

The keys come from the pydantic model (`Settings` and its sections), so a new setting fails here
until the example file shows it. A key may be documented commented out (`# api_key_file: ...`)
when the file must keep the default (test_settings checks the file equals the code defaults).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from consumer.settings import Settings

CONSUMER_YAML = Path(__file__).resolve().parents[2] / "config" / "consumer.yaml"

# `key:` or `# key:` at the start of a line. Commented keys count only at a key's column (0, 2,
# 4): the explanations aligned further right are prose, even when a word ends with a colon.
_KEY = re.compile(r"(?P<indent> *)(?P<comment># ?)?(?P<key>[a-z][a-z0-9_]*):(?: |$)")
_COMMENTED_KEY_COLUMNS = (0, 2, 4)


def settings_keys(model: type[BaseModel] = Settings, prefix: str = "") -> Iterator[str]:
    """Every leaf setting as a dotted key (`kafka.bootstrap_servers`), sections walked into."""
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            yield from settings_keys(kind, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def settings_sections(model: type[BaseModel] = Settings, prefix: str = "") -> Iterator[str]:
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            yield f"{prefix}{name}"
            yield from settings_sections(kind, f"{prefix}{name}.")


def documented_keys(text: str) -> set[str]:
    """The dotted keys a settings file shows, set or commented out, by their indentation."""
    found: set[str] = set()
    stack: list[tuple[int, str]] = []  # (column, key) of the enclosing keys
    for line in text.splitlines():
        match = _KEY.match(line)
        if match is None:
            continue
        column = len(match["indent"])
        if match["comment"] and column not in _COMMENTED_KEY_COLUMNS:
            continue
        while stack and stack[-1][0] >= column:
            stack.pop()
        stack.append((column, match["key"]))
        found.add(".".join(key for _, key in stack))
    return found


def test_the_scanner_reads_set_and_commented_keys() -> None:
    text = (
        "# Settings. Unknown keys are errors.\n"
        "kafka:\n"
        "  group_id: g        # note: prose here is not a key\n"
        "  # session_timeout_ms: 45000\n"
        "  client: {}\n"
        "                     # aligned: prose again\n"
        "braze:\n"
        "  # api_key_file: /run/secrets/braze\n"
        "rules: config/rules.yaml\n"
    )
    assert documented_keys(text) == {
        "kafka",
        "kafka.group_id",
        "kafka.session_timeout_ms",
        "kafka.client",
        "braze",
        "braze.api_key_file",
        "rules",
    }


def test_the_walk_reaches_nested_sections() -> None:
    keys = set(settings_keys())
    assert {"kafka.bootstrap_servers", "braze.max_in_flight", "rules"} <= keys
    assert "kafka" not in keys  # a section is not a setting of its own
    assert "kafka.client" in keys  # a free mapping (librdkafka properties) is one setting


def test_every_setting_is_documented_in_config_consumer_yaml() -> None:
    documented = documented_keys(CONSUMER_YAML.read_text(encoding="utf-8"))
    missing = [key for key in settings_keys() if key not in documented]
    assert not missing, (
        f"{CONSUMER_YAML.name} does not document {len(missing)} setting(s); add each (commented"
        " out when the file must keep the default) with a one-line explanation:\n  "
        + "\n  ".join(missing)
    )


def test_every_key_the_file_shows_is_a_setting() -> None:
    """A commented-out key is not validated at start-up: a stale one would mislead."""
    known = {*settings_keys(), *settings_sections()}
    free = tuple(f"{key}." for key in settings_keys())  # inside kafka.client: any property
    documented = documented_keys(CONSUMER_YAML.read_text(encoding="utf-8"))
    unknown = sorted(key for key in documented if key not in known and not key.startswith(free))
    assert not unknown, f"{CONSUMER_YAML.name} shows keys that are not settings: {unknown}"
