"""Emulator: a typed client for its control API, for tests and benchmarks (over httpx)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Literal, TypeVar

import httpx
from pydantic import BaseModel

from consumer.emulator.budget import BRAZE_REQUESTS_PER_HOUR
from consumer.emulator.faults import DEFAULT_ERROR_STATUSES
from consumer.emulator.wire import (
    AnswerOverrideSettings,
    ApiKeys,
    BudgetSettings,
    BudgetView,
    ErrorView,
    FaultsUpdate,
    FaultsView,
    RecordedRequestView,
    RequestsPage,
    StatsView,
)

_M = TypeVar("_M", bound=BaseModel)
_T = TypeVar("_T")


class EmulatorControlError(Exception):
    """The control API refused a call (bad value, unknown route, not from loopback)."""

    def __init__(self, status: int, message: str, errors: Sequence[str]) -> None:
        super().__init__(f"{status} {message}: {'; '.join(errors)}")
        self.status = status
        self.errors = tuple(errors)


class EmulatorControl:
    """`EmulatorControl(emulator.url)`: read the record, set faults, budgets and keys."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._client = httpx.Client(base_url=base_url, timeout=timeout_s, transport=transport)

    def requests(self, since: int = 0, limit: int | None = None) -> list[RecordedRequestView]:
        """Recorded requests after seq `since`, oldest first."""
        return self.requests_page(since, limit).requests

    def requests_page(self, since: int = 0, limit: int | None = None) -> RequestsPage:
        """Like `requests`, plus `last_seq` to pass as `since` next time."""
        params: dict[str, int] = {"since": since}
        if limit is not None:
            params["limit"] = limit
        return self._call("GET", "requests", RequestsPage, params=params)

    def stats(self) -> StatsView:
        return self._call("GET", "stats", StatsView)

    def reset(self) -> None:
        """Clear the record, the faults and the budget counters (keys and limits stay)."""
        self._send("POST", "reset")

    def faults(self) -> FaultsView:
        return self._call("GET", "faults", FaultsView)

    def set_faults(
        self,
        *,
        latency_ms: int | tuple[int, int] | None = None,
        status_sequence: Sequence[int] | None = None,
        error_share: float | None = None,
        error_statuses: Sequence[int] | None = None,
        drop_next: int | None = None,
        drop_share: float | None = None,
        reject_external_user_ids: Iterable[str] | None = None,
        paused_canvas_ids: Iterable[str] | None = None,
        archived_canvas_ids: Iterable[str] | None = None,
        invalid_target_ids: Iterable[str] | None = None,
        answer_override: AnswerOverrideSettings | Literal[False] | None = None,
        seed: int | None = None,
    ) -> FaultsView:
        """Change the faults given (None leaves one as it is); returns the faults now in force.

        `answer_override=False` turns the override off (None, as everywhere, leaves it alone).
        """
        update = FaultsUpdate(
            latency_ms=latency_ms,
            status_sequence=_list(status_sequence),
            error_share=error_share,
            error_statuses=_list(error_statuses),
            drop_next=drop_next,
            drop_share=drop_share,
            reject_external_user_ids=_list(reject_external_user_ids),
            paused_canvas_ids=_list(paused_canvas_ids),
            archived_canvas_ids=_list(archived_canvas_ids),
            invalid_target_ids=_list(invalid_target_ids),
            answer_override=None if answer_override is False else answer_override,
            seed=seed,
        )
        payload = update.model_dump(exclude_none=True)
        if answer_override is False:
            payload["answer_override"] = None  # null on the wire turns it off
        return self._call("POST", "faults", FaultsView, json=payload)

    def clear_faults(self) -> FaultsView:
        """Every fault off (the record and the budget are left alone)."""
        return self.set_faults(
            latency_ms=0,
            status_sequence=(),
            error_share=0.0,
            error_statuses=DEFAULT_ERROR_STATUSES,
            drop_next=0,
            drop_share=0.0,
            reject_external_user_ids=(),
            paused_canvas_ids=(),
            archived_canvas_ids=(),
            invalid_target_ids=(),
            answer_override=False,
        )

    def budget(self) -> BudgetView:
        return self._call("GET", "budget", BudgetView)

    def set_budget(
        self, *, per_hour: int = BRAZE_REQUESTS_PER_HOUR, per_second: int | None = None
    ) -> BudgetView:
        """Replace both limits (per_second None: no per-second budget)."""
        settings = BudgetSettings(per_hour=per_hour, per_second=per_second)
        return self._call("POST", "budget", BudgetView, json=settings.model_dump())

    def set_api_keys(self, api_keys: Sequence[str]) -> None:
        self._send("POST", "api-keys", json=ApiKeys(api_keys=list(api_keys)).model_dump())

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> EmulatorControl:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _call(
        self,
        method: str,
        route: str,
        model: type[_M],
        *,
        params: dict[str, int] | None = None,
        json: object = None,
    ) -> _M:
        return model.model_validate_json(self._send(method, route, params=params, json=json))

    def _send(
        self, method: str, route: str, *, params: dict[str, int] | None = None, json: object = None
    ) -> bytes:
        response = self._client.request(method, f"/_emulator/{route}", params=params, json=json)
        if response.status_code != 200:
            try:
                error = ErrorView.model_validate_json(response.content)
            except ValueError:
                error = ErrorView(message=response.text[:200], errors=[])
            raise EmulatorControlError(response.status_code, error.message, error.errors)
        return response.content


def _list(values: Iterable[_T] | None) -> list[_T] | None:
    return None if values is None else list(values)
