"""MATH-style problems: JSONL lines with ``problem`` and ``solution`` (and optionally ``answer``,
``level``, ``subject``); without an ``answer`` field, the gold answer is the solution's last
``\\boxed{}``."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from edge_adapt.generator.steps import StepRules
from edge_adapt.tasks.base import Problem
from edge_adapt.tasks.grading import last_boxed
from edge_adapt.tasks.jsonl import JSONLTask

DEFAULT_PROMPT = (
    "Solve the problem step by step. Separate the steps with a blank line and put the final "
    "answer in \\boxed{{}}.\n\nProblem: {question}\nSolution:\n"
)


class MATHTask(JSONLTask):
    name: ClassVar[str] = "math"
    required: ClassVar[tuple[str, ...]] = ("problem", "solution")
    default_prompt: ClassVar[str] = DEFAULT_PROMPT

    @staticmethod
    def parse(row: dict[str, Any], line: int) -> Problem:
        answer = row.get("answer") if isinstance(row.get("answer"),
                                                 str) and row["answer"].strip() else last_boxed(row["solution"])
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
