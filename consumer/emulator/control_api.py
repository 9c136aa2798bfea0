"""Emulator: the control API under `/_emulator/` (read the record, set faults, budgets and keys).

No sockets here: the server passes method, path, query and body and writes back the `Reply`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import parse_qs

from pydantic import BaseModel, JsonValue, ValidationError

from consumer.emulator.budget import BudgetLimits
from consumer.emulator.faults import FaultSettings
from consumer.emulator.record import RecordedRequest
from consumer.emulator.state import EmulatorState, Reply
from consumer.emulator.wire import (
    ApiKeys,
    BudgetSettings,
    BudgetView,
    RecordedRequestView,
    RequestsPage,
    StatsView,
    parse_faults_update,
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
        messages = [
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg'].removeprefix('Value error, ')}"
            for e in error.errors()
        ]
        return _error(400, "Invalid control request", messages)
    except ValueError as error:  # a bad query (since, limit)
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


def _get_faults(state: EmulatorState, _query: str, _body: bytes) -> FaultSettings:
    return state.faults()  # its JSON dump is the view


def _set_faults(state: EmulatorState, query: str, body: bytes) -> FaultSettings:
    changes, seed = parse_faults_update(body)
    return state.update_faults(lambda current: current.updated(changes), seed=seed)


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
