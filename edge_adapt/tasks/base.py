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

    def benchmark_problems(self, split: str = "test", seed: int = 0) -> list[Problem]:
        """The problems a benchmark runs (the test split, or every problem of a file); a generated
        task draws ``split`` with the question ``seed`` (a file task refuses anything else)."""
        ...

    def problem_at(self, index: int) -> Problem:
        """Problem ``index`` of :meth:`benchmark_problems` (``solve --index``); a clear error when out of range."""
        ...

    def parse_question(self, text: str) -> Problem:
        """A user's own question, with the gold answer and level where the task can know them; a
        question the task cannot take is an :class:`EdgeAdaptError` that says how to write one.
        ``meta["warning"]`` says when the question is one the models were not built for."""
        ...

    def calibration_problems(self, split: str, per_level: int, *, seed: int = 0) -> list[Problem]:
        """Problems to roll out for a PRM's calibration: ``per_level`` of each difficulty level of
        ``split`` (a task without levels or splits: the first ``6 x per_level`` of its problems)."""
        ...

    def display_question(self, problem: Problem) -> str:
        """The question as a person reads it (the prompt's notation may differ)."""
        ...

    def warm_up_problem(self) -> Problem:
        """A problem to measure the device on before budgeted questions (outside the benchmark where possible)."""
        ...
