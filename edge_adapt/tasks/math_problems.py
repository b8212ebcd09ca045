"""MATH-style problems: JSONL lines with ``problem`` and ``solution`` (and optionally ``answer``,
``level``, ``subject``); without an ``answer`` field, the gold answer is the solution's last
``\\boxed{}``."""

from __future__ import annotations

import os
import re
from typing import Any, ClassVar

from edge_adapt.generator.steps import StepRules
from edge_adapt.tasks.base import Problem
from edge_adapt.tasks.grading import answers_equal, extract_answer, last_boxed
from edge_adapt.tasks.jsonl import load_jsonl

DEFAULT_PROMPT = (
    "Solve the problem step by step. Separate the steps with a blank line and put the final "
    "answer in \\boxed{{}}.\n\nProblem: {question}\nSolution:\n"
)


class MATHTask:
    name: ClassVar[str] = "math"

    def __init__(self, path: str | os.PathLike[str], prompt_template: str = DEFAULT_PROMPT) -> None:
        self.path = path
        self.prompt_template = prompt_template
        self._problems = load_jsonl(path, self._parse, required=("problem", "solution"))

    @staticmethod
    def _parse(row: dict[str, Any], line: int) -> Problem:
        answer = row.get("answer") if isinstance(row.get("answer"), str) and row["answer"].strip() else last_boxed(row["solution"])
        if not answer:
            raise ValueError("no 'answer' field and no \\boxed{} answer in the solution")
        level = row.get("level")
        if isinstance(level, str):  # "Level 3" in the original MATH files
            digits = re.findall(r"\d+", level)
            level = int(digits[0]) if digits else None
        return Problem(
            id=str(row.get("unique_id") or f"math-{line:05d}"), question=row["problem"].strip(), answer=answer.strip(),
            level=level if isinstance(level, int) else None,
            meta={"solution": row["solution"], "subject": row.get("subject"), "line": line},
        )

    @property
    def step_rules(self) -> StepRules:
        return StepRules(delimiter="\n\n", answer_pattern=r"\\boxed\{.*\}[^\n]*\n", max_step_tokens=384, max_new_tokens=2048)

    def problems(self) -> list[Problem]:
        return list(self._problems)

    def prompt(self, problem: Problem) -> str:
        return self.prompt_template.format(question=problem.question)

    def extract_answer(self, solution: str) -> str | None:
        return extract_answer(solution)

    def is_correct(self, solution: str, problem: Problem) -> bool:
        return answers_equal(self.extract_answer(solution), problem.answer)
