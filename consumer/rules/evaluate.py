"""Stage 2: one compiled rule applied to one event gives a send intent, a skip, or a failure.

Pure and clock-free (`now_ms` is passed in). Per-event problems are values (`MappingFailure`),
never exceptions: they become dead letters in the pipeline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from consumer.braze.limits import MAX_PROPERTIES_BYTES
from consumer.events import Event, with_kafka_namespace
from consumer.intents import (
    NOT_FINITE,
    BatchKey,
    Endpoint,
    MappingFailure,
    Outcome,
    RuleSkip,
    SendIntent,
    canonical_json,
    printable,
    strict_json_problem,
)
from consumer.json_codec import dumps_strict
from consumer.json_types import JSONObject, JSONValue
from consumer.reasons import Reason
from consumer.rules.conditions import Condition, Step, resolve
from consumer.rules.jsonvalues import NotStrictJSONError
from consumer.rules.templates import (
    NOTHING,
    ExpressionError,
    ListTemplate,
    ObjectTemplate,
    Template,
    may_read,
)
from consumer.rules.times import braze_schedule_time, epoch_ms, parse_iso8601

# What rendering raises for a value with no strict JSON form: a non-finite number in mixed text
# (NotStrictJSONError), or JMESPath's floor()/ceil() of one (OverflowError, which the templates do
# not turn into an ExpressionError). Either way the event holds a number Braze cannot take.
_NOT_FINITE_ERRORS = (NotStrictJSONError, OverflowError)


class _MappingError(Exception):
    """Internal: stops building a recipient; turned into a MappingFailure by `apply`."""

    def __init__(self, field: str, message: str, reason: str = Reason.MAPPING_ERROR) -> None:
        super().__init__(message)
        self.failure_field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Identity:
    """The recipient identifier: `kind` is the Braze field, `parts` its string templates."""

    kind: str  # external_user_id | user_alias | email | braze_id
    parts: tuple[tuple[str, Template], ...]  # (field, template); two for user_alias
    # (name, template, the field as errors name it), made once
    _named: tuple[tuple[str, Template, str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        named = tuple(
            (name, template, "recipient." + (name if name == self.kind else f"{self.kind}.{name}"))
            for name, template in self.parts
        )
        object.__setattr__(self, "_named", named)

    def render(self, document: JSONObject) -> tuple[JSONValue, str]:
        """The identifier's JSON value and the user key; raises _MappingError."""
        if self.kind == "user_alias":
            values = {name: _required_string(t, document, where) for name, t, where in self._named}
            alias: JSONObject = {"alias_name": values["alias_name"]}
            alias["alias_label"] = values["alias_label"]
            return alias, f"user_alias:{values['alias_label']}:{values['alias_name']}"
        ((_name, template, where),) = self._named  # one part for every other kind
        value = _required_string(template, document, where)
        # Braze matches e-mail addresses case-insensitively; the user key must as well.
        key_value = value.lower() if self.kind == "email" else value
        return value, f"{self.kind}:{key_value}"


@dataclass(frozen=True, slots=True)
class SchedulePlan:
    time: Template
    in_local_time: bool | None
    at_optimal_time: bool | None

    def render_json(self, document: JSONObject) -> str:
        """The canonical JSON of the schedule object; raises _MappingError."""
        text = _required_string(self.time, document, "schedule.time")
        local = bool(self.in_local_time or self.at_optimal_time)
        try:
            schedule: JSONObject = {"time": braze_schedule_time(text, local)}
        except ValueError as exc:
            raise _MappingError("schedule.time", str(exc)) from exc
        if self.in_local_time is not None:
            schedule["in_local_time"] = self.in_local_time
        if self.at_optimal_time is not None:
            schedule["at_optimal_time"] = self.at_optimal_time
        return canonical_json(schedule)


