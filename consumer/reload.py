"""Rules hot reload: notice a change to the rules file or folder, validate it, hand it over.

`RulesWatcher.check(now_s)` looks at most every `interval_s` at the real path, mtime and size of
every rules file. That also catches Kubernetes' update of a ConfigMap volume, which swaps a
`..data` symlink to a new folder at once. A change is loaded with the same checks as at start-up.
A table that does not load is refused: one log line per problem and a metric, and the old table
keeps running. Each table has a version, a hash of its files' names and contents, which is
exported as a metric, logged, and written to every dead letter (`dlq.rules_version`).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from consumer.metrics import Metrics
from consumer.rules import RulesError, RulesTable, load_rules_many
from consumer.rules.load import expand_rule_paths

log = logging.getLogger(__name__)

Fingerprint = tuple[tuple[str, str, int, int], ...]


@dataclass(frozen=True, slots=True)
class VersionedRules:
    table: RulesTable
    version: str  # 12 hex digits of a SHA-256 over the files' names and contents


def load_versioned(path: Path, max_bytes: int) -> VersionedRules:
    """The rules at `path` and their version, a hash of the very bytes that were parsed (a file
    rewritten between the parse and a second read cannot give the table another file's
    version); raises RulesError (or OSError) like `load_rules`."""
    digest = hashlib.sha256()

    def hash_file(file: Path, raw: bytes) -> None:
        digest.update(file.name.encode("utf-8", "surrogateescape") + b"\0" + raw + b"\0")

    table = load_rules_many([path], max_bytes=max_bytes, on_file=hash_file)
    return VersionedRules(table, digest.hexdigest()[:12])


def fingerprint(path: Path) -> Fingerprint:
    """What changes when a rules file does: real path (a swapped symlink), mtime and size."""
    files, _ = expand_rule_paths([path])
    found = []
    for file in files:
        try:
            stat = file.stat()
        except OSError:
            found.append((str(file), "", -1, -1))
            continue
        found.append((str(file), os.path.realpath(file), stat.st_mtime_ns, stat.st_size))
    return tuple(found)


class RulesWatcher:
    """Polls the rules path; owned by the consumer loop."""

    def __init__(
        self,
        path: Path,
        max_bytes: int,
        current: VersionedRules,
        metrics: Metrics,
        interval_s: float = 2.0,
    ) -> None:
        self._path = path
        self._max_bytes = max_bytes
        self._version = current.version
        self._metrics = metrics
        self._interval_s = interval_s
        self._seen = fingerprint(path)
        self._next_s = 0.0

    def check(self, now_s: float) -> VersionedRules | None:
        """A new, valid table when the files changed since the last look; else None."""
        if now_s < self._next_s:
            return None
        self._next_s = now_s + self._interval_s
        seen = fingerprint(self._path)
        if seen == self._seen:
            return None
        self._seen = seen
        return self._load()

    def _load(self) -> VersionedRules | None:
        try:
            loaded = load_versioned(self._path, self._max_bytes)
        except RulesError as exc:
            self._metrics.rules_reload(ok=False)
            log.error(
                "rules change refused (%d problems); the old rules keep running", len(exc.problems)
            )
            for problem in exc.problems:
                log.error("rules change refused: %s", problem)
            return None
        except OSError as exc:
            self._metrics.rules_reload(ok=False)
            log.error("rules change refused: %s: cannot read: %s", exc.filename, exc.strerror)
            return None
        if loaded.version == self._version:
            return None  # touched, not changed
        log.info(
            "rules reloaded: version %s -> %s, %d rules over topics %s",
            self._version,
            loaded.version,
            len(loaded.table.rule_ids),
            ", ".join(sorted(loaded.table.topics)),
        )
        self._version = loaded.version
        self._metrics.rules_reload(ok=True)
        self._metrics.rules_loaded(loaded.version)
        return loaded
