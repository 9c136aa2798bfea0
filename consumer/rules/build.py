"""Compiles one raw rule (a YAML mapping) into a `CompiledRule`, collecting every issue.

pydantic checks shapes and types; the parts (conditions, templates, durations) are compiled from
the raw mapping as well, so a rule with a type error still reports its bad expressions.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from pydantic import ValidationError

from consumer.intents import Endpoint
from consumer.rules import model
from consumer.rules.conditions import (
    Condition,
    Step,
    compile_conditions,
    compile_path,
    condition_warnings,
)
from consumer.rules.durations import parse_duration_ms
from consumer.rules.evaluate import CompiledRule, Identity, SchedulePlan
from consumer.rules.model import IDENTIFIERS, Issue, RuleSpec
from consumer.rules.templates import ObjectTemplate, Template, compile_string, compile_template

_T = TypeVar("_T")

_SPECS = (
    model.CanvasSpec,
    model.CampaignSpec,
    model.UserAliasSpec,
    model.RecipientSpec,
    model.ScheduleSpec,
    model.RuleSpec,
)
# Every key a rule file may contain, for "did you mean" hints on unknown keys.
_KNOWN_KEYS = sorted({name for spec in _SPECS for name in spec.model_fields})


# (is a Canvas, has a schedule) -> the endpoint the rule's intents go to.
_ENDPOINTS = {
    (True, False): Endpoint.CANVAS_SEND,
    (False, False): Endpoint.CAMPAIGN_SEND,
    (True, True): Endpoint.CANVAS_SCHEDULE_CREATE,
    (False, True): Endpoint.CAMPAIGN_SCHEDULE_CREATE,
}


@dataclass
class _Parts:
    """Compiled pieces of a raw rule; issues collected along the way."""

    issues: list[Issue] = field(default_factory=list)
    conditions: tuple[Condition, ...] = ()
    identity_parts: list[tuple[str, Template]] = field(default_factory=list)
    properties: ObjectTemplate | None = None
    attributes: ObjectTemplate | None = None
    schedule_time: Template | None = None
    max_event_age_ms: int | None = None
    event_time: tuple[Step, ...] | None = None


def build_rule(raw: object) -> tuple[CompiledRule | None, list[Issue]]:
    """A compiled rule and no issues, or None and every issue (locations relative to the rule)."""
    if not isinstance(raw, dict):
        return None, [((), f"a rule must be a mapping of keys, got {_kind(raw)}")]
    issues = list(model.cross_field_issues(raw))
    spec: RuleSpec | None = None
    try:
        spec = RuleSpec.model_validate(raw)
    except ValidationError as exc:
        issues.extend(_pydantic_issues(exc))
    parts = _compile_parts(raw)
    issues.extend(parts.issues)
    if spec is None or issues:
        return None, issues
    return _assemble(spec, parts), []


def _assemble(spec: RuleSpec, parts: _Parts) -> CompiledRule:
    target = spec.canvas or spec.campaign
    assert target is not None  # cross_field_issues guarantees exactly one
    schedule = None
    if spec.schedule is not None:
        assert parts.schedule_time is not None
        schedule = SchedulePlan(
            parts.schedule_time, spec.schedule.in_local_time, spec.schedule.at_optimal_time
        )
    endpoint = _ENDPOINTS[(spec.canvas is not None, schedule is not None)]
    kind = next(name for name in IDENTIFIERS if getattr(spec.recipient, name) is not None)
    order = spec.recipient.prioritization
    return CompiledRule(
        rule_id=spec.id,
        topics=frozenset(spec.topics),
        conditions=parts.conditions,
        endpoint=endpoint,
        target_id=target.id,
        send_id=spec.campaign.send_id if spec.campaign is not None else None,
        identity=Identity(kind, tuple(parts.identity_parts)),
        prioritization=tuple(order) if order is not None else None,
        send_to_existing_only=spec.send_to_existing_only,
        properties=parts.properties,
        attributes=parts.attributes,
        schedule=schedule,
        max_event_age_ms=parts.max_event_age_ms,
        event_time=parts.event_time,
    )


def _compile_parts(raw: Mapping[object, object]) -> _Parts:
    """Compile every section whose raw shape allows it; shape errors are pydantic's to report."""
    parts = _Parts()
    when = raw.get("when")
    if isinstance(when, dict):
        textual = {key: value for key, value in when.items() if isinstance(key, str)}
        parts.conditions, issues = compile_conditions(textual)
        parts.issues.extend(issues)
    _compile_recipient(raw.get("recipient"), parts)
    parts.properties = _object_template(raw, "properties", parts.issues)
    parts.attributes = _object_template(raw, "attributes", parts.issues)
    schedule = raw.get("schedule")
    if isinstance(schedule, dict) and isinstance(schedule.get("time"), str):
        parts.schedule_time = _string(schedule["time"], ("schedule", "time"), parts.issues)
    parts.max_event_age_ms = _parsed(raw, "max_event_age", parse_duration_ms, parts.issues)
    parts.event_time = _parsed(raw, "event_time", compile_path, parts.issues)
    if "event_time" in raw and "max_event_age" not in raw:
        parts.issues.append((("event_time",), "`event_time` is only used with `max_event_age`"))
    parts.issues.extend(_literal_id_issues(raw))
    return parts