@dataclass(frozen=True, slots=True)
class CompiledRule:
    rule_id: str
    topics: frozenset[str]
    conditions: tuple[Condition, ...]
    endpoint: Endpoint
    target_id: str
    send_id: str | None
    identity: Identity
    prioritization: tuple[str, ...] | None
    send_to_existing_only: bool | None
    properties: ObjectTemplate | None
    attributes: ObjectTemplate | None
    schedule: SchedulePlan | None
    max_event_age_ms: int | None
    event_time: tuple[Step, ...] | None
    # The batch key of every send when the rule has no schedule (one object, hashed once).
    static_key: BatchKey | None = field(init=False, repr=False, compare=False)
    properties_field: str = field(init=False, repr=False, compare=False)  # context / trigger_...
    # Whether its mappings may read `_kafka` (added to the document only then).
    reads_kafka: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = None
        if self.schedule is None:
            key = BatchKey(self.endpoint, self.target_id, self.send_id, None)
        object.__setattr__(self, "static_key", key)
        object.__setattr__(self, "properties_field", self.endpoint.properties_field)
        templates: list[Template | None] = [template for _, template in self.identity.parts]
        templates += [self.properties, self.attributes]
        templates.append(None if self.schedule is None else self.schedule.time)
        reads = any(may_read(template, "_kafka") for template in templates)
        reads = reads or (self.event_time is not None and self.event_time[0][0] == "_kafka")
        object.__setattr__(self, "reads_kafka", reads)

    def apply(self, event: Event, now_ms: int) -> Outcome | None:
        """None when a condition does not hold; otherwise exactly one outcome."""
        document = event.document
        for condition in self.conditions:
            if not condition.holds(document):
                return None
        if self.reads_kafka:
            document = with_kafka_namespace(event)
        try:
            stale_after_ms = None
            if self.max_event_age_ms is not None:
                event_ms = self._event_ms(event)
                stale_after_ms = None if event_ms is None else event_ms + self.max_event_age_ms
                if stale_after_ms is not None and now_ms > stale_after_ms:
                    return RuleSkip(self.rule_id, "max_event_age")
            return self._intent(document, stale_after_ms)
        except _MappingError as failed:
            # Messages may quote the event (an expression's error), lone surrogates included:
            # made printable here, the dead letter and its log line always encode.
            field, message = printable(failed.failure_field), printable(str(failed))
            return MappingFailure(self.rule_id, field, message, failed.reason)
        except RecursionError:
            # JSON has no depth limit; copying or sizing a value nested thousands deep can hit
            # Python's stack limit. That event cannot be mapped, and says so.
            return MappingFailure(self.rule_id, "event", "the event is nested too deeply to map")

    def _event_ms(self, event: Event) -> int | None:
        """When the event happened: `event_time` if the rule names one, else the Kafka timestamp
        (None without one, never from a modern broker: then nothing says the event is stale)."""
        if self.event_time is None:
            return event.raw.meta.timestamp_ms
        return _event_time_ms(resolve(event.document, self.event_time))

    def _intent(self, document: JSONObject, stale_after_ms: int | None) -> SendIntent:
        identifier, user_key = self.identity.render(document)
        recipient: JSONObject = {self.identity.kind: identifier}
        if self.prioritization is not None:
            recipient["prioritization"] = list(self.prioritization)
        if self.properties is not None:
            properties = _render_object(self.properties, document, "properties")
            if properties:
                recipient[self.properties_field] = properties
        if self.attributes is not None:
            attributes = _render_object(self.attributes, document, "attributes")
            if attributes:
                recipient["attributes"] = attributes
        if self.send_to_existing_only is not None:
            if not self.send_to_existing_only and "attributes" not in recipient:
                raise _MappingError("attributes", "send_to_existing_only: false needs attributes")
            recipient["send_to_existing_only"] = self.send_to_existing_only
        key = self.static_key
        if key is None:
            assert self.schedule is not None
            schedule_json = self.schedule.render_json(document)
            key = BatchKey(self.endpoint, self.target_id, self.send_id, schedule_json)
        encoded = self._strict_encode(recipient)
        # The recipient's JSON contains the properties' JSON: only a large recipient can hold
        # too-large properties, so the common case serialises once.
        if len(encoded) > MAX_PROPERTIES_BYTES:
            _check_size(recipient.get(self.properties_field))
        return SendIntent(self.rule_id, key, user_key, encoded, stale_after_ms)

    def _strict_encode(self, recipient: JSONObject) -> bytes:
        """The recipient's compact UTF-8 JSON, as the request will carry it; raises _MappingError
        if it is not strict JSON.

        The one serialisation per recipient is also the strictness check: `dumps_strict` refuses
        non-finite numbers and lone surrogates (ValueErrors). Only a failure pays for the walk
        that names the field. The schedule needs no check: its time is re-formatted from a parsed
        datetime, so it is always plain ASCII.
        """
        try:
            return dumps_strict(recipient)
        except ValueError:
            raise _MappingError(*self._strictness_problem(recipient)) from None

    def _strictness_problem(self, recipient: JSONObject) -> tuple[str, str]:
        """(field, why) of the first part of `recipient` that is not strict JSON."""
        for name, value in recipient.items():
            problem = strict_json_problem(value)
            if problem is not None:
                return self._field_name(name) + problem[0], problem[1]
        return "recipient", "not strict JSON"  # not reached: the walk finds what failed

    def _field_name(self, recipient_field: str) -> str:
        """A recipient field as the rule file names it (`properties`, not `context`)."""
        if recipient_field == self.properties_field:
            return "properties"
        if recipient_field == "attributes":
            return "attributes"
        return f"recipient.{recipient_field}"


