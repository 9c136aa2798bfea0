"""The Braze request contract: one row per rule, valid and invalid, plus the documented examples."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from consumer.braze.contract import (
    NO_RECIPIENTS,
    TOO_MANY_RECIPIENTS,
    properties_size_bytes,
    validate_request,
)
from consumer.braze.limits import MAX_PROPERTIES_BYTES, MAX_RECIPIENTS_PER_REQUEST
from consumer.intents import SEND_ENDPOINTS, Endpoint

E = Endpoint
DROP = object()  # a field value meaning "leave this field out"
USER = {"external_user_id": "u-1"}
SCHEDULE = {"time": "2031-05-01T10:00:00Z"}
NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)


def body(endpoint: Endpoint, **fields: object) -> dict[str, object]:
    """A valid body for `endpoint`, with `fields` replaced (or removed with DROP)."""
    base: dict[str, object] = {endpoint.target_field: "target-1"}
    if endpoint in SEND_ENDPOINTS:
        base["recipients"] = [dict(USER)]
    if endpoint.name.endswith(("SCHEDULE_CREATE", "SCHEDULE_UPDATE")):
        base["schedule"] = dict(SCHEDULE)
    if endpoint.name.endswith(("SCHEDULE_UPDATE", "SCHEDULE_DELETE")):
        base["schedule_id"] = "schedule-1"
    for name, value in fields.items():
        if value is DROP:
            base.pop(name, None)
        else:
            base[name] = value
    return base


def camp(**fields: object) -> dict[str, object]:
    return body(E.CAMPAIGN_SEND, **fields)


def canvas(**fields: object) -> dict[str, object]:
    return body(E.CANVAS_SEND, **fields)


def one(**recipient: object) -> list[object]:
    """A recipients array holding one recipient."""
    return [recipient]


def blob(size_bytes: int, char: str = "x") -> dict[str, object]:
    """An object whose compact UTF-8 JSON is exactly `size_bytes` long (for 1-byte `char`)."""
    return {"k": char * (size_bytes - len('{"k":""}'))}


AUDIENCE_EXAMPLE = {
    "AND": [
        {
            "custom_attribute": {
                "custom_attribute_name": "eye_color",
                "comparison": "equals",
                "value": "blue",
            }
        },
        {
            "custom_attribute": {
                "custom_attribute_name": "favorite_foods",
                "comparison": "includes_value",
                "value": "pizza",
            }
        },
        {
            "OR": [
                {
                    "custom_attribute": {
                        "custom_attribute_name": "last_purchase_time",
                        "comparison": "less_than_x_days_ago",
                        "value": 2,
                    }
                },
                {"push_subscription_status": {"comparison": "is", "value": "opted_in"}},
            ]
        },
        {"email_subscription_status": {"comparison": "is_not", "value": "subscribed"}},
        {"last_used_app": {"comparison": "after", "value": "2019-07-22T13:17:55+0000"}},
    ]
}

# The example requests of the Braze endpoint pages, placeholders filled in (the campaign page's
# example names both user_alias and external_user_id in one recipient; each is kept in its own).
DOCUMENTED_EXAMPLES = [
    pytest.param(
        E.CAMPAIGN_SEND,
        {
            "campaign_id": "campaign_identifier",
            "send_id": "send_identifier",
            "trigger_properties": {"coupon": "SPRING"},
            "broadcast": False,
            "audience": AUDIENCE_EXAMPLE,
            "recipients": [
                {
                    "user_alias": {"alias_name": "example_name", "alias_label": "example_label"},
                    "trigger_properties": {"size": 42},
                    "send_to_existing_only": True,
                    "attributes": {"first_name": "Alex"},
                },
                {
                    "external_user_id": "external_user_identifier",
                    "trigger_properties": {},
                    "send_to_existing_only": False,
                    "attributes": {"first_name": "Alex"},
                },
            ],
            "attachments": [{"file_name": "terms", "url": "https://example.com/terms.pdf"}],
        },
        id="campaign send",
    ),
    pytest.param(
        E.CANVAS_SEND,
        {
            "canvas_id": "canvas_identifier",
            "context": {"product_name": "shoes", "product_price": 79.99},
            "broadcast": False,
            "audience": AUDIENCE_EXAMPLE,
            "recipients": [
                {
                    "user_alias": {"alias_name": "example_name", "alias_label": "example_label"},
                    "context": {"product_name": "socks"},
                    "send_to_existing_only": True,
                    "attributes": {"first_name": "Alex"},
                },
                {
                    "email": "alex@example.com",
                    "prioritization": ["unidentified", "most_recently_updated"],
                },
                {"braze_id": "68e8c6b1e7b4b6001f7d2a7e"},
            ],
        },
        id="canvas send",
    ),
    pytest.param(
        E.CANVAS_SEND,
        {
            "canvas_id": "canvas_identifier",
            "canvas_entry_properties": {"product_name": "shoes"},
            "recipients": [{"external_user_id": "u-1", "canvas_entry_properties": {"n": 1}}],
        },
        id="canvas send with legacy canvas_entry_properties",
    ),
    pytest.param(
        E.CAMPAIGN_SCHEDULE_CREATE,
        {
            "campaign_id": "campaign_identifier",
            "send_id": "send_identifier",
            "recipients": [
                {
                    "user_alias": {"alias_name": "example_name", "alias_label": "example_label"},
                    "trigger_properties": {"k": "v"},
                }
            ],
            "audience": AUDIENCE_EXAMPLE,
            "broadcast": False,
            "trigger_properties": {"k": "top"},
            "schedule": {
                "time": "2017-05-24T20:30:36Z",
                "in_local_time": True,
                "at_optimal_time": False,
            },
        },
        id="campaign schedule create",
    ),
    pytest.param(
        E.CANVAS_SCHEDULE_CREATE,
        {
            "canvas_id": "canvas_identifier",
            "recipients": [{"external_user_id": "user_identifier", "context": {"k": "v"}}],
            "audience": AUDIENCE_EXAMPLE,
            "broadcast": False,
            "context": {"k": "top"},
            "schedule": {
                "time": "2017-05-24T20:30:36",
                "in_local_time": False,
                "at_optimal_time": False,
            },
        },
        id="canvas schedule create",
    ),
    pytest.param(
        E.CAMPAIGN_SCHEDULE_UPDATE,
        {
            "campaign_id": "campaign_identifier",
            "schedule_id": "schedule_identifier",
            "schedule": {"time": "2017-05-24T21:30:00Z", "in_local_time": True},
        },
        id="campaign schedule update",
    ),
    pytest.param(
        E.CANVAS_SCHEDULE_UPDATE,
        {
            "canvas_id": "canvas_identifier",
            "schedule_id": "schedule_identifier",
            "schedule": {"time": "2017-05-24T21:30:00Z", "in_local_time": True},
        },
        id="canvas schedule update",
    ),
    pytest.param(
        E.CAMPAIGN_SCHEDULE_DELETE,
        {"campaign_id": "campaign_identifier", "schedule_id": "schedule_identifier"},
        id="campaign schedule delete",
    ),
    pytest.param(
        E.CANVAS_SCHEDULE_DELETE,
        {"canvas_id": "canvas_identifier", "schedule_id": "schedule_identifier"},
        id="canvas schedule delete",
    ),
    pytest.param(
        E.SEND_ID_CREATE,
        {"campaign_id": "campaign_identifier", "send_id": "send_identifier"},
        id="send id create",
    ),
]


@pytest.mark.parametrize(("endpoint", "request_body"), DOCUMENTED_EXAMPLES)
def test_documented_examples_are_accepted(endpoint: Endpoint, request_body: object) -> None:
    assert validate_request(endpoint, request_body) == []


def deep(levels: int) -> dict[str, object]:
    """A connected audience nested `levels` deep (the filter itself is the last level)."""
    node: dict[str, object] = {
        "push_subscription_status": {"comparison": "is", "value": "opted_in"}
    }
    for _ in range(levels - 1):
        node = {"OR": [node]}
    return node


def attribute_filter(comparison: str, value: object = DROP) -> dict[str, object]:
    spec: dict[str, object] = {"custom_attribute_name": "a", "comparison": comparison}
    if value is not DROP:
        spec["value"] = value
    return {"custom_attribute": spec}


ALIAS = {"alias_name": "n", "alias_label": "l"}
EMAIL = {"email": "a@example.com", "prioritization": ["identified"]}
FIFTY = [{"external_user_id": f"u-{n}"} for n in range(MAX_RECIPIENTS_PER_REQUEST)]

VALID = [
    pytest.param(E.CAMPAIGN_SEND, camp(), id="one external_user_id"),
    pytest.param(E.CAMPAIGN_SEND, camp(recipients=FIFTY), id="exactly 50 recipients"),
    pytest.param(E.CAMPAIGN_SEND, camp(recipients=DROP, broadcast=True), id="broadcast alone"),
    pytest.param(
        E.CANVAS_SEND,
        canvas(recipients=DROP, broadcast=True, audience=AUDIENCE_EXAMPLE),
        id="broadcast with audience",
    ),
    pytest.param(E.CANVAS_SEND, canvas(audience=deep(3)), id="recipients with audience"),
    pytest.param(E.CAMPAIGN_SEND, camp(broadcast=False), id="broadcast false with recipients"),
    pytest.param(E.CAMPAIGN_SEND, camp(recipients=one(user_alias=ALIAS)), id="user_alias"),
    pytest.param(E.CAMPAIGN_SEND, camp(recipients=one(braze_id="b-1")), id="braze_id"),
    pytest.param(E.CAMPAIGN_SEND, camp(recipients=[EMAIL]), id="email with prioritization"),
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(
            recipients=one(
                email="a@example.com",
                prioritization=["unidentified", "least_recently_updated", "most_recently_updated"],
            )
        ),
        id="prioritization with every ordering value",
    ),
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(recipients=one(external_user_id="u", prioritization=["identified"])),
        id="prioritization without email",
    ),
    pytest.param(
        E.CANVAS_SEND,
        canvas(
            recipients=one(
                external_user_id="u",
                send_to_existing_only=False,
                attributes={"gender": None, "dob": "1990-02-28", "email_subscribe": "opted_in"},
            )
        ),
        id="send_to_existing_only false with attributes",
    ),
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(recipients=one(user_alias=ALIAS, send_to_existing_only=True)),
        id="send_to_existing_only true with user_alias",
    ),
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(trigger_properties=blob(MAX_PROPERTIES_BYTES)),
        id="trigger_properties of exactly 50 KB",
    ),
    pytest.param(
        E.CANVAS_SEND,
        canvas(recipients=one(external_user_id="u", context=blob(MAX_PROPERTIES_BYTES))),
        id="recipient context of exactly 50 KB",
    ),
    pytest.param(E.CAMPAIGN_SEND, camp(send_id="s" * 64), id="send_id of 64 ASCII chars"),
    pytest.param(
        E.CAMPAIGN_SCHEDULE_CREATE,
        body(
            E.CAMPAIGN_SCHEDULE_CREATE,
            schedule={"time": "2030-06-01T05:00:00", "in_local_time": True},
        ),
        id="local time not yet passed everywhere",
    ),
    pytest.param(
        E.CANVAS_SCHEDULE_UPDATE,
        body(E.CANVAS_SCHEDULE_UPDATE, schedule={"time": "2031-01-01", "at_optimal_time": True}),
        id="optimal time on a date",
    ),
    pytest.param(E.SEND_ID_CREATE, {"campaign_id": "c"}, id="send id create without send_id"),
    pytest.param(E.CAMPAIGN_SEND, camp(attachments=[]), id="empty attachments"),
    pytest.param(
        E.CANVAS_SEND, canvas(audience=attribute_filter("exists")), id="exists without value"
    ),
    pytest.param(
        E.CANVAS_SEND,
        canvas(audience=attribute_filter("does_not_equal", value=True)),
        id="older boolean comparison does_not_equal",
    ),
    pytest.param(
        E.CANVAS_SEND,
        canvas(audience=attribute_filter("before", value="2024-01-01T00:00:00Z")),
        id="time comparison before",
    ),
    pytest.param(E.CANVAS_SEND, canvas(audience=deep(16)), id="audience at the depth limit"),
]


@pytest.mark.parametrize(("endpoint", "request_body"), VALID)
def test_valid_requests(endpoint: Endpoint, request_body: object) -> None:
    assert validate_request(endpoint, request_body, now=NOW) == []


INVALID = [
    # --- the body and its top-level fields
    pytest.param(E.CAMPAIGN_SEND, [], "must be a JSON object", id="body not an object"),
    pytest.param(E.CAMPAIGN_SEND, camp(foo=1), "Unknown field 'foo'", id="unknown top-level field"),
    pytest.param(
        E.CANVAS_SEND, canvas(send_id="s"), "Unknown field 'send_id'", id="canvas send_id"
    ),
    pytest.param(
        E.CANVAS_SEND,
        canvas(trigger_properties={}),
        "Unknown field 'trigger_properties'",
        id="campaign properties on a canvas",
    ),
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(context={}),
        "Unknown field 'context'",
        id="canvas context on a campaign",
    ),
    pytest.param(
        E.CAMPAIGN_SCHEDULE_UPDATE,
        body(E.CAMPAIGN_SCHEDULE_UPDATE, recipients=[USER]),
        "Unknown field 'recipients'",
        id="schedule update with recipients",
    ),
    pytest.param(
        E.SEND_ID_CREATE,
        {"campaign_id": "c", "recipients": []},
        "Unknown field",
        id="send id create extra",
    ),
    # --- ids
    pytest.param(
        E.CAMPAIGN_SEND, camp(campaign_id=DROP), "campaign_id is required", id="no campaign_id"
    ),
    pytest.param(E.CANVAS_SEND, canvas(canvas_id=DROP), "canvas_id is required", id="no canvas_id"),
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(campaign_id=7),
        "campaign_id must be a string of the campaign api identifier",
        id="campaign_id not a string",
    ),
    pytest.param(
        E.CANVAS_SEND, canvas(canvas_id=""), "canvas_id must be a string", id="empty canvas_id"
    ),
    pytest.param(
        E.CAMPAIGN_SEND, camp(send_id="s" * 65), "send_id must be", id="send_id of 65 chars"
    ),
    pytest.param(E.CAMPAIGN_SEND, camp(send_id="sénd"), "send_id must be", id="send_id not ASCII"),
    pytest.param(
        E.SEND_ID_CREATE, {"campaign_id": "c", "send_id": 5}, "send_id must be", id="send_id int"
    ),
    pytest.param(
        E.CANVAS_SCHEDULE_DELETE,
        body(E.CANVAS_SCHEDULE_DELETE, schedule_id=DROP),
        "schedule_id is required",
        id="delete without schedule_id",
    ),
    pytest.param(
        E.CAMPAIGN_SCHEDULE_UPDATE,
        body(E.CAMPAIGN_SCHEDULE_UPDATE, schedule_id=["x"]),
        "schedule_id must be a non-empty string",
        id="schedule_id not a string",
    ),
    # --- schedule
    pytest.param(
        E.CANVAS_SCHEDULE_CREATE,
        body(E.CANVAS_SCHEDULE_CREATE, schedule=DROP),
        "schedule is required",
        id="create without schedule",
    ),
    pytest.param(
        E.CANVAS_SCHEDULE_UPDATE,
        body(E.CANVAS_SCHEDULE_UPDATE, schedule="2030-01-01"),
        "schedule must be an object",
        id="schedule not an object",
    ),
    pytest.param(
        E.CAMPAIGN_SCHEDULE_CREATE,
        body(E.CAMPAIGN_SCHEDULE_CREATE, schedule={"in_local_time": False}),
        "schedule.time is required",
        id="schedule without time",
    ),
    pytest.param(
        E.CAMPAIGN_SCHEDULE_CREATE,
        body(E.CAMPAIGN_SCHEDULE_CREATE, schedule={"time": "tomorrow"}),
        "could not be parsed",
        id="schedule time unparseable",
    ),
    pytest.param(
        E.CAMPAIGN_SCHEDULE_CREATE,
        body(E.CAMPAIGN_SCHEDULE_CREATE, schedule={"time": 1700000000}),
        "could not be parsed",
        id="schedule time a number",
    ),
    pytest.param(
        E.CAMPAIGN_SCHEDULE_CREATE,
        body(E.CAMPAIGN_SCHEDULE_CREATE, schedule={**SCHEDULE, "in_local_time": "yes"}),
        "schedule.in_local_time must be a boolean",
        id="in_local_time not a boolean",
    ),
    pytest.param(
        E.CAMPAIGN_SCHEDULE_CREATE,
        body(E.CAMPAIGN_SCHEDULE_CREATE, schedule={**SCHEDULE, "at_optimal_time": 1}),
        "schedule.at_optimal_time must be a boolean",
        id="at_optimal_time not a boolean",
    ),
    pytest.param(
        E.CAMPAIGN_SCHEDULE_CREATE,
        body(
            E.CAMPAIGN_SCHEDULE_CREATE,
            schedule={**SCHEDULE, "in_local_time": True, "at_optimal_time": True},
        ),
        "cannot both be true",
        id="local and optimal time together",
    ),
    pytest.param(
        E.CAMPAIGN_SCHEDULE_CREATE,
        body(E.CAMPAIGN_SCHEDULE_CREATE, schedule={**SCHEDULE, "timezone": "UTC"}),
        "schedule: unknown field 'timezone'",
        id="unknown schedule field",
    ),
    pytest.param(
        E.CAMPAIGN_SCHEDULE_CREATE,
        body(
            E.CAMPAIGN_SCHEDULE_CREATE,
            schedule={"time": "2030-05-31T23:00:00", "in_local_time": True},
        ),
        "already passed in all time zones",
        id="local time passed everywhere",
    ),
    # --- broadcast and recipients
    pytest.param(
        E.CAMPAIGN_SEND, camp(broadcast="true"), "broadcast must be a boolean", id="broadcast str"
    ),
    pytest.param(
        E.CAMPAIGN_SEND, camp(recipients=[*FIFTY, USER]), TOO_MANY_RECIPIENTS, id="51 recipients"
    ),
    pytest.param(
        E.CANVAS_SEND,
        canvas(broadcast=True),
        "recipients must not be given when broadcast is true",
        id="broadcast with recipients",
    ),
    pytest.param(
        E.CAMPAIGN_SEND, camp(recipients=DROP), NO_RECIPIENTS, id="neither broadcast nor recipients"
    ),
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(recipients=DROP, broadcast=False),
        NO_RECIPIENTS,
        id="broadcast false alone",
    ),
    pytest.param(
        E.CANVAS_SEND,
        canvas(recipients=DROP, audience=AUDIENCE_EXAMPLE),
        NO_RECIPIENTS,
        id="audience without broadcast",
    ),
    pytest.param(E.CAMPAIGN_SEND, camp(recipients=[]), NO_RECIPIENTS, id="empty recipients"),
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(recipients=USER),
        "recipients must be an array",
        id="recipients object",
    ),
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(recipients=["u-1"]),
        "recipients[0] must be an object",
        id="recipient str",
    ),
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(recipients=one(external_user_id="u", nickname="x")),
        "recipients[0]: unknown field 'nickname'",
        id="unknown recipient field",
    ),
    pytest.param(
        E.CANVAS_SEND,
        canvas(recipients=one(external_user_id="u", trigger_properties={})),
        "unknown field 'trigger_properties'",
        id="campaign properties in a canvas recipient",
    ),
    # --- recipient identifiers
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(recipients=one(attributes={})),
        "exactly one of external_user_id",
        id="recipient without identifier",
    ),
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(recipients=one(external_user_id="u", user_alias=ALIAS)),
        "exactly one of external_user_id",
        id="recipient with two identifiers",
    ),
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(recipients=one(external_user_id=12)),
        "recipients[0].external_user_id must be a non-empty string",
        id="external_user_id not a string",
    ),
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(recipients=one(braze_id="")),
        "recipients[0].braze_id must be",
        id="empty braze_id",
    ),
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(recipients=one(email="nobody", prioritization=["identified"])),
        "is not an email address",
        id="email without @",
    ),
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(recipients=one(user_alias="n:l")),
        "user_alias must be an object",
        id="user_alias not an object",
    ),
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(recipients=one(user_alias={"alias_name": "n"})),
        "user_alias.alias_label must be a non-empty string",
        id="user_alias without label",
    ),
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(recipients=one(user_alias={"alias_name": "", "alias_label": "l"})),
        "user_alias.alias_name must be a non-empty string",
        id="user_alias empty name",
    ),
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(recipients=one(user_alias={**ALIAS, "alias_id": "x"})),
        "user_alias: unknown field 'alias_id'",
        id="user_alias extra field",
    ),
    # --- prioritization
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(recipients=one(email="a@example.com")),
        "prioritization is required with email",
        id="email without prioritization",
    ),
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(recipients=[{**EMAIL, "prioritization": "identified"}]),
        "prioritization must be a non-empty array",
        id="prioritization not an array",
    ),
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(recipients=[{**EMAIL, "prioritization": []}]),
        "prioritization must be a non-empty array",
        id="prioritization empty",
    ),
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(recipients=[{**EMAIL, "prioritization": ["newest"]}]),
        'unknown value "newest"',
        id="prioritization unknown value",
    ),
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(recipients=[{**EMAIL, "prioritization": [{"x": 1}]}]),
        "unknown value",
        id="prioritization value an object",
    ),
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(recipients=[{**EMAIL, "prioritization": ["identified", "identified"]}]),
        "repeated value",
        id="prioritization repeated",
    ),
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(recipients=[{**EMAIL, "prioritization": ["identified", "unidentified"]}]),
        "only one of identified, unidentified",
        id="identified and unidentified",
    ),
    # --- send_to_existing_only and attributes
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(recipients=one(external_user_id="u", send_to_existing_only="false")),
        "send_to_existing_only must be a boolean",
        id="send_to_existing_only not a boolean",
    ),
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(recipients=one(external_user_id="u", send_to_existing_only=False)),
        "send_to_existing_only false requires attributes",
        id="create user without attributes",
    ),
    pytest.param(
        E.CANVAS_SEND,
        canvas(recipients=one(user_alias=ALIAS, send_to_existing_only=False, attributes={"a": 1})),
        "not supported with user_alias",
        id="create user by alias",
    ),
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(recipients=one(external_user_id="u", attributes=[1])),
        "recipients[0].attributes must be an object",
        id="attributes not an object",
    ),
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(recipients=one(external_user_id="u", attributes={"push_subscribe": "yes"})),
        "attributes.push_subscribe must be one of",
        id="push_subscribe value",
    ),
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(recipients=one(external_user_id="u", attributes={"gender": "male"})),
        "attributes.gender must be one of",
        id="gender value",
    ),
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(recipients=one(external_user_id="u", attributes={"dob": "01/02/1990"})),
        "attributes.dob must be a YYYY-MM-DD date",
        id="dob format",
    ),
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(recipients=one(external_user_id="u", attributes={"_update_existing_only": "no"})),
        "attributes._update_existing_only must be a boolean",
        id="update_existing_only not a boolean",
    ),
    # --- properties (trigger_properties / context / canvas_entry_properties)
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(trigger_properties=""),
        "trigger_properties must be an object",
        id="trigger_properties not an object",
    ),
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(trigger_properties=blob(MAX_PROPERTIES_BYTES + 1)),
        "trigger_properties exceeds 51200 bytes",
        id="trigger_properties over 50 KB",
    ),
    pytest.param(
        E.CAMPAIGN_SCHEDULE_CREATE,
        body(
            E.CAMPAIGN_SCHEDULE_CREATE,
            recipients=one(external_user_id="u", trigger_properties=blob(51201)),
        ),
        "recipients[0].trigger_properties exceeds",
        id="recipient trigger_properties over 50 KB",
    ),
    pytest.param(
        E.CANVAS_SEND,
        canvas(context={"k": "é" * 25597}),
        "context exceeds",
        id="context over 50 KB in UTF-8 bytes, not characters",
    ),
    pytest.param(
        E.CANVAS_SCHEDULE_CREATE,
        body(E.CANVAS_SCHEDULE_CREATE, canvas_entry_properties=blob(51201)),
        "canvas_entry_properties exceeds",
        id="legacy canvas_entry_properties over 50 KB",
    ),
    pytest.param(
        E.CANVAS_SEND,
        canvas(recipients=one(external_user_id="u", context=["x"])),
        "recipients[0].context must be an object",
        id="recipient context not an object",
    ),
    pytest.param(
        E.CANVAS_SEND,
        canvas(context={}, canvas_entry_properties={}),
        "cannot both be given",
        id="context and canvas_entry_properties together",
    ),
    # --- attachments
    pytest.param(
        E.CANVAS_SEND,
        canvas(attachments=[]),
        "Unknown field 'attachments'",
        id="attachments on a canvas",
    ),
    pytest.param(
        E.CAMPAIGN_SCHEDULE_CREATE,
        body(E.CAMPAIGN_SCHEDULE_CREATE, attachments=[]),
        "Unknown field 'attachments'",
        id="attachments on a schedule",
    ),
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(recipients=DROP, broadcast=True, attachments=[]),
        "not allowed when broadcast is true",
        id="attachments with broadcast",
    ),
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(attachments={}),
        "attachments must be an array",
        id="attachments object",
    ),
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(attachments=["a.pdf"]),
        "attachments[0] must be an object",
        id="attachment not an object",
    ),
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(attachments=[{"url": "https://example.com/a.pdf"}]),
        "attachments[0].file_name must be",
        id="attachment without file_name",
    ),
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(attachments=[{"file_name": "a"}]),
        "attachments[0].url must be",
        id="attachment without url",
    ),
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(attachments=[{"file_name": "a", "url": "ftp://example.com/a"}]),
        "attachments[0].url must be an http(s) URL",
        id="attachment url not http",
    ),
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(attachments=[{"file_name": "a", "url": "https://e.com/a", "size": 1}]),
        "attachments[0]: unknown field 'size'",
        id="attachment extra field",
    ),
    # --- connected audience
    pytest.param(
        E.CANVAS_SEND, canvas(audience=[]), "audience must be an object", id="audience array"
    ),
    pytest.param(
        E.CANVAS_SEND,
        canvas(audience={"AND": [], "OR": []}),
        "exactly one key",
        id="audience two keys",
    ),
    pytest.param(
        E.CANVAS_SEND,
        canvas(audience={"AND": []}),
        "audience.AND must be a non-empty array",
        id="AND empty",
    ),
    pytest.param(
        E.CANVAS_SEND,
        canvas(audience={"OR": {}}),
        "audience.OR must be a non-empty array",
        id="OR object",
    ),
    pytest.param(
        E.CANVAS_SEND,
        canvas(audience={"segment": {"id": "s"}}),
        "unknown filter 'segment'",
        id="unknown filter",
    ),
    pytest.param(
        E.CANVAS_SEND,
        canvas(audience={"custom_attribute": "a"}),
        "audience.custom_attribute must be an object",
        id="filter not an object",
    ),
    pytest.param(
        E.CANVAS_SEND,
        canvas(audience={"custom_attribute": {"comparison": "exists"}}),
        "custom_attribute_name must be",
        id="custom attribute without name",
    ),
    pytest.param(
        E.CANVAS_SEND,
        canvas(audience=attribute_filter("contains", "x")),
        'comparison "contains" is not valid',
        id="unknown comparison",
    ),
    pytest.param(
        E.CANVAS_SEND,
        canvas(audience=attribute_filter("greater_than", "5")),
        "value does not suit comparison greater_than",
        id="numeric comparison with a string",
    ),
    pytest.param(
        E.CANVAS_SEND,
        canvas(audience=attribute_filter("less_than_x_days_ago", True)),
        "value does not suit",
        id="day count a boolean",
    ),
    pytest.param(
        E.CANVAS_SEND,
        canvas(audience=attribute_filter("exists", True)),
        "value does not suit comparison exists",
        id="exists with a value",
    ),
    pytest.param(
        E.CANVAS_SEND,
        canvas(audience=attribute_filter("equals")),
        "value does not suit comparison equals",
        id="equals without a value",
    ),
    pytest.param(
        E.CANVAS_SEND,
        canvas(audience=attribute_filter("matches_regex", 5)),
        "value does not suit",
        id="regex not a string",
    ),
    pytest.param(
        E.CANVAS_SEND,
        canvas(audience=attribute_filter("after", "last week")),
        "value does not suit",
        id="time comparison with a non-date",
    ),
    pytest.param(
        E.CANVAS_SEND,
        canvas(audience={"last_used_app": {"comparison": "equals", "value": "2024-01-01"}}),
        'comparison "equals" is not valid',
        id="last_used_app comparison",
    ),
    pytest.param(
        E.CANVAS_SEND,
        canvas(audience={"email_subscription_status": {"comparison": "is", "value": "yes"}}),
        "value does not suit comparison is",
        id="subscription status value",
    ),
    pytest.param(
        E.CANVAS_SEND,
        canvas(
            audience={"push_subscription_status": {"comparison": "equals", "value": "opted_in"}}
        ),
        "is not valid here",
        id="subscription status comparison",
    ),
    pytest.param(
        E.CANVAS_SEND,
        canvas(
            audience={"push_subscription_status": {"comparison": "is", "value": "opted_in", "x": 1}}
        ),
        "unknown field 'x'",
        id="filter extra field",
    ),
    pytest.param(
        E.CANVAS_SEND,
        canvas(audience=deep(17)),
        "nested more than 16 levels",
        id="audience too deep",
    ),
    pytest.param(
        E.CANVAS_SEND,
        canvas(recipients=one(external_user_id="u", context={"total": math.inf})),
        "not strict JSON: body.recipients[0].context.total: not a finite number",
        id="1e400 (inf) in a recipient's context",
    ),
    pytest.param(
        E.CAMPAIGN_SEND,
        camp(trigger_properties={"a": [math.nan]}),
        "not strict JSON: body.trigger_properties.a[0]: not a finite number",
        id="NaN in trigger_properties",
    ),
    pytest.param(
        E.CANVAS_SEND,
        canvas(recipients=one(external_user_id="u\ud800")),
        "not strict JSON: body.recipients[0].external_user_id: not valid Unicode",
        id="lone surrogate in an id",
    ),
    pytest.param(
        E.CANVAS_SEND,
        canvas(context={"\udc00": 1}),
        "not strict JSON: body.context.\\udc00: key is not valid Unicode",
        id="lone surrogate in a key",
    ),
]


@pytest.mark.parametrize(("endpoint", "request_body", "expected"), INVALID)
def test_invalid_requests(endpoint: Endpoint, request_body: object, expected: str) -> None:
    problems = validate_request(endpoint, request_body, now=NOW)
    # Exactly one problem: each row breaks one rule, so a rule firing elsewhere would show here.
    assert len(problems) == 1, problems
    assert expected in problems[0]


def test_every_problem_is_reported() -> None:
    request_body = camp(
        campaign_id=DROP,
        broadcast="yes",
        recipients=[{"email": "a@example.com"}, {"external_user_id": "u", "braze_id": "b"}],
    )
    problems = validate_request(E.CAMPAIGN_SEND, request_body)
    assert problems == [
        "campaign_id is required",
        "broadcast must be a boolean",
        "recipients[0]: prioritization is required with email",
        "recipients[1] must have exactly one of"
        " external_user_id, user_alias, email, braze_id (found 2)",
    ]


def test_local_time_rule_needs_a_clock() -> None:
    past = body(
        E.CANVAS_SCHEDULE_CREATE, schedule={"time": "2001-01-01T00:00:00", "in_local_time": True}
    )
    assert validate_request(E.CANVAS_SCHEDULE_CREATE, past) == []
    assert validate_request(E.CANVAS_SCHEDULE_CREATE, past, now=NOW) != []


@pytest.mark.parametrize(
    ("value", "size_bytes"),
    [
        pytest.param({}, 2, id="empty"),
        pytest.param({"a": [1, 2]}, len('{"a":[1,2]}'), id="compact separators"),
        pytest.param({"k": "é"}, len('{"k":""}') + 2, id="UTF-8 bytes"),
    ],
)
def test_properties_size_bytes(value: object, size_bytes: int) -> None:
    assert properties_size_bytes(value) == size_bytes
