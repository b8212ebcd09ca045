"""Reading benchmark JSONL files the user has, with every bad line reported by its number."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from edge_adapt.errors import EdgeAdaptError
from edge_adapt.generator.steps import StepRules
from edge_adapt.tasks.base import Problem
from edge_adapt.tasks.grading import answers_equal, extract_answer

T = TypeVar("T")


def load_jsonl(
    path: str | os.PathLike[str], parse: Callable[[dict[str, Any], int], T], required: Sequence[str]
) -> list[T]:
    """Parse every line with ``parse(row, line_number)``; lines that are not JSON objects, lack
    a ``required`` field or fail ``parse`` (ValueError) are collected and reported together."""
    file = Path(path)
    if not file.is_file():
        raise EdgeAdaptError(f"{file}: no such file")
    items: list[T] = []
    problems: list[str] = []
    with open(file, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise ValueError("not UTF-8 text (is this the JSONL file?)") from None
                try:
                    row = json.loads(line)
                except RecursionError:
                    raise ValueError("JSON nested too deeply") from None
                if not isinstance(row, dict):
                    raise ValueError("not a JSON object")
                missing = [k for k in required if not isinstance(row.get(k), str) or not row[k].strip()]
                if missing:
                    raise ValueError(f"missing or empty field(s) {', '.join(missing)}")
                items.append(parse(row, number))
            except (json.JSONDecodeError, ValueError) as exc:
                problems.append(f"line {number}: {exc}")
            if len(problems) > 100:  # a file of another kind: say so without reading all of it
                break
    if problems:
        shown = "; ".join(problems[:10]) + (f"; ... {len(problems) - 10} more" if len(problems) > 10 else "")
        raise EdgeAdaptError(f"{file}: {len(problems)} malformed line(s): {shown}")
    if not items:
        raise EdgeAdaptError(f"{file}: no problems in the file")
    return items


class JSONLTask:
    """A task whose problems are the lines of a user's JSONL file (GSM8K- and MATH-style).

    A subclass names its fields (``required``), turns a row into a :class:`Problem` (``parse``),
    and sets its prompt and step rules; reading, prompting and grading are shared."""

    name: ClassVar[str]
    required: ClassVar[tuple[str, ...]]
    default_prompt: ClassVar[str]

    def __init__(self, path: str | os.PathLike[str] | None, prompt_template: str | None = None) -> None:
        self.path = path
        self.prompt_template = prompt_template or self.default_prompt
        try:
            self.prompt_template.format(question="")
        except (KeyError, IndexError, ValueError) as exc:
            raise EdgeAdaptError(f"prompt template {self.prompt_template!r} must hold {{question}} and no other "
                                 f"placeholder ({exc!r}); write literal braces as {{{{ }}}}") from None
        self._problems = load_jsonl(path, self.parse, required=self.required) if path is not None else []
        lines: dict[str, int] = {}
        for p in self._problems:
            if p.id in lines:
                raise EdgeAdaptError(f"{path}: problem id {p.id!r} appears twice (lines {lines[p.id]} and "
                                     f"{p.meta.get('line')}); every problem needs its own id")
            lines[p.id] = p.meta.get("line", 0)

    @staticmethod
    def parse(row: dict[str, Any], line: int) -> Problem:
        raise NotImplementedError

    @property
    def step_rules(self) -> StepRules:
        raise NotImplementedError

    def problems(self) -> list[Problem]:
        return list(self._problems)

    def benchmark_problems(self, split: str = "test", seed: int = 0) -> list[Problem]:
        if (split, seed) != ("test", 0):
            raise EdgeAdaptError("--split and --question-seed choose the default task's questions; a file is its own "
                                 "split (write another file for other questions)")
        return self.problems()

    def problem_at(self, index: int) -> Problem:
        if self.path is None:
            raise EdgeAdaptError(f"--index reads a problem of your file: pass --data PATH with --task {self.name}")
        if not 0 <= index < len(self._problems):
            raise EdgeAdaptError(f"--index must be in 0..{len(self._problems) - 1} for {self.path}, got {index}")
        return self._problems[index]

    def calibration_problems(self, split: str, per_level: int, *, seed: int = 0) -> list[Problem]:
        """The file's first ``6 x per_level`` problems (a file is one split, read in order)."""
        return self.problems()[: 6 * per_level]

    def display_question(self, problem: Problem) -> str:
        return problem.question

    def warm_up_problem(self) -> Problem:
        if not self._problems:
            return Problem(id="warm-up", question="What is 2 + 3?", answer="5")
        return self._problems[0]

    def parse_question(self, text: str) -> Problem:
        if not text.strip():
            raise EdgeAdaptError("the question is empty")
        return Problem(id="cli", question=text.strip(), answer="")

    def prompt(self, problem: Problem) -> str:
        return self.prompt_template.format(question=problem.question)

    def extract_answer(self, solution: str) -> str | None:
        return extract_answer(solution)

    def is_correct(self, solution: str, problem: Problem) -> bool:
        return answers_equal(self.extract_answer(solution), problem.answer)