def _required_string(template: Template, document: JSONObject, field: str) -> str:
    try:
        value = template.render(document)
    except ExpressionError as exc:
        raise _MappingError(field, str(exc)) from exc
    except _NOT_FINITE_ERRORS as exc:
        raise _MappingError(field, NOT_FINITE) from exc
    if value is NOTHING:
        raise _MappingError(field, f"{field} is required but its expression found no value")
    if not isinstance(value, str) or not value:
        kind = "an empty string" if value == "" else f"a {type(value).__name__}"
        hint = " (use to_string(...) in the expression)" if not isinstance(value, str) else ""
        raise _MappingError(field, f"{field} must be a non-empty string, got {kind}{hint}")
    return value


def _render_object(template: ObjectTemplate, document: JSONObject, field: str) -> JSONObject:
    try:
        return template.render(document)
    except ExpressionError as exc:
        raise _MappingError(field, str(exc)) from exc
    except _NOT_FINITE_ERRORS as exc:
        raise _MappingError(_failing_part(template, document, field), NOT_FINITE) from exc


def _failing_part(template: Template, document: JSONObject, where: str) -> str:
    """The path of the innermost part of `template` whose rendering fails on a non-finite number.

    Renders the parts again, one by one (rendering is pure): paid only by an event that fails.
    """
    parts: list[tuple[str, Template]]
    if isinstance(template, ObjectTemplate):
        parts = [(f"{where}.{key}", part) for key, part in template.items]
    elif isinstance(template, ListTemplate):
        parts = [(f"{where}[{index}]", part) for index, part in enumerate(template.items)]
    else:
        return where
    for path, part in parts:
        if _fails_on_non_finite(part, document):
            return _failing_part(part, document, path)
    return where


def _fails_on_non_finite(template: Template, document: JSONObject) -> bool:
    try:
        template.render(document)
    except _NOT_FINITE_ERRORS:
        return True
    except ExpressionError:
        pass  # not reached for parts before the failing one: they rendered the first time
    return False


def _check_size(properties: JSONValue) -> None:
    size = len(canonical_json(properties).encode("utf-8"))
    if size > MAX_PROPERTIES_BYTES:
        message = f"properties are {size} bytes, over Braze's limit of {MAX_PROPERTIES_BYTES}"
        raise _MappingError("properties", message, reason=Reason.TOO_LARGE)


def _event_time_ms(value: JSONValue) -> int:
    """An ISO 8601 string, or a number of epoch milliseconds; raises _MappingError."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return int(value)
    if isinstance(value, str):
        try:
            return epoch_ms(parse_iso8601(value))
        except (ValueError, OverflowError) as exc:
            raise _MappingError("event_time", str(exc)) from exc
    kind = "no value" if value is None else f"a {type(value).__name__}"
    raise _MappingError("event_time", f"event_time must be ISO 8601 text or epoch ms, got {kind}")
