"""Free-form chat: any chat GGUF answering people's turns as they type them.

There is no prompt wrapper and no gold answer. What a server may do with a turn depends on
whether its answers can be compared: a question with a checkable answer (a number, a math
result) gains from more samples and a vote, a haiku or an explanation does not (two haikus have
no common answer to agree on). Which it is, is decided by the samples themselves: a search gives
up when its first samples hold no extractable answer (``SearchSettings.give_up_after``). Only a
turn that plainly asks for prose (:func:`asks_for_prose`) skips that look and gets one sample,
streamed as it is decoded.
"""

from __future__ import annotations

import re
from typing import ClassVar

from edge_adapt.errors import EdgeAdaptError
from edge_adapt.generator.steps import StepRules
from edge_adapt.tasks.base import Problem
from edge_adapt.tasks.grading import answers_equal, extract_answer

_ASKS_PROSE = re.compile(
    r"\b(write|compose|poem|haiku|story|essay|letter|e-?mail|translate|summari[sz]e|explain|why|describe|code|program|"
    r"function|list|name|joke|song|recipe|opinion)\b", re.IGNORECASE)


def asks_for_prose(text: str) -> bool:
    """Whether a turn plainly asks for prose (a poem, an explanation, code): answers nobody votes on."""
    return bool(_ASKS_PROSE.search(text))


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
        return Problem(id="chat", question=text, answer="", meta={"checkable": not asks_for_prose(text)})

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
