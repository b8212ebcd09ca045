"""What a task is to the rest of the system: problems, a prompt format, and a grader."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from edge_adapt.generator.steps import StepRules


@dataclass(frozen=True)
class Problem:
    """One question with its gold answer. ``level`` is the difficulty level where the task has one."""

    id: str
    question: str
    answer: str
    level: int | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


class Task(Protocol):
    """A family of problems: how to prompt a generator and how to grade what it wrote."""

    name: str

    @property
    def step_rules(self) -> StepRules:
        """Step delimiter, answer pattern and length caps that fit this task's solutions."""
        ...

    def prompt(self, problem: Problem) -> str:
        """The text the generator continues (its solution starts right after it)."""
        ...

    def extract_answer(self, solution: str) -> str | None:
        """The final answer in a solution, normalised for comparison, or None if there is none."""
        ...

    def is_correct(self, solution: str, problem: Problem) -> bool:
        ...
