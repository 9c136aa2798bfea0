"""The rules file schema (pydantic, strict): the edge where YAML becomes typed rule specs.

Shapes and types are checked here; expressions, conditions and durations are compiled afterwards
(`load.py`) so that each problem keeps its exact location in the file.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Annotated, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from consumer.yaml_lines import Loc

Issue: TypeAlias = tuple[Loc, str]  # (location in the file's document, message)

NonEmptyStr = Annotated[str, StringConstraints(min_length=1)]
# Rule ids appear in metric labels, logs and DLQ headers: keep them plain.
RuleId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
# Braze: a send_id is ASCII, at most 64 characters.
SendId = Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e]{1,64}$")]
Prioritization = Literal[
    "identified", "unidentified", "most_recently_updated", "least_recently_updated"
]
IDENTIFIERS = ("external_user_id", "user_alias", "email", "braze_id")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class CanvasSpec(_Spec):
    id: NonEmptyStr


class CampaignSpec(_Spec):
    id: NonEmptyStr
    send_id: SendId | None = None


class UserAliasSpec(_Spec):
    alias_name: NonEmptyStr
    alias_label: NonEmptyStr


class RecipientSpec(_Spec):
    """Exactly one identifier; each value may be a `{{ }}` template."""

    external_user_id: NonEmptyStr | None = None
    user_alias: UserAliasSpec | None = None
    email: NonEmptyStr | None = None
    braze_id: NonEmptyStr | None = None
    prioritization: Annotated[list[Prioritization], Field(min_length=1)] | None = None


class ScheduleSpec(_Spec):
    time: NonEmptyStr
    in_local_time: bool | None = None
    at_optimal_time: bool | None = None


class RuleSpec(_Spec):
    id: RuleId
    description: str | None = None
    topics: Annotated[list[NonEmptyStr], Field(min_length=1)]
    when: dict[str, object] = Field(default_factory=dict)
    canvas: CanvasSpec | None = None
    campaign: CampaignSpec | None = None
    recipient: RecipientSpec
    send_to_existing_only: bool | None = None
    properties: dict[str, object] | None = None
    attributes: dict[str, object] | None = None
    schedule: ScheduleSpec | None = None
    max_event_age: NonEmptyStr | None = None
    event_time: NonEmptyStr | None = None  # a path to the event's own time, for max_event_age


def cross_field_issues(raw: Mapping[object, object]) -> Iterator[Issue]:
    """Rules that span several keys, checked on the raw mapping so they are reported even when
    pydantic finds other errors in the same rule."""
    if ("canvas" in raw) == ("campaign" in raw):
        which = "both" if "canvas" in raw else "neither"
        yield (), f"a rule needs exactly one of `canvas` or `campaign`, found {which}"
    recipient = raw.get("recipient")
    if isinstance(recipient, Mapping):
        yield from _recipient_issues(recipient)
        if raw.get("send_to_existing_only") is False:
            if "attributes" not in raw:
                yield (
                    ("send_to_existing_only",),
                    "`send_to_existing_only: false` needs `attributes`",
                )
            if "user_alias" in recipient:
                yield (
                    ("send_to_existing_only",),
                    "`send_to_existing_only: false` is not allowed with a `user_alias` recipient",
                )
    schedule = raw.get("schedule")
    if (
        isinstance(schedule, Mapping)
        and schedule.get("in_local_time") is True
        and schedule.get("at_optimal_time") is True
    ):
        yield ("schedule",), "use `in_local_time` or `at_optimal_time`, not both"


def _recipient_issues(recipient: Mapping[object, object]) -> Iterator[Issue]:
    found = [name for name in IDENTIFIERS if name in recipient]
    if len(found) != 1:
        names = ", ".join(found) if found else "none"
        yield (
            ("recipient",),
            f"a recipient needs exactly one of {', '.join(IDENTIFIERS)} (found: {names})",
        )
    if "email" in recipient and "prioritization" not in recipient:
        yield ("recipient", "email"), "an `email` recipient needs `prioritization`"
    if "prioritization" in recipient and "email" not in recipient:
        yield ("recipient", "prioritization"), "`prioritization` is only for `email` recipients"
    order = recipient.get("prioritization")
    if isinstance(order, list) and "identified" in order and "unidentified" in order:
        yield (
            ("recipient", "prioritization"),
            "`prioritization` may hold only one of `identified` and `unidentified`",
        )
