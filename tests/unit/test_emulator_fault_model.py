"""`FaultSettings` is the one declaration of a fault: every test here iterates over its fields, so a
new field is covered (and its wire forms, client keyword and reset checked) without editing them.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from consumer.emulator import EmulatorControl, EmulatorControlError, RunningEmulator, start_emulator
from consumer.emulator.faults import AnswerOverride, FaultSettings
from consumer.emulator.wire import NULL_TURNS_OFF, FaultsUpdate

KEY = "fault-model-key"
FIELDS = list(FaultSettings.model_fields)
# What the control API answered before the model was one declaration: it must not change.
LEGACY_DEFAULT_VIEW = {
    "latency_ms": [0, 0],
    "status_sequence": [],
    "error_share": 0.0,
    "error_statuses": [500, 502, 503, 504],
    "drop_next": 0,
    "drop_share": 0.0,
    "reject_external_user_ids": [],
    "paused_canvas_ids": [],
    "archived_canvas_ids": [],
    "invalid_target_ids": [],
    "answer_override": None,
}


def example(name: str) -> Any:
    examples = FaultSettings.model_fields[name].examples
    assert examples, f"FaultSettings.{name} needs an example (a value that is a fault)"
    return examples[0]


@pytest.fixture(scope="module")
def emulator() -> Iterator[RunningEmulator]:
    with start_emulator(api_keys=[KEY], seed=5) as running:
        yield running


@pytest.fixture
def control(emulator: RunningEmulator) -> Iterator[EmulatorControl]:
    with EmulatorControl(emulator.url) as control:
        control.reset()
        yield control


def raw(emulator: RunningEmulator, method: str, body: object = None) -> httpx.Response:
    return httpx.request(method, f"{emulator.url}/_emulator/faults", json=body, timeout=5.0)


@pytest.mark.parametrize("name", FIELDS)
def test_each_field_is_declared_with_a_doc_and_an_example_that_is_a_fault(name: str) -> None:
    info = FaultSettings.model_fields[name]
    assert info.description, f"FaultSettings.{name} needs a description"
    assert not info.is_required(), f"FaultSettings.{name} needs a default (no fault)"
    settings = FaultSettings(**{name: example(name)})
    assert getattr(settings, name) != info.default


@pytest.mark.parametrize("name", FIELDS)
def test_each_field_round_trips_through_set_faults_the_control_api_and_the_view(
    control: EmulatorControl, emulator: RunningEmulator, name: str
) -> None:
    wanted = FaultSettings(**{name: example(name)})
    answered = control.set_faults(**{name: example(name)})
    assert answered == wanted  # only this field changed; the others are at their defaults
    assert control.faults() == wanted
    wire = raw(emulator, "GET").json()
    assert wire == wanted.model_dump(mode="json")
    # The update form takes the view form back: a client can copy what it read.
    control.clear_faults()
    assert raw(emulator, "POST", {name: wire[name]}).json() == wire


@pytest.mark.parametrize("name", FIELDS)
def test_none_leaves_each_field_and_reset_and_clear_restore_the_default(
    control: EmulatorControl, emulator: RunningEmulator, name: str
) -> None:
    wanted = control.set_faults(**{name: example(name)})
    assert control.set_faults(**{name: None}) == wanted  # None: unchanged, for every field
    assert control.clear_faults() == FaultSettings()
    control.set_faults(**{name: example(name)})
    emulator.state.reset()
    assert control.faults() == FaultSettings()


@pytest.mark.parametrize("name", FIELDS)
def test_null_on_the_wire_turns_off_exactly_the_fields_that_default_to_none(
    control: EmulatorControl, emulator: RunningEmulator, name: str
) -> None:
    control.set_faults(**{name: example(name)})
    after = FaultSettings.model_validate(raw(emulator, "POST", {name: None}).json())
    if FaultSettings.model_fields[name].default is None:
        assert name in NULL_TURNS_OFF
        assert getattr(after, name) is None
        control.set_faults(**{name: example(name)})
        assert getattr(control.set_faults(**{name: False}), name) is None  # the client's spelling
    else:
        assert getattr(after, name) == getattr(FaultSettings(**{name: example(name)}), name)


def test_the_derived_forms_have_exactly_the_model_fields() -> None:
    assert list(FaultsUpdate.model_fields) == [*FIELDS, "seed"]
    keywords = inspect.signature(EmulatorControl.set_faults).parameters
    assert list(keywords) == ["self", *FIELDS]
    assert all(keywords[name].default is None for name in FIELDS)
    assert list(FaultSettings().model_dump(mode="json")) == FIELDS


def test_the_wire_view_stays_backward_compatible(emulator: RunningEmulator) -> None:
    raw(emulator, "POST", FaultSettings().model_dump(mode="json"))
    view = raw(emulator, "GET").json()
    assert {name: view[name] for name in LEGACY_DEFAULT_VIEW} == LEGACY_DEFAULT_VIEW
    changed = raw(
        emulator,
        "POST",
        {
            "latency_ms": 20,
            "reject_external_user_ids": ["u-2", "u-1", "u-2"],
            "answer_override": {"status": 502},
        },
    ).json()
    assert changed["latency_ms"] == [20, 20]  # a fixed latency is the range [n, n]
    assert changed["reject_external_user_ids"] == ["u-1", "u-2"]  # sorted, once each
    assert changed["answer_override"] == {
        "status": 502,
        "body": "",
        "content_type": "text/html; charset=utf-8",
    }


def test_an_unknown_keyword_is_refused_by_name_before_anything_is_sent(
    control: EmulatorControl,
) -> None:
    with pytest.raises(TypeError, match="drop_nxt"):
        control.set_faults(drop_nxt=1)  # type: ignore[call-arg]
    assert control.faults() == FaultSettings()


@pytest.mark.parametrize(
    ("body", "where"),
    [
        pytest.param({"drop_nxt": 1}, "drop_nxt", id="unknown field"),
        pytest.param({"error_share": 1.5}, "error_share", id="out of range"),
        pytest.param({"status_sequence": [700]}, "status_sequence", id="not a status"),
        pytest.param({"latency_ms": [3, 1]}, "latency_ms", id="reversed range"),
        pytest.param({"answer_override": {"status": 200, "x": 1}}, "answer_override", id="nested"),
    ],
)
def test_a_bad_update_names_the_field_and_changes_nothing(
    control: EmulatorControl, emulator: RunningEmulator, body: dict[str, Any], where: str
) -> None:
    control.set_faults(drop_next=1)
    response = raw(emulator, "POST", {**body, "drop_next": 3})
    assert response.status_code == 400
    assert any(error.startswith(where) for error in response.json()["errors"]), response.json()
    assert control.faults().drop_next == 1


def test_values_are_checked_by_the_emulator(control: EmulatorControl) -> None:
    with pytest.raises(EmulatorControlError) as raised:
        control.set_faults(drop_share=-1)
    assert raised.value.status == 400
    assert "drop_share" in str(raised.value)


def test_reseed_repeats_the_drawn_faults(
    control: EmulatorControl, emulator: RunningEmulator
) -> None:
    control.set_faults(error_share=0.5)
    send = {"canvas_id": "cv", "recipients": [{"external_user_id": "u"}]}
    headers = {"Authorization": f"Bearer {KEY}"}

    def draw() -> list[int]:
        control.reseed(42)
        with httpx.Client(base_url=emulator.url, headers=headers, timeout=5.0) as client:
            return [client.post("/canvas/trigger/send", json=send).status_code for _ in range(30)]

    first = draw()
    assert first == draw()
    assert {201} < set(first)


def test_an_override_is_one_model_in_every_form() -> None:
    override = AnswerOverride(status=302, body="moved")
    settings = FaultSettings(answer_override=override)
    wire = json.loads(settings.model_dump_json())
    assert FaultSettings.model_validate(wire) == settings
