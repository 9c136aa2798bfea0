"""Emulator: the misbehaviour a test asks for (latency, injected statuses, dropped connections,
refused targets and recipients, and a foreign answer such as a proxy's login page).

`FaultSettings` is the one declaration of every fault: its type, default, validation, doc and an
example. Everything else is derived from it: the control API's update and view forms (wire.py),
`EmulatorControl.set_faults`' keywords and `clear_faults` (control.py), the reset (state.py). A new
fault is one field here, plus the code in `FaultPlan` / state.py that acts on it.

Pure apart from a seedable RNG, so a test with a seed sees the same faults every run. Settings are
a frozen value; the parts that are used up (a status sequence, a count of drops) are replaced by
a shorter value as requests consume them.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
)

DEFAULT_ERROR_STATUSES = (500, 502, 503, 504)
CANVAS_PAUSED = (
    "The Canvas is paused. Resume the Canvas to ensure trigger requests will take effect."
)
CANVAS_ARCHIVED = (
    "The Canvas is archived. Unarchive the Canvas to ensure trigger requests will take effect."
)
INVALID_CANVAS_ID = "Invalid Canvas ID"
INVALID_CAMPAIGN_ID = "Invalid Campaign ID"  # braze-api.md §3
MAX_OVERRIDE_BODY_BYTES = 64 * 1024
DEFAULT_OVERRIDE_CONTENT_TYPE = "text/html; charset=utf-8"


def _status_code(status: int) -> int:
    if not 100 <= status <= 599:
        raise ValueError("must be an HTTP status code (100-599)")
    return status


def _fixed_or_range(value: object) -> object:
    """A fixed latency `n` is the range [n, n]."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    return value


def _ordered(latency_ms: tuple[int, int]) -> tuple[int, int]:
    low, high = latency_ms
    if not 0 <= low <= high:
        raise ValueError("must be a range [low, high] with 0 <= low <= high")
    return latency_ms


