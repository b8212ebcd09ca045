"""The default task's questions as a GSM8K-style JSONL file, for chat models that do not read the
task's chain notation: "What is (454+762)*3?" with "#### 3648" as the gold answer.

    python benchmarks/arithmetic_questions.py --split test --levels 1 2 3 -o arith-test.jsonl
    edge-adapt bench -o runs/smol-arith --task gsm8k --data arith-test.jsonl \\
        --generator SmolLM2-135M-Instruct.Q4_1.gguf --no-prm -s majority:n=1 -s majority:n=4 --limit 30 --max-new-tokens 256

``--shape OPS,DIGITS,MUL_MAX,MAX_VALUE`` asks for one level of another shape instead (a small
model's band: ``1,1,9,81`` is one operation on one-digit numbers). Such a level's questions are
all enumerated, shuffled with ``--seed`` and dealt: ``--held-out K`` to ``-o``, the rest to
``--rest-out`` (calibration questions disjoint from the benchmark's):

    python benchmarks/arithmetic_questions.py --shape 1,1,9,81 --held-out 100 -o test.jsonl --rest-out calib.jsonl

Several ``--shape`` give questions of mixed difficulty, level i for the i-th shape: each shape is
enumerated, shuffled and cut to ``--per-shape`` questions, ``--held-out`` of them (per shape) go
to ``-o`` and the rest to ``--rest-out``. SmolLM2-135M's calibration set (pass@1 from ~10% to ~90%):

    python benchmarks/arithmetic_questions.py --shape 1,1,2,18 --shape 1,1,9,81 --shape 2,1,9,81 \
        --shape 1,2,9,200 --per-shape 125 --held-out 50 -o smol-test.jsonl --rest-out smol-calib.jsonl
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
from collections.abc import Iterator
from pathlib import Path

from edge_adapt.files import atomic_write_text
from edge_adapt.tasks import ArithmeticTask
from edge_adapt.tasks.arithmetic import Level, solve
from edge_adapt.tasks.base import Problem
from edge_adapt.tasks.expressions import to_conventional

MAX_ENUMERATED = 200_000  # chains tried before a shape is called too large to enumerate


def parse_shape(text: str) -> Level:
    try:
        n_ops, digits, mul_max, max_value = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shape wants OPS,DIGITS,MUL_MAX,MAX_VALUE (e.g. 1,1,9,81), got {text!r}") from None
    return Level(n_ops, digits, mul_max, max_value)


def chains(level: Level) -> Iterator[str]:
    """Every chain of ``level``'s shape whose values stay in its range."""
    operands = [str(n) for n in level.operands]
    rights = [("+", operands), ("-", operands), ("*", [str(n) for n in range(2, level.mul_max + 1)])]
    moves = [op + right for op, values in rights for right in values]
    tried = 0
    for first in operands:
        for tail in itertools.product(moves, repeat=level.n_ops):
            tried += 1
            if tried > MAX_ENUMERATED:
                raise SystemExit(f"--shape has over {MAX_ENUMERATED} chains; sample a standard level with --levels instead")
            question = first + "".join(tail)
            if level.fits(solve(question)):
                yield question


def row(question: str, answer: str, level: int) -> dict:
    return {"question": f"What is {to_conventional(question)}?", "answer": f"#### {answer}", "level": level}


def write_rows(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} questions to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="test", choices=("train", "calibration", "test"))
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--per-level", type=int, default=60)
    parser.add_argument("--shape", type=parse_shape, action="append",
                        help="OPS,DIGITS,MUL_MAX,MAX_VALUE: a level of this shape, enumerated (repeatable: level i is the i-th)")
    parser.add_argument("--per-shape", type=int, help="with --shape: at most this many questions of each shape")
    parser.add_argument("--held-out", type=int, default=100, help="with --shape: questions (per shape) written to -o")
    parser.add_argument("--rest-out", type=Path, help="with --shape: the other questions (for calibration)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args()
    if args.shape is None:
        task = ArithmeticTask()
        problems: list[Problem] = [p for p in task.problems(args.split, args.per_level) if p.level in args.levels]
        write_rows(args.out, [row(p.question, p.answer, p.level) for p in problems])
        return
    held: list[dict] = []
    rest: list[dict] = []
    taken: set[str] = set()  # shapes overlap (1,1,2,18 is inside 1,1,9,81): a question is dealt once
    for level, shape in enumerate(args.shape, start=1):
        questions = [q for q in chains(shape) if q not in taken]
        random.Random(args.seed).shuffle(questions)
        questions = questions[: args.per_shape] if args.per_shape else questions
        taken.update(questions)
        if args.held_out > len(questions):
            raise SystemExit(f"--held-out {args.held_out} is more than shape {level}'s {len(questions)} questions")
        rows = [row(q, str(solve(q)[-1][3]), level) for q in questions]
        held += rows[: args.held_out]
        rest += rows[args.held_out:]
    write_rows(args.out, held)
    if args.rest_out:
        write_rows(args.rest_out, rest)


if __name__ == "__main__":
    main()
