"""Emulator: the control API under `/_emulator/` (read the record, set faults, budgets and keys).

No sockets here: the server passes method, path, query and body and writes back the `Reply`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from urllib.parse import parse_qs

from pydantic import BaseModel, JsonValue, ValidationError

from consumer.emulator.budget import BudgetLimits
from consumer.emulator.faults import AnswerOverride, FaultSettings
from consumer.emulator.record import RecordedRequest
from consumer.emulator.state import EmulatorState, Reply
from consumer.emulator.wire import (
    AnswerOverrideSettings,
    AnswerOverrideView,
    ApiKeys,
    BudgetSettings,
    BudgetView,
    FaultsUpdate,
    FaultsView,
    RecordedRequestView,
    RequestsPage,
    StatsView,
)
from consumer.json_types import JSONObject

PREFIX = "/_emulator/"

_Route = Callable[[EmulatorState, str, bytes], BaseModel | JSONObject]


def handle_control(state: EmulatorState, method: str, path: str, query: str, body: bytes) -> Reply:
    """The answer to one control request (the caller has checked it comes from loopback)."""
    routes = _ROUTES.get(path)
    if routes is None:
        return _error(404, "Not Found", [f"No control route {path}; see {', '.join(_ROUTES)}"])
    route = routes.get(method)
    if route is None:
        return _error(405, "Method Not Allowed", [f"{path} takes {', '.join(routes)}"])
    try:
        answer = route(state, query, body)
    except ValidationError as error:
        messages = [f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in error.errors()]
        return _error(400, "Invalid control request", messages)
    except ValueError as error:  # a value pydantic accepted but the fault settings refuse
        return _error(400, "Invalid control request", [str(error)])
    body_out = answer.model_dump(mode="json") if isinstance(answer, BaseModel) else answer
    return Reply(200, body_out)


def _requests(state: EmulatorState, query: str, _body: bytes) -> RequestsPage:
    params = parse_qs(query)
    since = int(params.get("since", ["0"])[-1])
    limit = int(params["limit"][-1]) if "limit" in params else None
    if since < 0 or (limit is not None and limit < 1):
        raise ValueError("since must be >= 0 and limit >= 1")
    entries = state.requests_since(since, limit)
    last_seq = entries[-1].seq if entries else since
    return RequestsPage(requests=[_view(entry) for entry in entries], last_seq=last_seq)


def _stats(state: EmulatorState, _query: str, _body: bytes) -> StatsView:
    stats = state.stats()
    return StatsView(
        requests_total=stats.requests_total,
        accepted_requests=stats.accepted_requests,
        recipients_sent=stats.recipients_sent,
        by_status=stats.by_status,
        by_path=stats.by_path,
        recipients_per_request=stats.recipients_per_request,
    )


def _reset(state: EmulatorState, _query: str, _body: bytes) -> JSONObject:
    state.reset()
    return {"message": "reset"}


def _get_faults(state: EmulatorState, _query: str, _body: bytes) -> FaultsView:
    settings = state.faults()
    return FaultsView(
        latency_ms=settings.latency_ms,
        status_sequence=list(settings.status_sequence),
        error_share=settings.error_share,
        error_statuses=list(settings.error_statuses),
        drop_next=settings.drop_next,
        drop_share=settings.drop_share,
        reject_external_user_ids=sorted(settings.reject_external_user_ids),
        paused_canvas_ids=sorted(settings.paused_canvas_ids),
        archived_canvas_ids=sorted(settings.archived_canvas_ids),
        invalid_target_ids=sorted(settings.invalid_target_ids),
        answer_override=_override_view(settings.answer_override),
    )


def _override_view(override: AnswerOverride | None) -> AnswerOverrideView | None:
    if override is None:
        return None
    return AnswerOverrideView(
        status=override.status, body=override.body, content_type=override.content_type
    )


def _set_faults(state: EmulatorState, query: str, body: bytes) -> FaultsView:
    update = FaultsUpdate.model_validate_json(body or b"{}")
    state.update_faults(lambda current: _merged(current, update), seed=update.seed)
    return _get_faults(state, query, body)


def _merged(current: FaultSettings, update: FaultsUpdate) -> FaultSettings:
    changes = update.model_dump(exclude_none=True, exclude={"seed", "answer_override"})
    if isinstance(update.latency_ms, int):
        changes["latency_ms"] = (update.latency_ms, update.latency_ms)
    for name in ("status_sequence", "error_statuses"):
        if name in changes:
            changes[name] = tuple(changes[name])
    for name in (
        "reject_external_user_ids",
        "paused_canvas_ids",
        "archived_canvas_ids",
        "invalid_target_ids",
    ):
        if name in changes:
            changes[name] = frozenset(changes[name])
    if "answer_override" in update.model_fields_set:  # given as null: turn it off
        changes["answer_override"] = _override(update.answer_override)
    return replace(current, **changes)  # FaultSettings and AnswerOverride check the ranges


def _override(settings: AnswerOverrideSettings | None) -> AnswerOverride | None:
    if settings is None:
        return None
    return AnswerOverride(
        status=settings.status, body=settings.body, content_type=settings.content_type
    )


def _get_budget(state: EmulatorState, _query: str, _body: bytes) -> BudgetView:
    limits, status = state.budget()
    return BudgetView(
        per_hour=limits.per_hour,
        per_second=limits.per_second,
        limit=status.limit,
        remaining=status.remaining,
        reset_epoch_s=status.reset_epoch_s,
    )


def _set_budget(state: EmulatorState, query: str, body: bytes) -> BudgetView:
    settings = BudgetSettings.model_validate_json(body or b"{}")
    state.set_limits(BudgetLimits(per_hour=settings.per_hour, per_second=settings.per_second))
    return _get_budget(state, query, body)


def _set_api_keys(state: EmulatorState, _query: str, body: bytes) -> JSONObject:
    keys = ApiKeys.model_validate_json(body or b"{}")
    state.set_api_keys(keys.api_keys)
    return {"message": "success", "api_keys": len(keys.api_keys)}


def _view(entry: RecordedRequest) -> RecordedRequestView:
    return RecordedRequestView(
        seq=entry.seq,
        time=datetime.fromtimestamp(entry.time_s, UTC).isoformat(timespec="milliseconds"),
        time_epoch_s=entry.time_s,
        answered_epoch_s=entry.time_s + entry.delay_s,
        method=entry.method,
        path=entry.path,
        status=entry.status,
        body=_body_value(entry),
        body_bytes=entry.body_bytes,
        body_truncated=entry.body_truncated,
        recipients=entry.recipients,
        message=entry.message,
        errors=list(entry.errors),
        dispatch_id=entry.dispatch_id,
        notice=entry.notice,
    )


def _body_value(entry: RecordedRequest) -> JsonValue:
    if entry.body_truncated or not entry.body_text:
        return entry.body_text
    try:
        value: JsonValue = json.loads(entry.body_text)
    except ValueError:
        return entry.body_text
    return value


def _error(status: int, message: str, errors: list[str]) -> Reply:
    return Reply(status, {"message": message, "errors": list(errors)})


_ROUTES: dict[str, dict[str, _Route]] = {
    PREFIX + "requests": {"GET": _requests},
    PREFIX + "stats": {"GET": _stats},
    PREFIX + "reset": {"POST": _reset},
    PREFIX + "faults": {"GET": _get_faults, "POST": _set_faults},
    PREFIX + "budget": {"GET": _get_budget, "POST": _set_budget},
    PREFIX + "api-keys": {"POST": _set_api_keys},
}
