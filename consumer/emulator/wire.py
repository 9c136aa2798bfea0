"""Emulator: the JSON shapes of the control API (`/_emulator/...`), shared by server and client."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from consumer.emulator.budget import BRAZE_REQUESTS_PER_HOUR
from consumer.emulator.faults import DEFAULT_OVERRIDE_CONTENT_TYPE


class _Input(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _View(BaseModel):
    # Views ignore fields they do not know, so an older client can read a newer emulator.
    model_config = ConfigDict(frozen=True, extra="ignore")


class AnswerOverrideSettings(_Input):
    """The answer every Braze request gets while it is set (a proxy or captive portal)."""

    status: int  # 100-599 (checked by the emulator, which answers 400 otherwise)
    body: str = ""  # raw text, sent UTF-8 encoded; at most 64 KiB
    content_type: str = DEFAULT_OVERRIDE_CONTENT_TYPE


class AnswerOverrideView(_View):
    status: int
    body: str
    content_type: str


class FaultsUpdate(_Input):
    """POST /_emulator/faults: only the fields given change; `seed` restarts the fault RNG.

    `answer_override` is the exception to "null changes nothing": given as null, it turns off.
    """

    latency_ms: int | tuple[int, int] | None = None  # fixed, or a [low, high] range
    status_sequence: list[int] | None = None
    error_share: float | None = None
    error_statuses: list[int] | None = None
    drop_next: int | None = None
    drop_share: float | None = None
    reject_external_user_ids: list[str] | None = None
    paused_canvas_ids: list[str] | None = None
    archived_canvas_ids: list[str] | None = None
    invalid_target_ids: list[str] | None = None  # canvas_id / campaign_id values answered 400
    answer_override: AnswerOverrideSettings | None = None
    seed: int | None = None


class FaultsView(_View):
    """GET /_emulator/faults and the answer to POST: the settings now in force."""

    latency_ms: tuple[int, int]
    status_sequence: list[int]  # what is left of it
    error_share: float
    error_statuses: list[int]
    drop_next: int  # drops left
    drop_share: float
    reject_external_user_ids: list[str]
    paused_canvas_ids: list[str]
    archived_canvas_ids: list[str]
    invalid_target_ids: list[str]
    answer_override: AnswerOverrideView | None


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
