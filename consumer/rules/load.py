"""Reads rule files (one file or a folder of *.yaml) into a `RulesTable`, or every problem found."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from consumer.rules.build import build_rule
from consumer.rules.errors import RuleProblem, RulesError
from consumer.rules.evaluate import CompiledRule
from consumer.rules.table import RulesTable
from consumer.yaml_lines import LineIndex, Loc, YamlError, load_yaml_with_lines

RULE_FILE_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class _Loaded:
    """One file's outcome: its valid rules, the (id, line) of every rule, its problems."""

    rules: list[CompiledRule]
    ids: list[tuple[str, int]]
    problems: list[RuleProblem]


def load_rules(path: Path | str) -> RulesTable:
    """A file or a folder of rule files; raises RulesError listing every problem."""
    return load_rules_many([Path(path)])


def load_rules_many(paths: Sequence[Path]) -> RulesTable:
    """Several files and/or folders as one table (rule ids unique across all of them)."""
    files, problems = expand_rule_paths(paths)
    rules: list[CompiledRule] = []
    first_seen: dict[str, str] = {}
    for file in files:
        loaded = _load_file(file)
        problems.extend(loaded.problems)
        rules.extend(loaded.rules)
        for rule_id, line in loaded.ids:
            where = f"{file}:{line}"
            if rule_id in first_seen:
                message = f"duplicate rule id (first defined at {first_seen[rule_id]})"
                problems.append(RuleProblem(str(file), line, rule_id, message))
            else:
                first_seen[rule_id] = where
    if problems:
        raise RulesError(problems)
    return RulesTable(tuple(rules), tuple(str(file) for file in files))


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


def _load_file(path: Path) -> _Loaded:
    name = str(path)
    try:
        data, index = load_yaml_with_lines(path)
    except YamlError as exc:
        return _Loaded([], [], [RuleProblem(name, exc.line, "-", f"invalid YAML: {exc.message}")])
    except OSError as exc:
        return _Loaded([], [], [RuleProblem(name, 0, "-", f"cannot read: {exc.strerror}")])
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
