"""Reads rule files (one file or a folder of *.yaml) into a `RulesTable`, or every problem found."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from consumer.rules.build import build_rule
from consumer.rules.errors import RuleProblem, RulesError
from consumer.rules.evaluate import CompiledRule
from consumer.rules.table import RulesTable
from consumer.yaml_lines import (
    DEFAULT_MAX_BYTES,
    LineIndex,
    Loc,
    YamlError,
    YamlLimitError,
    load_yaml_with_lines,
    parse_yaml_with_lines,
)

RULE_FILE_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class _Loaded:
    """One file's outcome: its valid rules, the (id, line) of every rule, its problems."""

    rules: list[CompiledRule]
    ids: list[tuple[str, int]]
    problems: list[RuleProblem]


def load_rules(path: Path | str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> RulesTable:
    """A file or a folder of rule files; raises RulesError listing every problem.

    A file larger than `max_bytes` is refused unread (a problem, like any other).
    """
    return load_rules_many([Path(path)], max_bytes=max_bytes)


def load_rules_text(text: str, name: str = "<rules>") -> RulesTable:
    """Rules from YAML text (tests, tools); `name` stands for the file in problems."""
    try:
        data, index = parse_yaml_with_lines(text)
    except YamlError as exc:
        raise RulesError([_yaml_problem(name, exc)]) from exc
    return _table([(name, _load_document(name, data, index))], [])


def load_rules_many(
    paths: Sequence[Path],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    on_file: Callable[[Path, bytes], None] | None = None,
) -> RulesTable:
    """Several files and/or folders as one table (rule ids unique across all of them).

    `max_bytes` limits each file; `on_file` sees each file's bytes as read (the version hash).
    """
    files, problems = expand_rule_paths(paths)
    loaded = [(str(file), _load_file(file, max_bytes, on_file)) for file in files]
    return _table(loaded, problems)


def _table(files: list[tuple[str, _Loaded]], problems: list[RuleProblem]) -> RulesTable:
    """The table of all files' rules, or RulesError with every problem in file and line order."""
    first_seen: dict[str, str] = {}
    for name, loaded in files:
        for rule_id, line in loaded.ids:
            if rule_id in first_seen:
                message = f"duplicate rule id (first defined at {first_seen[rule_id]})"
                loaded.problems.append(RuleProblem(name, line, rule_id, message))
            else:
                first_seen[rule_id] = f"{name}:{line}"
    for _, loaded in files:
        problems.extend(sorted(loaded.problems, key=lambda problem: problem.line))
    if problems:
        raise RulesError(problems)
    rules = tuple(rule for _, loaded in files for rule in loaded.rules)
    return RulesTable(rules, tuple(name for name, _ in files))


def expand_rule_paths(paths: Sequence[Path]) -> tuple[list[Path], list[RuleProblem]]:
    """Folders become their *.yaml/*.yml files (sorted, not recursive)."""
    files: list[Path] = []
    problems: list[RuleProblem] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in RULE_FILE_SUFFIXES)
            if not found:
                problems.append(RuleProblem(str(path), 0, "-", "folder has no *.yaml rule files"))
            files.extend(p for p in found if p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            problems.append(RuleProblem(str(path), 0, "-", "no such file or folder"))
    return files, problems


def _load_file(
    path: Path, max_bytes: int, on_file: Callable[[Path, bytes], None] | None = None
) -> _Loaded:
    name = str(path)
    on_bytes = None if on_file is None else (lambda raw: on_file(path, raw))
    try:
        data, index = load_yaml_with_lines(path, max_bytes=max_bytes, on_bytes=on_bytes)
    except YamlError as exc:
        return _Loaded([], [], [_yaml_problem(name, exc)])
    except OSError as exc:
        return _Loaded([], [], [RuleProblem(name, 0, "-", f"cannot read: {exc.strerror}")])
    return _load_document(name, data, index)


def _yaml_problem(name: str, error: YamlError) -> RuleProblem:
    # A refused file (too large, too deep, aliases) may be valid YAML: its message says why.
    prefix = "" if isinstance(error, YamlLimitError) else "invalid YAML: "
    return RuleProblem(name, error.line, "-", f"{prefix}{error.message}")


def _load_document(name: str, data: object, index: LineIndex) -> _Loaded:
    problems = [
        RuleProblem(name, line, _rule_id_at(data, loc), f"duplicate key `{loc[-1]}`")
        for loc, line in index.duplicate_keys
    ]
    raw_rules, file_issues = _rules_list(data)
    problems.extend(RuleProblem(name, index.line_of(loc), "-", msg) for loc, msg in file_issues)
    loaded = _Loaded([], [], problems)
    for position, raw in enumerate(raw_rules):
        _add_rule(name, index, ("rules", position), raw, loaded)
    return loaded


def _add_rule(name: str, index: LineIndex, loc: Loc, raw: object, loaded: _Loaded) -> None:
    rule_id = _rule_id(raw)
    if rule_id != "-":
        loaded.ids.append((rule_id, index.line_of(loc)))
    rule, issues = build_rule(raw)
    for issue_loc, message in issues:
        line = index.line_of((*loc, *issue_loc))
        loaded.problems.append(RuleProblem(name, line, rule_id, message))
    if rule is not None:
        loaded.rules.append(rule)


def _rules_list(data: object) -> tuple[list[object], list[tuple[Loc, str]]]:
    """The `rules:` list of a file, or why there is none."""
    if data is None:
        return [], [((), "the file is empty; expected `rules:` with a list of rules")]
    if not isinstance(data, dict):
        return [], [((), "expected a mapping with a `rules:` list at the top of the file")]
    issues: list[tuple[Loc, str]] = [
        ((str(key),), f"unknown top-level key `{key}` (only `rules` is allowed)")
        for key in data
        if key != "rules"
    ]
    rules = data.get("rules")
    if "rules" not in data:
        issues.append(((), "missing the top-level `rules:` list"))
    elif not isinstance(rules, list):
        issues.append((("rules",), "`rules` must be a list of rules"))
    elif not rules:
        issues.append((("rules",), "`rules` is empty; a rules file needs at least one rule"))
    return (rules if isinstance(rules, list) else []), issues


def _rule_id(raw: object) -> str:
    rule_id = raw.get("id") if isinstance(raw, dict) else None
    return rule_id if isinstance(rule_id, str) and rule_id else "-"


def _rule_id_at(data: object, loc: Loc) -> str:
    """The id of the rule a location lies in, for problems found before rules are built."""
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(data, dict):
        rules = data.get("rules")
        if isinstance(rules, list) and isinstance(loc[1], int) and loc[1] < len(rules):
            return _rule_id(rules[loc[1]])
    return "-"