def _compile_recipient(recipient: object, parts: _Parts) -> None:
    if not isinstance(recipient, dict):
        return
    for kind in ("external_user_id", "email", "braze_id"):
        if isinstance(recipient.get(kind), str):
            template = _string(recipient[kind], ("recipient", kind), parts.issues)
            parts.identity_parts.append((kind, template))
    alias = recipient.get("user_alias")
    if isinstance(alias, dict):
        for name in ("alias_name", "alias_label"):
            if isinstance(alias.get(name), str):
                loc = ("recipient", "user_alias", name)
                parts.identity_parts.append((name, _string(alias[name], loc, parts.issues)))


def _string(text: str, loc: tuple[str, ...], issues: list[Issue]) -> Template:
    try:
        return compile_string(text)
    except ValueError as exc:
        issues.append((loc, str(exc)))
        return compile_string("")


def _object_template(
    raw: Mapping[object, object], key: str, issues: list[Issue]
) -> ObjectTemplate | None:
    value = raw.get(key)
    if not isinstance(value, dict):
        return None
    template, found = compile_template(value)
    issues.extend(((key, *loc), message) for loc, message in found)
    return template if isinstance(template, ObjectTemplate) else None


def _parsed(
    raw: Mapping[object, object], key: str, parse: Callable[[str], _T], issues: list[Issue]
) -> _T | None:
    value = raw.get(key)
    if not isinstance(value, str):
        return None
    try:
        return parse(value)
    except ValueError as exc:
        issues.append(((key,), str(exc)))
        return None


def _literal_id_issues(raw: Mapping[object, object]) -> Iterator[Issue]:
    """Target and send ids are part of the batch key: they are fixed text, not templates."""
    for section, names in (("canvas", ("id",)), ("campaign", ("id", "send_id"))):
        target = raw.get(section)
        if not isinstance(target, dict):
            continue
        for name in names:
            value = target.get(name)
            if isinstance(value, str) and "{{" in value:
                yield (section, name), f"`{section}.{name}` must be literal text, not a template"


def _pydantic_issues(error: ValidationError) -> Iterator[Issue]:
    for detail in error.errors(include_url=False):
        loc = tuple(detail["loc"])
        if loc and loc[-1] == "[key]":
            where = ".".join(str(part) for part in loc[:-2])
            key = json.dumps(detail["input"], default=str)
            hint = "quote it (YAML reads unquoted yes, no, on, off as booleans)"
            yield loc[:-1], f"key {key} in `{where}` is not text: {hint}"
        else:
            yield loc, _pydantic_message(detail["type"], loc, detail["msg"])


def _pydantic_message(kind: str, loc: tuple[str | int, ...], text: str) -> str:
    name = str(loc[-1]) if loc else ""
    where = ".".join(str(part) for part in loc[:-1])
    scope = f" in `{where}`" if where else ""
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(name, _KNOWN_KEYS, n=1)
        hint = f" (did you mean `{close[0]}`?)" if close and close[0] != name else ""
        if name in _KNOWN_KEYS:
            hint = " (it is not allowed here)"
        return f"unknown key `{name}`{scope}{hint}"
    if kind == "missing":
        return f"missing required key `{name}`{scope}"
    path = ".".join(str(part) for part in loc)
    return f"{path}: {text}" if path else text


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    return "a list" if isinstance(value, list) else f"a {type(value).__name__}"


def rule_warnings(raw: object) -> list[Issue]:
    """What `rules check` warns about in one raw rule (locations relative to the rule).

    Warnings never stop a rule from loading: conditions that can never hold, so far.
    """
    if not isinstance(raw, dict):
        return []
    when = raw.get("when")
    if not isinstance(when, dict):
        return []
    return condition_warnings({key: value for key, value in when.items() if isinstance(key, str)})
