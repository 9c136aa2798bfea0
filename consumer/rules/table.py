"""The compiled rules table the pipeline calls once per event: `evaluate(event, now_ms)`.

Rules of a topic that each want one text at the same path (`type: order.shipped`, `type:
cart.abandoned`...) are looked up by the event's value there, so an event meets the conditions of
the rules it can match rather than every rule's. The result is the same as testing every rule in
file order: the rules looked up are still tested in full, and in that order.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from consumer.events import Event
from consumer.intents import MappingFailure, Outcome
from consumer.json_types import JSONValue
from consumer.rules.conditions import Step, path_reader
from consumer.rules.evaluate import CompiledRule

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RulesTable:
    """Immutable and compiled at load; rules apply in file order, each to its own topics."""

    rules: tuple[CompiledRule, ...]
    sources: tuple[str, ...] = ()  # the files the rules came from
    topics: frozenset[str] = field(init=False)
    rule_ids: tuple[str, ...] = field(init=False)
    _by_topic: Mapping[str, _Dispatch] = field(init=False, repr=False)
    # Whether any condition reads `_kafka`; when none does, events are decoded without it and a
    # rule whose conditions hold adds it before its mappings read the document.
    conditions_read_kafka: bool = field(init=False, repr=False)
    # Whether `evaluate` reads `now_ms` (a rule has max_event_age); when none does, callers may
    # pass 0 instead of reading the clock for every event.
    reads_clock: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        topics = frozenset(topic for rule in self.rules for topic in rule.topics)
        by_topic = {
            topic: _dispatch(tuple(rule for rule in self.rules if topic in rule.topics))
            for topic in topics
        }
        object.__setattr__(self, "topics", topics)
        object.__setattr__(self, "rule_ids", tuple(rule.rule_id for rule in self.rules))
        object.__setattr__(self, "_by_topic", by_topic)
        reads_kafka = any(
            condition.steps[0][0] == "_kafka"
            for rule in self.rules
            for condition in rule.conditions
        )
        object.__setattr__(self, "conditions_read_kafka", reads_kafka)
        reads_clock = any(rule.max_event_age_ms is not None for rule in self.rules)
        object.__setattr__(self, "reads_clock", reads_clock)

    def evaluate(self, event: Event, now_ms: int) -> list[Outcome]:
        """One outcome per matching rule; [] when none matched. Never raises."""
        outcomes: list[Outcome] = []
        dispatch = self._by_topic.get(event.raw.meta.topic)
        if dispatch is None:
            return outcomes
        for rule in dispatch.candidates(event.document):
            try:
                outcome = rule.apply(event, now_ms)
            except Exception as exc:
                # A bug (or an input nobody foresaw) must dead-letter one event, not stop the
                # consumer: the failure names the rule and the exception.
                outcome = _internal_failure(rule, event, exc)
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes


@dataclass(frozen=True, slots=True)
class _Dispatch:
    """A topic's rules, looked up by the text at one path when enough of them want one."""

    read: Callable[[JSONValue], JSONValue] | None  # the path's reader; None: every rule
    by_text: Mapping[str, tuple[CompiledRule, ...]]  # in file order, with the rules of no text
    otherwise: tuple[CompiledRule, ...]  # the rules that want no text at the path

    def candidates(self, document: JSONValue) -> tuple[CompiledRule, ...]:
        """The rules whose conditions may hold for `document`, in file order."""
        if self.read is None:
            return self.otherwise
        value = self.read(document)
        if type(value) is str:
            return self.by_text.get(value, self.otherwise)
        return self.otherwise  # a rule wanting a text cannot match anything else


def _dispatch(rules: tuple[CompiledRule, ...]) -> _Dispatch:
    """Looked up by the path most of `rules` test with `eq` of a text (when two or more do).
    Never a `_kafka` path: a rule that maps `_kafka` adds it to the document while the rules
    run, so a later rule's `_kafka` condition may hold where a lookup made before would not."""
    counts = Counter(
        steps
        for rule in rules
        for steps in {c.steps for c in rule.conditions if c.equals_text is not None}
        if steps[0][0] != "_kafka"
    )
    best = counts.most_common(1)
    if not best or best[0][1] < 2:
        return _Dispatch(None, {}, rules)
    steps: tuple[Step, ...] = best[0][0]
    wanted = [(rule, _wanted_text(rule, steps)) for rule in rules]
    texts = {text for _, text in wanted if text is not None}
    by_text = {
        text: tuple(rule for rule, its in wanted if its is None or its == text) for text in texts
    }
    otherwise = tuple(rule for rule, its in wanted if its is None)
    return _Dispatch(path_reader(steps), by_text, otherwise)


def _wanted_text(rule: CompiledRule, steps: tuple[Step, ...]) -> str | None:
    """The text `rule` wants at `steps` (its first such condition), or None."""
    for condition in rule.conditions:
        if condition.steps == steps and condition.equals_text is not None:
            return condition.equals_text
    return None


def _internal_failure(rule: CompiledRule, event: Event, exc: Exception) -> MappingFailure:
    meta = event.raw.meta
    logger.exception(
        "rule %s failed on %s[%d]@%d", rule.rule_id, meta.topic, meta.partition, meta.offset
    )
    message = f"evaluation failed: {type(exc).__name__}: {str(exc)[:200]}"
    return MappingFailure(rule.rule_id, "-", message)
