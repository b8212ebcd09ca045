"""Free-form chat: any chat GGUF answering people's turns as they type them.

There is no prompt wrapper and no gold answer. What a server may do with a turn depends on
whether its answers can be compared: a question with a checkable answer (a number, a math
result) gains from more samples and a vote, a haiku or an explanation does not (two haikus have
no common answer to agree on), so it is answered with one sample. :func:`checkable` is the rule,
kept conservative: a turn is searched only where it asks for a quantity.
"""

from __future__ import annotations

import re
from typing import ClassVar

from edge_adapt.errors import EdgeAdaptError
from edge_adapt.generator.steps import StepRules
from edge_adapt.tasks.base import Problem
from edge_adapt.tasks.grading import answers_equal, extract_answer

_NUMBER = re.compile(r"\d")
_EXPRESSION = re.compile(r"\d\s*[-+*/×^=]\s*\(?\s*\d|\\frac|\\sqrt|\bsolve\b.*=")
_ASKS_QUANTITY = re.compile(
    r"\b(how (many|much|long|far|old)|what is|what's|whats|calculate|compute|evaluate|solve|sum|product|total|"
    r"percent|percentage|average|remainder|divided|times|plus|minus|how fast)\b", re.IGNORECASE)
_ASKS_PROSE = re.compile(
    r"\b(write|compose|poem|haiku|story|essay|letter|e-?mail|translate|summari[sz]e|explain|why|describe|code|program|"
    r"function|list|name|joke|song|recipe|opinion)\b", re.IGNORECASE)


def checkable(text: str) -> bool:
    """Whether a turn asks for an answer that samples can agree on: a number (an arithmetic
    expression, or a quantity question with numbers in it) and no request for prose."""
    if not _NUMBER.search(text) or _ASKS_PROSE.search(text):
        return False
    return bool(_EXPRESSION.search(text) or _ASKS_QUANTITY.search(text))


class ChatTask:
    """People's turns, prompted as they are through the model's chat template."""

    name: ClassVar[str] = "chat"
    prompt_template = None  # the turn as the user wrote it

    @property
    def step_rules(self) -> StepRules:
        # a paragraph a step; the reply ends where the model ends its turn
        return StepRules(delimiter="\n\n", answer_pattern=None, max_step_tokens=512, max_new_tokens=512)

    def prompt(self, problem: Problem) -> str:
        return problem.question

    def extract_answer(self, solution: str) -> str | None:
        return extract_answer(solution)

    def is_correct(self, solution: str, problem: Problem) -> bool:
        return bool(problem.answer) and answers_equal(self.extract_answer(solution), problem.answer)

    def parse_question(self, text: str) -> Problem:
        if not text.strip():
            raise EdgeAdaptError("the message is empty")
        return Problem(id="chat", question=text, answer="", meta={"checkable": checkable(text)})

    def benchmark_problems(self, split: str = "test", seed: int = 0) -> list[Problem]:
        raise EdgeAdaptError("the chat task has no benchmark questions: benchmark with --task gsm8k/math and a file")

    def problem_at(self, index: int) -> Problem:
        raise EdgeAdaptError("the chat task has no numbered questions: ask one in words")

    def calibration_problems(self, split: str, per_level: int, *, seed: int = 0) -> list[Problem]:
        raise EdgeAdaptError("the chat task has no calibration questions: calibrate with --task gsm8k and your file")

    def display_question(self, problem: Problem) -> str:
        return problem.question

    def warm_up_problem(self) -> Problem:
        return Problem(id="warm-up", question="What is 12 + 30?", answer="42", meta={"checkable": True})
