"""Braze's limits, one home: the rules, the batcher and the contract agree at every boundary."""

from __future__ import annotations

import json

import pytest

from consumer.batching import Batch, Batcher, envelope_bytes
from consumer.braze import limits
from consumer.braze.contract import TOO_MANY_RECIPIENTS, validate_request
from consumer.braze.limits import (
    BATCH_TARGET_BYTES,
    MAX_PROPERTIES_BYTES,
    MAX_RECIPIENT_BYTES,
    MAX_RECIPIENTS_PER_REQUEST,
    MAX_REQUEST_BYTES,
    MAX_SEND_ID_CHARS,
    REQUEST_ENVELOPE_BYTES,
)
from consumer.events import Event, KafkaMeta, RawMessage, decode
from consumer.intents import BatchKey, Endpoint, MappingFailure, SendIntent
from consumer.json_types import JSONObject
from consumer.reasons import Reason
from consumer.rules import RulesTable, load_rules_text

NOW_MS = 1_714_558_000_000
RULES = """\
rules:
  - id: r
    topics: [t]
    {target}
    recipient: {{external_user_id: "{{{{ user }}}}"}}
    properties: {{blob: "{{{{ blob }}}}"}}
"""
TARGETS = [
    pytest.param("canvas: {id: c-1}", id="canvas context"),
    pytest.param("campaign: {id: k-1}", id="campaign trigger_properties"),
]
# `{"blob":""}`: what the properties weigh around the blob itself.
BLOB_OVERHEAD = len(b'{"blob":""}')


def table(target: str = "canvas: {id: c-1}") -> RulesTable:
    return load_rules_text(RULES.format(target=target))


def event(document: JSONObject) -> Event:
    decoded = decode(
        RawMessage(KafkaMeta("t", 0, 0, timestamp_ms=NOW_MS), json.dumps(document).encode())
    )
    assert isinstance(decoded, Event)
    return decoded


def blob_of(size_bytes: int, char: str) -> str:
    """A string of exactly `size_bytes` UTF-8 bytes, mostly `char` (padded with ASCII)."""
    width = len(char.encode("utf-8"))
    return char * (size_bytes // width) + "x" * (size_bytes % width)


def test_the_documented_figures() -> None:
    # braze-api.md §3 (S1, S2, L), §2.5 (O4, O5), §1.1 (I), §5 (L, R).
    assert MAX_RECIPIENTS_PER_REQUEST == 50
    assert MAX_REQUEST_BYTES == 4 * 1024 * 1024
    assert MAX_PROPERTIES_BYTES == 50 * 1024
    assert MAX_SEND_ID_CHARS == 64
    assert limits.DEFAULT_REQUESTS_PER_HOUR == 250_000


def test_our_margins_stay_inside_brazes_limits() -> None:
    assert MAX_RECIPIENT_BYTES + REQUEST_ENVELOPE_BYTES == MAX_REQUEST_BYTES
    assert BATCH_TARGET_BYTES < 4_000_000 < MAX_REQUEST_BYTES  # both readings of "4 MB"
    assert MAX_PROPERTIES_BYTES < MAX_RECIPIENT_BYTES


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("char", ["x", "é", "😀"], ids=["ascii", "2-byte", "4-byte"])
def test_properties_of_exactly_the_limit_pass_the_rules_and_the_contract(
    target: str, char: str
) -> None:
    rules = table(target)
    blob = blob_of(MAX_PROPERTIES_BYTES - BLOB_OVERHEAD, char)
    (outcome,) = rules.evaluate(event({"user": "u", "blob": blob}), NOW_MS)
    assert isinstance(outcome, SendIntent), outcome
    body = outcome.key.request_body([outcome.recipient])
    assert validate_request(outcome.key.endpoint, body) == []


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("char", ["x", "é", "😀"], ids=["ascii", "2-byte", "4-byte"])
def test_one_byte_more_fails_the_rules_and_the_contract(target: str, char: str) -> None:
    rules = table(target)
    blob = blob_of(MAX_PROPERTIES_BYTES - BLOB_OVERHEAD + 1, char)
    (outcome,) = rules.evaluate(event({"user": "u", "blob": blob}), NOW_MS)
    assert isinstance(outcome, MappingFailure)
    assert (outcome.field, outcome.reason) == ("properties", Reason.TOO_LARGE)
    # The same recipient, built by hand, is what the contract (and the emulator) refuses.
    endpoint = Endpoint.CANVAS_SEND if target.startswith("canvas") else Endpoint.CAMPAIGN_SEND
    recipient: JSONObject = {"external_user_id": "u", endpoint.properties_field: {"blob": blob}}
    body = BatchKey(endpoint, "x").request_body([recipient])
    problems = validate_request(endpoint, body)
    assert problems == [
        f"recipients[0].{endpoint.properties_field} exceeds {MAX_PROPERTIES_BYTES} bytes"
    ]


def full_batch(count: int) -> Batch[int]:
    rules = table()
    batcher: Batcher[int] = Batcher(MAX_RECIPIENTS_PER_REQUEST, 500)
    emitted: list[Batch[int]] = []
    for n in range(count):
        (outcome,) = rules.evaluate(event({"user": f"u-{n}", "blob": "b"}), NOW_MS)
        assert isinstance(outcome, SendIntent)
        emitted += batcher.add(outcome, n, now_ms=0)
    return emitted[0]


def test_a_full_batch_is_as_many_recipients_as_the_contract_takes() -> None:
    batch = full_batch(MAX_RECIPIENTS_PER_REQUEST)
    assert len(batch.items) == MAX_RECIPIENTS_PER_REQUEST
    body = batch.key.request_body(batch.recipients)
    assert validate_request(batch.key.endpoint, body) == []
    one_more = batch.key.request_body([*batch.recipients, {"external_user_id": "extra"}])
    assert validate_request(batch.key.endpoint, one_more) == [TOO_MANY_RECIPIENTS]
    with pytest.raises(ValueError, match="max_recipients"):
        Batcher[int](MAX_RECIPIENTS_PER_REQUEST + 1, 500)


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(BatchKey(Endpoint.CANVAS_SEND, "0" * 36), id="canvas send"),
        pytest.param(
            BatchKey(
                Endpoint.CAMPAIGN_SCHEDULE_CREATE,
                "0" * 36,
                send_id="s" * MAX_SEND_ID_CHARS,
                schedule_json='{"at_optimal_time":false,"in_local_time":true,'
                '"time":"2030-01-01T09:00:00"}',
            ),
            id="campaign schedule with the longest send_id",
        ),
    ],
)
def test_a_recipient_of_the_largest_size_still_fits_a_request_alone(key: BatchKey) -> None:
    # What the batcher counts around the recipients (with its slack for the client's additions)
    # fits the envelope the too-large threshold leaves: only a bigger recipient fits no request.
    assert envelope_bytes(key) <= REQUEST_ENVELOPE_BYTES
    assert envelope_bytes(key) + MAX_RECIPIENT_BYTES <= MAX_REQUEST_BYTES