StatusCode = Annotated[int, AfterValidator(_status_code)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
LatencyRange = Annotated[
    tuple[int, int], BeforeValidator(_fixed_or_range), AfterValidator(_ordered)
]
# A set of ids; on the wire a sorted JSON array (so a view is stable).
IdSet = Annotated[frozenset[str], PlainSerializer(sorted, return_type=list[str], when_used="json")]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AnswerOverride(_Frozen):
    """An answer given to every Braze request as is, before anything else is checked.

    It stands for whatever may sit between a client and Braze (an HTTP proxy, a captive portal),
    so it carries no `X-RateLimit-*` headers and spends no budget.
    """

    status: StatusCode = Field(description="the HTTP status, 100-599")
    body: str = Field(default="", description="sent UTF-8 encoded, exactly as given; <= 64 KiB")
    content_type: str = Field(default=DEFAULT_OVERRIDE_CONTENT_TYPE, description="Content-Type")

    @field_validator("body")
    @classmethod
    def _check_body(cls, body: str) -> str:
        size = len(body.encode())  # a lone surrogate fails here too (a ValueError)
        if size > MAX_OVERRIDE_BODY_BYTES:
            raise ValueError(f"has {size} bytes; the limit is {MAX_OVERRIDE_BODY_BYTES}")
        return body

    @field_validator("content_type")
    @classmethod
    def _check_content_type(cls, content_type: str) -> str:
        # It becomes a header line: printable ASCII only, so no CR/LF can split the answer.
        if not (content_type.isascii() and content_type.isprintable()):
            raise ValueError("must be printable ASCII")
        if not content_type.strip():
            raise ValueError("must not be empty")
        return content_type


class FaultSettings(_Frozen):
    """Every fault the emulator can inject: THE declaration (see the module doc).

    Each field needs a default that means "no fault" and at least one `examples` value that is a
    fault (tests/unit/test_emulator_fault_model.py sends each example through the control API).
    A field whose default is None (answer_override) is turned off by null on the wire; for every
    other field null means "leave as it is".
    """

    latency_ms: LatencyRange = Field(
        default=(0, 0),
        description="delay before each answer, drawn uniformly from [low, high] ms; a fixed n "
        "is [n, n]",
        examples=[(20, 40)],
    )
    status_sequence: tuple[StatusCode, ...] = Field(
        default=(),
        description="one status per processed request, consumed in order; 2xx means 'process "
        "normally'",
        examples=[(503, 201)],
    )
    error_share: Probability = Field(
        default=0.0,
        description="probability of answering one of error_statuses instead of processing",
        examples=[0.25],
    )
    error_statuses: tuple[StatusCode, ...] = Field(
        default=DEFAULT_ERROR_STATUSES,
        min_length=1,
        description="the statuses error_share draws from",
        examples=[(503,)],
    )
    drop_next: int = Field(
        default=0,
        ge=0,
        description="close the connection without answering, for this many requests",
        examples=[2],
    )
    drop_share: Probability = Field(
        default=0.0,
        description="probability of closing the connection without answering",
        examples=[0.5],
    )
    reject_external_user_ids: IdSet = Field(
        default=frozenset(),
        description="a request naming one of these recipients fails with 400",
        examples=[frozenset({"u-bad"})],
    )
    paused_canvas_ids: IdSet = Field(
        default=frozenset(),
        description="Canvases answered 201 with the 'paused' notice, sending nothing",
        examples=[frozenset({"cv-paused"})],
    )
    archived_canvas_ids: IdSet = Field(
        default=frozenset(),
        description="Canvases answered 201 with the 'archived' notice, sending nothing",
        examples=[frozenset({"cv-archived"})],
    )
    invalid_target_ids: IdSet = Field(
        default=frozenset(),
        description="canvas_id / campaign_id values that are not API-triggered: a send or "
        "schedule naming one is answered 400",
        examples=[frozenset({"cv-missing"})],
    )
    answer_override: AnswerOverride | None = Field(
        default=None,
        description="answer every Braze request with this (a proxy in front of Braze); null: off",
        examples=[AnswerOverride(status=200, body="<html>log in</html>")],
    )

    def updated(self, changes: Mapping[str, object]) -> FaultSettings:
        """These settings with `changes` (field -> value) applied; every field is checked again."""
        return FaultSettings.model_validate({**dict(self), **changes})


class FaultPlan:
    """The current settings and the RNG that draws from them. Not thread-safe: the caller locks."""

    def __init__(self, settings: FaultSettings | None = None, seed: int | None = None) -> None:
        self.settings = settings or FaultSettings()
        # Not for secrets: a seeded, repeatable stream of faults is the point.
        self._rng = random.Random(seed)  # noqa: S311

    def reseed(self, seed: int | None) -> None:
        self._rng = random.Random(seed)  # noqa: S311

    def delay_s(self) -> float:
        low, high = self.settings.latency_ms
        return (low if low == high else self._rng.uniform(low, high)) / 1000

    def take_drop(self) -> bool:
        """Whether to close this request's connection without an answer."""
        if self.settings.drop_next > 0:
            self.settings = self.settings.model_copy(
                update={"drop_next": self.settings.drop_next - 1}
            )
            return True
        return self._chance(self.settings.drop_share)

    def take_status(self) -> int | None:
        """A status to answer instead of processing the request, or None to process it."""
        sequence = self.settings.status_sequence
        if sequence:
            self.settings = self.settings.model_copy(update={"status_sequence": sequence[1:]})
            if not 200 <= sequence[0] <= 299:
                return sequence[0]
            return None
        if self._chance(self.settings.error_share):
            return self._rng.choice(self.settings.error_statuses)
        return None

    def rejected(self, external_user_ids: list[str]) -> list[str]:
        """The ids in this request that the test configured to be refused."""
        return [uid for uid in external_user_ids if uid in self.settings.reject_external_user_ids]

    def invalid_target(self, target_id: str, *, canvas: bool) -> tuple[str, str] | None:
        """Braze's message and error for a Canvas or campaign that is not API-triggered."""
        if target_id not in self.settings.invalid_target_ids:
            return None
        if canvas:
            return INVALID_CANVAS_ID, f"canvas_id {target_id} is not an API-triggered Canvas"
        return INVALID_CAMPAIGN_ID, f"campaign_id {target_id} is not an API-triggered campaign"

    def canvas_notice(self, canvas_id: str) -> str | None:
        """Braze's `notice` for a paused or archived Canvas (S2), which then sends nothing."""
        if canvas_id in self.settings.archived_canvas_ids:
            return CANVAS_ARCHIVED
        if canvas_id in self.settings.paused_canvas_ids:
            return CANVAS_PAUSED
        return None

    def _chance(self, share: float) -> bool:
        # No draw at 0 keeps the RNG stream unchanged when a fault is off.
        return share > 0.0 and self._rng.random() < share
