"""Stage 4 contract: the pure rules a Braze request body must satisfy (braze-api.md §1-§3).

Shared by the emulator (which answers 400 with these messages) and by tests of the request
builders. `validate_request` returns every problem, so one look shows all mistakes in a body.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta
from typing import TypeGuard

from consumer.braze.limits import (
    MAX_PROPERTIES_BYTES,
    MAX_RECIPIENTS_PER_REQUEST,
    MAX_SEND_ID_CHARS,
)
from consumer.intents import SEND_ENDPOINTS, Endpoint, canonical_json, strict_json_problem
from consumer.json_types import JSONObject

# Braze documents no nesting limit for connected audiences (§9.7); this bound only stops a
# pathological body from recursing deep into the validator.
MAX_AUDIENCE_DEPTH = 16
# The westernmost time zone (UTC-12) reaches a wall-clock time 12 hours after UTC does.
_LATEST_UTC_OFFSET = timedelta(hours=12)

IDENTIFIERS = ("external_user_id", "user_alias", "email", "braze_id")
PRIORITIZATION_VALUES = frozenset(
    {"identified", "unidentified", "most_recently_updated", "least_recently_updated"}
)
TOO_MANY_RECIPIENTS = "The max number of external_ids and aliases per request was exceeded"
NO_RECIPIENTS = "No Recipients"

_CANVAS_PROPERTIES = frozenset({"context", "canvas_entry_properties"})
_SEND_FIELDS = frozenset({"broadcast", "audience", "recipients"})
_CAMPAIGN_SEND_FIELDS = _SEND_FIELDS | {"campaign_id", "send_id", "trigger_properties"}
_CANVAS_SEND_FIELDS = _SEND_FIELDS | _CANVAS_PROPERTIES | {"canvas_id"}

# Unknown top-level fields are rejected. Braze's behaviour is not documented (braze-api.md §9.3),
# but our client must never send a field the endpoint does not document (a Canvas `send_id` or a
# schedule update carrying recipients would be silently ignored at best), and a strict emulator is
# the place that catches such a bug before production does.
ALLOWED_FIELDS: Mapping[Endpoint, frozenset[str]] = {
    Endpoint.CAMPAIGN_SEND: _CAMPAIGN_SEND_FIELDS | {"attachments"},
    Endpoint.CANVAS_SEND: _CANVAS_SEND_FIELDS,
    Endpoint.CAMPAIGN_SCHEDULE_CREATE: _CAMPAIGN_SEND_FIELDS | {"schedule"},
    Endpoint.CANVAS_SCHEDULE_CREATE: _CANVAS_SEND_FIELDS | {"schedule"},
    Endpoint.CAMPAIGN_SCHEDULE_UPDATE: frozenset({"campaign_id", "schedule_id", "schedule"}),
    Endpoint.CANVAS_SCHEDULE_UPDATE: frozenset({"canvas_id", "schedule_id", "schedule"}),
    Endpoint.CAMPAIGN_SCHEDULE_DELETE: frozenset({"campaign_id", "schedule_id"}),
    Endpoint.CANVAS_SCHEDULE_DELETE: frozenset({"canvas_id", "schedule_id"}),
    Endpoint.SEND_ID_CREATE: frozenset({"campaign_id", "send_id"}),
}
_RECIPIENT_COMMON = frozenset(IDENTIFIERS) | {
    "prioritization",
    "send_to_existing_only",
    "attributes",
}
_SCHEDULE_FIELDS = frozenset({"time", "in_local_time", "at_optimal_time"})
_ALIAS_FIELDS = ("alias_name", "alias_label")
_ATTACHMENT_FIELDS = ("file_name", "url")
_SUBSCRIBE_STATES = frozenset({"opted_in", "subscribed", "unsubscribed"})
_GENDERS = frozenset({"M", "F", "O", "N", "P"})

# Connected audience (§2.3): what kind of `value` each comparison takes.
_COMPARISON_VALUE = {
    **dict.fromkeys(("exists", "does_not_exist"), "none"),
    **dict.fromkeys(("matches_regex", "does_not_match_regex"), "string"),
    **dict.fromkeys(("after", "before"), "datetime"),
    **dict.fromkeys(
        ("equals", "not_equal", "does_not_equal", "includes_value", "does_not_include_value"),
        "scalar",
    ),
    **dict.fromkeys(
        (
            "greater_than",
            "greater_than_or_equal_to",
            "less_than",
            "less_than_or_equal_to",
            "less_than_x_days_ago",
            "greater_than_x_days_ago",
            "less_than_x_days_in_the_future",
            "greater_than_x_days_in_the_future",
        ),
        "number",
    ),
}
_SUBSCRIPTION_FILTERS = ("push_subscription_status", "email_subscription_status")
_FILTERS = frozenset({"custom_attribute", "last_used_app", *_SUBSCRIPTION_FILTERS})


def validate_request(endpoint: Endpoint, body: object, *, now: datetime | None = None) -> list[str]:
    """Every problem with `body` as a request to `endpoint`; empty means Braze would accept it.

    `now` (UTC) enables the one clock-dependent rule: a local-time schedule already past everywhere.
    """
    if not isinstance(body, dict):
        return ["The request body must be a JSON object"]
    unstrict = _strictness_problem(body)
    if unstrict is not None:
        return [unstrict]  # the other checks measure and quote the body: they need it encodable
    problems: list[str] = []
    allowed = ALLOWED_FIELDS[endpoint]
    problems += [
        f"Unknown field '{name}': {endpoint.value} does not accept it"
        for name in sorted(set(body) - allowed)
    ]
    _check_target(endpoint, body, problems)
    if "send_id" in allowed and "send_id" in body:
        _check_send_id(body["send_id"], problems)
    if "schedule_id" in allowed:
        _check_id("schedule_id", body.get("schedule_id"), problems)
    if "schedule" in allowed:
        _check_schedule(body.get("schedule"), now, problems)
    if endpoint in SEND_ENDPOINTS:
        _check_audience_part(endpoint, body, problems)
        _check_properties_fields(endpoint, body, "", problems)
    if endpoint is Endpoint.CAMPAIGN_SEND and "attachments" in body:
        _check_attachments(body["attachments"], body.get("broadcast") is True, problems)
    return problems


def properties_size_bytes(value: object) -> int:
    """Size of `value` as compact UTF-8 JSON, the measure of MAX_PROPERTIES_BYTES."""
    return len(_compact(value).encode())


def _strictness_problem(body: JSONObject) -> str | None:
    """Why `body` is not strict JSON (a non-finite number, a lone surrogate), or None.

    `json.loads` accepts `1e400` and `"\\ud800"`; what Braze makes of them is undocumented, but
    our client must never send them, so the strict emulator answers 400.
    """
    try:
        canonical_json(body).encode("utf-8")
    except ValueError:  # UnicodeEncodeError is one too
        problem = strict_json_problem(body)
        where, why = problem if problem is not None else ("", "not strict JSON")
        return f"The request body is not strict JSON: body{where}: {why}"
    except TypeError:
        return None  # not JSON at all (a Python object): the shape checks below say what is wrong
    return None


def _check_target(endpoint: Endpoint, body: Mapping[str, object], problems: list[str]) -> None:
    field = endpoint.target_field
    if field not in body:
        problems.append(f"{field} is required")
    elif not _is_text(body[field]):
        kind = "canvas" if endpoint.is_canvas else "campaign"
        problems.append(f"{field} must be a string of the {kind} api identifier")


def _check_id(field: str, value: object, problems: list[str]) -> None:
    if value is None:
        problems.append(f"{field} is required")
    elif not _is_text(value):
        problems.append(f"{field} must be a non-empty string")


def _check_send_id(value: object, problems: list[str]) -> None:
    if not (_is_text(value) and value.isascii() and len(value) <= MAX_SEND_ID_CHARS):
        problems.append(f"send_id must be an ASCII string of 1 to {MAX_SEND_ID_CHARS} characters")


def _check_schedule(schedule: object, now: datetime | None, problems: list[str]) -> None:
    if schedule is None:
        problems.append("schedule is required")
        return
    if not isinstance(schedule, dict):
        problems.append("schedule must be an object")
        return
    problems += [
        f"schedule: unknown field '{name}'" for name in sorted(set(schedule) - _SCHEDULE_FIELDS)
    ]
    for flag in ("in_local_time", "at_optimal_time"):
        if flag in schedule and not isinstance(schedule[flag], bool):
            problems.append(f"schedule.{flag} must be a boolean")
    # Both at once is undefined in the docs (§9.5); the client must choose one.
    if schedule.get("in_local_time") is True and schedule.get("at_optimal_time") is True:
        problems.append("schedule: in_local_time and at_optimal_time cannot both be true")
    if "time" not in schedule:
        problems.append("schedule.time is required")
        return
    when = _parse_datetime(schedule["time"])
    if when is None:
        problems.append("schedule.time could not be parsed as an ISO 8601 datetime")
    elif _passed_everywhere(when, now) and schedule.get("in_local_time") is True:
        problems.append("schedule.time has already passed in all time zones (in_local_time)")


def _check_audience_part(
    endpoint: Endpoint, body: Mapping[str, object], problems: list[str]
) -> None:
    broadcast = body.get("broadcast", False)
    if not isinstance(broadcast, bool):
        problems.append("broadcast must be a boolean")
    if "audience" in body:
        _check_audience(body["audience"], "audience", 1, problems)
    if "recipients" not in body:
        if broadcast is not True:
            problems.append(NO_RECIPIENTS)
        return
    recipients = body["recipients"]
    if broadcast is True:
        problems.append("recipients must not be given when broadcast is true")
    if not isinstance(recipients, list):
        problems.append("recipients must be an array")
    elif not recipients:
        problems.append(NO_RECIPIENTS)
    elif len(recipients) > MAX_RECIPIENTS_PER_REQUEST:
        problems.append(TOO_MANY_RECIPIENTS)
    else:
        for index, recipient in enumerate(recipients):
            _check_recipient(endpoint, f"recipients[{index}]", recipient, problems)


def _check_recipient(
    endpoint: Endpoint, where: str, recipient: object, problems: list[str]
) -> None:
    if not isinstance(recipient, dict):
        problems.append(f"{where} must be an object")
        return
    allowed = _RECIPIENT_COMMON | _properties_names(endpoint)
    problems += [f"{where}: unknown field '{name}'" for name in sorted(set(recipient) - allowed)]
    present = [name for name in IDENTIFIERS if name in recipient]
    if len(present) != 1:
        problems.append(
            f"{where} must have exactly one of {', '.join(IDENTIFIERS)} (found {len(present)})"
        )
    for name in ("external_user_id", "email", "braze_id"):
        if name in recipient and not _is_text(recipient[name]):
            problems.append(f"{where}.{name} must be a non-empty string")
    if (
        "email" in recipient
        and _is_text(recipient["email"])
        and "@" not in recipient["email"][1:-1]
    ):
        problems.append(f"{where}.email is not an email address")
    if "user_alias" in recipient:
        _check_alias(f"{where}.user_alias", recipient["user_alias"], problems)
    _check_prioritization(where, recipient, problems)
    _check_existing_only(where, recipient, problems)
    if "attributes" in recipient:
        _check_attributes(f"{where}.attributes", recipient["attributes"], problems)
    _check_properties_fields(endpoint, recipient, f"{where}.", problems)


def _check_alias(where: str, alias: object, problems: list[str]) -> None:
    if not isinstance(alias, dict):
        problems.append(f"{where} must be an object with alias_name and alias_label")
        return
    problems += [
        f"{where}: unknown field '{name}'" for name in sorted(set(alias) - set(_ALIAS_FIELDS))
    ]
    for name in _ALIAS_FIELDS:
        if not _is_text(alias.get(name)):
            problems.append(f"{where}.{name} must be a non-empty string")


def _check_prioritization(where: str, recipient: Mapping[str, object], problems: list[str]) -> None:
    if "prioritization" not in recipient:
        if "email" in recipient:
            problems.append(f"{where}: prioritization is required with email")
        return
    values = recipient["prioritization"]
    if not isinstance(values, list) or not values:
        problems.append(f"{where}.prioritization must be a non-empty array")
        return
    for value in values:
        if not _one_of(value, PRIORITIZATION_VALUES):
            problems.append(f"{where}.prioritization: unknown value {_compact(value)}")
    if len(set(map(str, values))) != len(values):
        problems.append(f"{where}.prioritization has a repeated value")
    if "identified" in values and "unidentified" in values:
        problems.append(f"{where}.prioritization may contain only one of identified, unidentified")


def _check_existing_only(where: str, recipient: Mapping[str, object], problems: list[str]) -> None:
    value = recipient.get("send_to_existing_only", True)
    if not isinstance(value, bool):
        problems.append(f"{where}.send_to_existing_only must be a boolean")
    elif value is False and "user_alias" in recipient:
        problems.append(f"{where}: send_to_existing_only false is not supported with user_alias")
    elif value is False and "attributes" not in recipient:
        problems.append(f"{where}: send_to_existing_only false requires attributes")


def _check_attributes(where: str, attributes: object, problems: list[str]) -> None:
    """The shape, plus the few standard attributes whose values are enumerated (§2.6)."""
    if not isinstance(attributes, dict):
        problems.append(f"{where} must be an object")
        return
    for name in ("email_subscribe", "push_subscribe"):
        if name in attributes and not _one_of(attributes[name], _SUBSCRIBE_STATES):
            problems.append(f"{where}.{name} must be one of {', '.join(sorted(_SUBSCRIBE_STATES))}")
    gender = attributes.get("gender")
    if gender is not None and not _one_of(gender, _GENDERS):
        problems.append(f"{where}.gender must be one of M, F, O, N, P or null")
    dob = attributes.get("dob")
    if dob is not None and not (_is_text(dob) and _is_date(dob)):
        problems.append(f"{where}.dob must be a YYYY-MM-DD date or null")
    for flag in ("_update_existing_only", "push_token_import"):
        if flag in attributes and not isinstance(attributes[flag], bool):
            problems.append(f"{where}.{flag} must be a boolean")


def _check_properties_fields(
    endpoint: Endpoint, container: Mapping[str, object], where: str, problems: list[str]
) -> None:
    names = [name for name in sorted(_properties_names(endpoint)) if name in container]
    # Mixing the new and the legacy Canvas name is undefined (§9.9): one request, one name.
    if len(names) > 1:
        problems.append(f"{where}context and canvas_entry_properties cannot both be given")
    for name in names:
        value = container[name]
        if not isinstance(value, dict):
            problems.append(f"{where}{name} must be an object")
        elif properties_size_bytes(value) > MAX_PROPERTIES_BYTES:
            problems.append(f"{where}{name} exceeds {MAX_PROPERTIES_BYTES} bytes")


def _check_attachments(attachments: object, broadcast: bool, problems: list[str]) -> None:
    if broadcast:
        problems.append("attachments are not allowed when broadcast is true")
    if not isinstance(attachments, list):
        problems.append("attachments must be an array")
        return
    for index, item in enumerate(attachments):
        where = f"attachments[{index}]"
        if not isinstance(item, dict):
            problems.append(f"{where} must be an object with file_name and url")
            continue
        extra = sorted(set(item) - set(_ATTACHMENT_FIELDS))
        problems += [f"{where}: unknown field '{name}'" for name in extra]
        if not _is_text(item.get("file_name")):
            problems.append(f"{where}.file_name must be a non-empty string")
        url = item.get("url")
        if not (_is_text(url) and url.startswith(("https://", "http://"))):
            problems.append(f"{where}.url must be an http(s) URL")


def _check_audience(node: object, where: str, depth: int, problems: list[str]) -> None:
    """A filter or an AND/OR tree of filters (§2.3)."""
    if depth > MAX_AUDIENCE_DEPTH:
        problems.append(f"{where} is nested more than {MAX_AUDIENCE_DEPTH} levels deep")
        return
    if not isinstance(node, dict) or len(node) != 1:
        problems.append(f"{where} must be an object with exactly one key (AND, OR or a filter)")
        return
    ((key, value),) = node.items()
    if key in ("AND", "OR"):
        if not isinstance(value, list) or not value:
            problems.append(f"{where}.{key} must be a non-empty array")
            return
        for index, child in enumerate(value):
            _check_audience(child, f"{where}.{key}[{index}]", depth + 1, problems)
    elif key not in _FILTERS:
        problems.append(f"{where}: unknown filter '{key}'")
    elif not isinstance(value, dict):
        problems.append(f"{where}.{key} must be an object")
    else:
        _check_filter(f"{where}.{key}", key, value, problems)


def _check_filter(where: str, kind: str, spec: Mapping[str, object], problems: list[str]) -> None:
    comparison, value = spec.get("comparison"), spec.get("value")
    if kind == "custom_attribute":
        allowed_keys = {"custom_attribute_name", "comparison", "value"}
        if not _is_text(spec.get("custom_attribute_name")):
            problems.append(f"{where}.custom_attribute_name must be a non-empty string")
        value_kind = _COMPARISON_VALUE.get(comparison) if isinstance(comparison, str) else None
    elif kind == "last_used_app":
        allowed_keys = {"comparison", "value"}
        value_kind = "datetime" if comparison in ("after", "before") else None
    else:
        allowed_keys = {"comparison", "value"}
        value_kind = "subscription" if comparison in ("is", "is_not") else None
    problems += [f"{where}: unknown field '{name}'" for name in sorted(set(spec) - allowed_keys)]
    if value_kind is None:
        problems.append(f"{where}.comparison {_compact(comparison)} is not valid here")
    elif not _value_fits(value_kind, value):
        problems.append(f"{where}.value does not suit comparison {comparison}")


def _value_fits(kind: str, value: object) -> bool:
    if kind == "none":
        return value is None  # `exists` / `does_not_exist` take no value
    if kind == "string":
        return _is_text(value)
    if kind == "datetime":
        return _parse_datetime(value) is not None
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "subscription":
        return _one_of(value, _SUBSCRIBE_STATES)
    return isinstance(value, str | int | float | bool)  # "scalar"


def _properties_names(endpoint: Endpoint) -> frozenset[str]:
    return _CANVAS_PROPERTIES if endpoint.is_canvas else frozenset({"trigger_properties"})


def _parse_datetime(value: object) -> datetime | None:
    if not _is_text(value):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _passed_everywhere(local_time: datetime, now: datetime | None) -> bool:
    # With in_local_time the offset is meaningless (§2.4): the wall-clock part is what counts.
    return now is not None and local_time.replace(tzinfo=UTC) + _LATEST_UTC_OFFSET < now


def _is_date(text: str) -> bool:
    try:
        datetime.strptime(text, "%Y-%m-%d")
    except ValueError:
        return False
    return True


def _is_text(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and value != ""


def _one_of(value: object, choices: Collection[str]) -> bool:
    # The isinstance test first: a JSON object or array in `value` is unhashable.
    return isinstance(value, str) and value in choices


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
