"""The compiled rules table the pipeline calls once per event: `evaluate(event, now_ms)`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from consumer.events import Event
from consumer.intents import MappingFailure, Outcome
from consumer.rules.evaluate import CompiledRule

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RulesTable:
    """Immutable and compiled at load; rules apply in file order, each to its own topics."""

    rules: tuple[CompiledRule, ...]
    sources: tuple[str, ...] = ()  # the files the rules came from
    topics: frozenset[str] = field(init=False)
    rule_ids: tuple[str, ...] = field(init=False)
    _by_topic: Mapping[str, tuple[CompiledRule, ...]] = field(init=False, repr=False)
    # Whether any condition reads `_kafka`; when none does, events are decoded without it and a
    # rule whose conditions hold adds it before its mappings read the document.
    conditions_read_kafka: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        topics = frozenset(topic for rule in self.rules for topic in rule.topics)
        by_topic = {
            topic: tuple(rule for rule in self.rules if topic in rule.topics) for topic in topics
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

    def evaluate(self, event: Event, now_ms: int) -> list[Outcome]:
        """One outcome per matching rule; [] when none matched. Never raises."""
        outcomes: list[Outcome] = []
        for rule in self._by_topic.get(event.raw.meta.topic, ()):
            try:
                outcome = rule.apply(event, now_ms)
            except Exception as exc:
                # A bug (or an input nobody foresaw) must dead-letter one event, not stop the
                # consumer: the failure names the rule and the exception.
                outcome = _internal_failure(rule, event, exc)
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes


def _internal_failure(rule: CompiledRule, event: Event, exc: Exception) -> MappingFailure:
    meta = event.raw.meta
    logger.exception(
        "rule %s failed on %s[%d]@%d", rule.rule_id, meta.topic, meta.partition, meta.offset
    )
    message = f"evaluation failed: {type(exc).__name__}: {str(exc)[:200]}"
    return MappingFailure(rule.rule_id, "-", message)
