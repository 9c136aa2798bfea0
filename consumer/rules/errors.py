"""What a rules file can get wrong: each problem located as `file:line: rule-id: message`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RuleProblem:
    file: str
    line: int
    rule_id: str  # "-" when the problem is not inside a rule with a readable id
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.rule_id}: {self.message}"


class RulesError(Exception):
    """The rules could not be loaded; `problems` lists every problem found, in file order."""

    def __init__(self, problems: list[RuleProblem]) -> None:
        self.problems = problems
        count = len(problems)
        first = str(problems[0]) if problems else "no problems recorded"
        more = f" (and {count - 1} more)" if count > 1 else ""
        super().__init__(f"{first}{more}")
