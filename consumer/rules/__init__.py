"""Stage 2: the rules table. Loads and validates rule files; maps each event to outcomes.

Pure: no Kafka, no HTTP, no clock. The pipeline calls `RulesTable.evaluate(event, now_ms)`.
"""

from consumer.rules.errors import RuleProblem, RulesError
from consumer.rules.load import load_rules, load_rules_many, load_rules_text
from consumer.rules.table import RulesTable

__all__ = [
    "RuleProblem",
    "RulesError",
    "RulesTable",
    "load_rules",
    "load_rules_many",
    "load_rules_text",
]
