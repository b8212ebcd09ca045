"""GSM8K-style problems: JSONL lines with ``question`` and ``answer`` (a solution ending ``#### N``)."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from edge_adapt.generator.steps import StepRules
from edge_adapt.tasks.base import Problem
from edge_adapt.tasks.jsonl import JSONLTask

_CALCULATOR = re.compile(r"<<[^>]*>>")  # GSM8K's calculator annotations, e.g. <<9*2=18>>

DEFAULT_PROMPT = (
    "Solve the problem step by step. Separate the steps with a blank line and finish with "
    '"The answer is N."\n\nQuestion: {question}\nAnswer:\n'
)


class GSM8KTask(JSONLTask):
    name: ClassVar[str] = "gsm8k"
    required: ClassVar[tuple[str, ...]] = ("question", "answer")
    default_prompt: ClassVar[str] = DEFAULT_PROMPT

    @staticmethod
    def parse(row: dict[str, Any], line: int) -> Problem:
        solution = row["answer"]
        if "####" not in solution:
            raise ValueError("the answer has no '#### N' final line")
        gold = solution.rsplit("####", 1)[1].strip().replace(",", "")
        if not gold:
            raise ValueError("empty answer after '####'")
        level = row.get("level")  # optional: a difficulty label, for tables by level
        return Problem(id=f"gsm8k-{line:05d}", question=row["question"].strip(), answer=gold,
                       level=level if isinstance(level, int) and not isinstance(level, bool) else None,
                       meta={"solution": _CALCULATOR.sub("", solution), "line": line})

    @property
    def step_rules(self) -> StepRules:
        return StepRules(delimiter="\n\n", answer_pattern=r"answer is[^\n]*\n", max_step_tokens=256, max_new_tokens=1024)
