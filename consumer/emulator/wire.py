"""Emulator: the JSON shapes of the control API (`/_emulator/...`), shared by server and client."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, create_model

from consumer.emulator.budget import BRAZE_REQUESTS_PER_HOUR
from consumer.emulator.faults import FaultSettings


class _Input(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _View(BaseModel):
    # Views ignore fields they do not know, so an older client can read a newer emulator.
    model_config = ConfigDict(frozen=True, extra="ignore")


# The fault model is its own wire form: a view is `FaultSettings.model_dump(mode="json")`, read
# back by `faults_view`; an update is `FaultsUpdate`, derived below field by field.


def _update_model() -> type[BaseModel]:
    """POST /_emulator/faults: each field of `FaultSettings`, optional; `seed` restarts the RNG.

    Only the fields given change. null leaves a field as it is, except for a field whose default
    is None (answer_override), which null turns off. Each field keeps its type and validation.
    """
    fields: dict[str, Any] = {
        name: (info.rebuild_annotation() | None, Field(None, description=info.description))
        for name, info in FaultSettings.model_fields.items()
    }
    fields["seed"] = (int | None, Field(None, description="restart the fault RNG with this seed"))
    model: type[BaseModel] = create_model(
        "FaultsUpdate", __config__=ConfigDict(frozen=True, extra="forbid"), **fields
    )
    model.__doc__ = _update_model.__doc__
    return model


FaultsUpdate = _update_model()
NULL_TURNS_OFF = frozenset(
    name for name, info in FaultSettings.model_fields.items() if info.default is None
)


def parse_faults_update(body: bytes) -> tuple[dict[str, Any], int | None]:
    """The changes (field -> validated value) in a POST /_emulator/faults body, and the seed."""
    update = FaultsUpdate.model_validate_json(body or b"{}")
    given = {name: getattr(update, name) for name in update.model_fields_set}
    seed: int | None = given.pop("seed", None)
    changes = {
        name: value for name, value in given.items() if value is not None or name in NULL_TURNS_OFF
    }
    return changes, seed


def faults_view(data: bytes) -> FaultSettings:
    """A GET /_emulator/faults answer; fields this client does not know are ignored."""
    view = json.loads(data)
    if not isinstance(view, dict):
        raise ValueError("a faults view must be a JSON object")
    known = {name: value for name, value in view.items() if name in FaultSettings.model_fields}
    return FaultSettings.model_validate(known)


class BudgetSettings(_Input):
    """POST /_emulator/budget: both limits are replaced; what was used this window stays used."""

    per_hour: int = Field(default=BRAZE_REQUESTS_PER_HOUR, ge=1)
    per_second: int | None = Field(default=None, ge=1)


class BudgetView(_View):
    """GET /_emulator/budget: the limits and what the `X-RateLimit-*` headers would say now."""

    per_hour: int
    per_second: int | None
    limit: int
    remaining: int
    reset_epoch_s: int


class ApiKeys(_Input):
    """POST /_emulator/api-keys: replaces the accepted keys (they are never read back)."""

    api_keys: list[str] = Field(min_length=1)


class RecordedRequestView(_View):
    seq: int
    time: str  # ISO 8601 UTC
    time_epoch_s: float  # when the answer was decided
    answered_epoch_s: float  # about when it was written (or dropped): time_epoch_s + latency
    method: str
    path: str
    status: int | None  # null: the connection was dropped on purpose
    body: JsonValue  # the parsed JSON, or the raw text when it is cut or not JSON
    body_bytes: int
    body_truncated: bool
    recipients: int
    message: str | None
    errors: list[str]
    dispatch_id: str | None
    notice: str | None


class RequestsPage(_View):
    """GET /_emulator/requests?since=SEQ&limit=N."""

    requests: list[RecordedRequestView]
    last_seq: int  # pass as `since` next time to read only newer requests


class StatsView(_View):
    """GET /_emulator/stats: counts over every request since the last reset."""

    requests_total: int
    accepted_requests: int
    recipients_sent: int
    by_status: dict[str, int]
    by_path: dict[str, dict[str, int]]
    recipients_per_request: dict[str, int]


class ErrorView(_View):
    """Any control API error (400, 403, 404, 405)."""

    message: str
    errors: list[str]
