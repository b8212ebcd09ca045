"""The default task: multi-step integer arithmetic with a controlled difficulty spread.

A problem is a chain of operations applied one at a time to the running result, ``Q:454+762*3``
(shown to people as ``(454+762)*3``: :mod:`edge_adapt.tasks.expressions` translates); its
solution does one operation per step, steps separated by a blank line, then an answer line::

    Q:454+762*3
    454+762=1216

    1216*3=3648

    A:3648

The format is compact on purpose (no words, one character per token for the default model):
a tiny generator learns it in minutes on a CPU, while the number of operations and the operand
sizes make questions easy or hard. Problems are generated deterministically from a seed, and the
split a question belongs to is a function of its text (a hash), so the train, calibration and
test splits can never share a problem, whatever sizes are drawn.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from edge_adapt.errors import EdgeAdaptError
from edge_adapt.generator.steps import StepRules
from edge_adapt.tasks.base import Problem
from edge_adapt.tasks.expressions import expression_in, to_chain, to_conventional

SPLITS = ("train", "calibration", "test")
# Share of the question space (by hash) that each split owns.
_SPLIT_BUCKETS = {"train": range(0, 80), "calibration": range(80, 90), "test": range(90, 100)}

_ANSWER = re.compile(r"A:\s*(-?\d+)")


@dataclass(frozen=True)
class Level:
    """A difficulty level: how many operations, how large the operands and every intermediate result."""

    n_ops: int
    add_digits: int  # operands of + and - have this many digits
    mul_max: int  # multipliers are drawn from 2..mul_max
    max_value: int = 999  # every intermediate result stays in [0, max_value]

    @property
    def operands(self) -> range:
        """The first operand and the operands of + and -."""
        return range(10 ** (self.add_digits - 1), 10**self.add_digits)

    def fits(self, steps: Sequence[tuple[int, str, int, int]]) -> bool:
        """Whether a chain's steps (``solve``) have this level's shape and stay in its value range."""
        return (len(steps) == self.n_ops and steps[0][0] in self.operands
                and all(b in range(2, self.mul_max + 1) if op == "*" else b in self.operands for _, op, b, _ in steps)
                and all(0 <= r <= self.max_value for *_, r in steps))


# Levels 1..6, sized for the shipped 3.5M-parameter generator (models/README.md): two-digit
# operations it masters (level 1 needs no search); three- and four-digit operands and results up
# to seven digits it gets right only some of the time, and longer chains compound the errors, so
# the hard levels need search and the hardest stays mostly out of reach. The spread is a property
# of the task *and* the generator: a generator trained on smaller operands solves nearly all of it.
DEFAULT_LEVELS: tuple[Level, ...] = (
    Level(1, 2, 9, max_value=99),
    Level(2, 3, 9, max_value=9_999),
    Level(4, 3, 9, max_value=9_999),
    Level(3, 4, 9, max_value=99_999),
    Level(5, 4, 9, max_value=99_999),
    Level(8, 4, 9, max_value=9_999_999),
)

TEST_PER_LEVEL = (84, 84, 83, 83, 83, 83)  # the 500-problem test split used for the default models


def split_of(question: str) -> str:
    bucket = int.from_bytes(hashlib.sha256(question.encode()).digest()[:4], "big") % 100
    return next(name for name, span in _SPLIT_BUCKETS.items() if bucket in span)


def solve(question: str) -> list[tuple[int, str, int, int]]:
    """The chain's steps as (left, op, right, result), evaluated left to right."""
    tokens = re.findall(r"\d+|[+\-*]", question)
    if not tokens or len(tokens) % 2 == 0:
        raise EdgeAdaptError(f"not an arithmetic chain: {question!r}")
    acc = int(tokens[0])
    steps = []
    for op, num in zip(tokens[1::2], tokens[2::2], strict=True):
        right = int(num)
        result = acc + right if op == "+" else acc - right if op == "-" else acc * right
        steps.append((acc, op, right, result))
        acc = result
    return steps


