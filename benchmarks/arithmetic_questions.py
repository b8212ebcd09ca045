"""The default task's questions as a GSM8K-style JSONL file, for chat models that do not read the
task's chain notation: "What is (454+762)*3?" with "#### 3648" as the gold answer.

    python benchmarks/arithmetic_questions.py --split test --levels 1 2 3 -o arith-test.jsonl
    edge-adapt bench -o runs/smol-arith --task gsm8k --data arith-test.jsonl \\
        --generator SmolLM2-135M-Instruct.Q4_1.gguf --no-prm -s majority:n=1 -s majority:n=4 --limit 30 --max-new-tokens 256
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge_adapt.files import atomic_write_text
from edge_adapt.tasks import ArithmeticTask
from edge_adapt.tasks.expressions import to_conventional


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="test", choices=("train", "calibration", "test"))
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--per-level", type=int, default=60)
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args()
    task = ArithmeticTask()
    problems = [p for p in task.problems(args.split, args.per_level) if p.level in args.levels]
    rows = [{"question": f"What is {to_conventional(p.question)}?", "answer": f"#### {p.answer}", "level": p.level}
            for p in problems]
    atomic_write_text(args.out, "".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} questions to {args.out}")


if __name__ == "__main__":
    main()
