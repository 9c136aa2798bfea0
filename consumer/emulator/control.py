"""Emulator: a typed client for its control API, for tests and benchmarks (over httpx)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

import httpx
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from consumer.emulator.budget import BRAZE_REQUESTS_PER_HOUR
from consumer.emulator.faults import FaultSettings
from consumer.emulator.wire import (
    NULL_TURNS_OFF,
    ApiKeys,
    BudgetSettings,
    BudgetView,
    ErrorView,
    RecordedRequestView,
    RequestsPage,
    StatsView,
    faults_view,
)

_M = TypeVar("_M", bound=BaseModel)
_P = ParamSpec("_P")
_R = TypeVar("_R")
_S = TypeVar("_S")


def _keywords_of(
    model: Callable[_P, object],
) -> Callable[[Callable[Concatenate[_S, ...], _R]], Callable[Concatenate[_S, _P], _R]]:
    """Give a `**changes` method the keywords of `model`, so they are declared once, in it.

    mypy (with the pydantic plugin) then refuses an unknown keyword; it types each value Any, as
    the values are checked at run time. help() and IDEs see the keywords through __signature__.
    """

    def wrap(method: Callable[Concatenate[_S, ...], _R]) -> Callable[Concatenate[_S, _P], _R]:
        keywords = inspect.signature(model).parameters.values()
        parameters = [
            inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY),
            *(
                keyword.replace(default=None, annotation=inspect.Parameter.empty)
                for keyword in keywords
            ),
        ]
        method.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        return method

    return wrap


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

    def faults(self) -> FaultSettings:
        return faults_view(self._send("GET", "faults"))

    @_keywords_of(FaultSettings)
    def set_faults(self, **changes: Any) -> FaultSettings:
        """Change the faults given; returns the faults now in force.

        The keywords are the fields of `FaultSettings` (its field docs say what each does), in
        their wire forms too (`latency_ms=20`, lists for sets). The emulator checks the values: a
        bad one raises EmulatorControlError (400). None leaves a fault as it is; False turns off a
        fault that is off by default as None (`answer_override=False`), as null does on the wire.
        """
        unknown = sorted(set(changes) - FaultSettings.model_fields.keys())
        if unknown:
            raise TypeError(
                f"set_faults() got unknown fault(s) {', '.join(unknown)};"
                f" the faults are {', '.join(FaultSettings.model_fields)}"
            )
        payload: dict[str, object] = {}
        for name, value in changes.items():
            if value is False and name in NULL_TURNS_OFF:
                payload[name] = None
            elif value is not None:
                payload[name] = to_jsonable_python(value)
        return self._set_faults(payload)

    def reseed(self, seed: int) -> FaultSettings:
        """Restart the RNG behind error_share, drop_share and latency ranges with `seed`."""
        return self._set_faults({"seed": seed})

    def clear_faults(self) -> FaultSettings:
        """Every fault off, i.e. at its default (the record and the budget are left alone)."""
        return self._set_faults(FaultSettings().model_dump(mode="json"))

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

    def _set_faults(self, payload: dict[str, object]) -> FaultSettings:
        return faults_view(self._send("POST", "faults", json=payload))

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