class ArithmeticTask:
    """The default task (see the module docstring)."""

    name: ClassVar[str] = "arithmetic"

    def __init__(self, levels: tuple[Level, ...] = DEFAULT_LEVELS) -> None:
        self.levels = levels

    @property
    def step_rules(self) -> StepRules:
        # The answer line ends with EOS; the pattern also stops a model that goes on after it.
        return StepRules(delimiter="\n\n", answer_pattern=r"A:-?\d+\n", max_step_tokens=32, max_new_tokens=256)

    def prompt(self, problem: Problem) -> str:
        return f"Q:{problem.question}\n"

    def solution(self, problem: Problem) -> str:
        """The reference solution, in the format the generator is trained on."""
        lines = [f"{a}{op}{b}={r}" for a, op, b, r in solve(problem.question)]
        return "\n\n".join(lines) + f"\n\nA:{problem.answer}"

    def extract_answer(self, solution: str) -> str | None:
        found = _ANSWER.findall(solution)
        return str(int(found[-1])) if found else None

    def is_correct(self, solution: str, problem: Problem) -> bool:
        return self.extract_answer(solution) == problem.answer

    def level_of(self, question: str) -> int | None:
        """The first level whose shape ``question`` has (operation count, operand digits,
        multipliers, intermediate results), or None: a generator trained on the levels has seen
        nothing like such a question, and the shipped one answers them wrong (``37+48*3``, two-digit
        operands in a chain, it copies as ``347+448``)."""
        steps = solve(question)
        return next((level for level, spec in enumerate(self.levels, start=1) if spec.fits(steps)), None)

    # -- problems ----------------------------------------------------------------------------

    def benchmark_problems(self, split: str = "test", seed: int = 0) -> list[Problem]:
        """The split's benchmark-sized list (``seed`` 0: the one the model card reports)."""
        return self.problems(split, list(TEST_PER_LEVEL), seed=seed)

    def problem_at(self, index: int) -> Problem:
        return self.problem("test", index)

    def calibration_problems(self, split: str, per_level: int, *, seed: int = 0) -> list[Problem]:
        return self.problems(split, per_level, seed=seed)

    def warm_up_problem(self) -> Problem:
        return self.problems("calibration", 1)[0]

    def parse_question(self, text: str) -> Problem:
        """A user's question, read by the usual precedence (parentheses allowed) and asked as the
        chain with that value: ``454+762*3`` is asked as ``762*3+454`` (2740)."""
        raw = text.strip().removeprefix("Q:")
        try:
            typed = expression_in(raw)
            question = to_chain(typed)
        except EdgeAdaptError as exc:
            raise EdgeAdaptError(f"not a default-task question: {exc}; its questions look like (454+762)*3 or 762*3+454 "
                                 "(`edge-adapt solve --index N` shows one)") from None
        typed = typed.replace(" ", "")
        steps = solve(question)
        level = self.level_of(question)
        notes = []
        if typed != raw.replace(" ", ""):  # words, emoji, markup around the expression
            notes.append(f"read as: {typed}; text that is not arithmetic was left out")
        if to_conventional(question) != typed:
            notes.append(f"asked as the chain {question} (one operation at a time), which is {typed} by the usual precedence")
        meta = {"note": "; ".join(notes)} if notes else {}
        if level is None:
            meta["warning"] = (
                f"{to_conventional(question)} is unlike every level of the default task (operation count, operand digits, "
                "result size), so the shipped generator has never seen such a question and may answer it wrong; "
                "`edge-adapt solve --index N` shows questions it was built for (0-83 are the easiest)")
        return Problem(id="cli", question=question, answer=str(steps[-1][3]), level=level, meta=meta)

    def display_question(self, problem: Problem) -> str:
        return to_conventional(problem.question)

    def problem(self, split: str, index: int, *, seed: int = 0) -> Problem:
        """Problem ``index`` of the standard test-sized list of ``split`` (levels in order)."""
        problems = self.problems(split, TEST_PER_LEVEL, seed=seed)
        if not 0 <= index < len(problems):
            raise EdgeAdaptError(f"--index must be in 0..{len(problems) - 1} for the {split} split, got {index}")
        return problems[index]

    def sample(self, rng: random.Random, level: int) -> Problem:
        """One random problem of ``level`` (1-based), ignoring splits."""
        spec = self.levels[level - 1]
        lo, hi = spec.operands[0], spec.operands[-1]
        while True:
            acc = rng.randint(lo, hi)
            parts = [str(acc)]
            for _ in range(spec.n_ops):
                op = rng.choice("+-*")
                right = rng.randint(2, spec.mul_max) if op == "*" else rng.randint(lo, hi)
                acc = acc + right if op == "+" else acc - right if op == "-" else acc * right
                parts += [op, str(right)]
            question = "".join(parts)
            if spec.fits(solve(question)):  # the shape holds by construction; this checks the values
                return Problem(id="", question=question, answer=str(acc), level=level)

    def problems(self, split: str, n_per_level: int | Sequence[int], *, seed: int = 0) -> list[Problem]:
        """Distinct problems of every level, all belonging to ``split``: ``n_per_level`` of each,
        or ``n_per_level[i]`` of level ``i + 1``. The same arguments always give the same list."""
        if split not in SPLITS:
            raise EdgeAdaptError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        counts = [n_per_level] * len(self.levels) if isinstance(n_per_level, int) else list(n_per_level)
        if len(counts) != len(self.levels):
            raise EdgeAdaptError(f"got {len(counts)} per-level counts for {len(self.levels)} levels")
        rng = random.Random(f"{seed}:{split}")
        out: list[Problem] = []
        for level, count in enumerate(counts, start=1):
            seen: set[str] = set()
            while len(seen) < count:
                p = self.sample(rng, level)
                if p.question in seen or split_of(p.question) != split:
                    continue
                seen.add(p.question)
                out.append(Problem(f"{split}-L{level}-{len(seen) - 1:05d}", p.question, p.answer, level))
        return out
