"""Quantile PRM scorer latency (batch 1, 8, 32 prefixes) for fp32 and int8 on CPU, with the
held-out calibration metrics of each, measured in one run through the device scorer.

    python benchmarks/bench_prm.py --prm models/prm --calibration models/calibration.jsonl

The held-out questions are the ones the PRM build held out (its prm_config.json records the
split). Each batch holds prefixes of one question, as search scores them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edge_adapt.assembly import open_prm
from edge_adapt.prm import PRMBundle
from edge_adapt_tools.prm.calibration_data import read_records
from edge_adapt_tools.prm.data import split_questions
from edge_adapt_tools.prm.metrics import runtime_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prm", type=Path, required=True, help="exported PRM folder")
    parser.add_argument("--calibration", type=Path, required=True, help="the calibration JSONL it was built from")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    console = Console(width=None if sys.stdout.isatty() else 150)

    bundle = PRMBundle.load(args.prm)
    split = bundle.metrics.get("split", {"holdout": 0.2, "seed": 0})
    records = read_records(args.calibration)
    _, held = split_questions(records, split["holdout"], split["seed"])
    held_records = [r for r in records if r.question_id in held]
    by_question: dict[str, list] = defaultdict(list)
    for r in held_records:
        by_question[r.question_id].append(list(r.prefix))
    questions = sorted(by_question, key=lambda q: -len(by_question[q]))
    question_text = {r.question_id: r.question for r in held_records}
    batches = [int(b) for b in args.batches.split(",")]

    table = Table(title=f"PRM scorer on CPU: {args.prm} ({len(held)} held-out questions, {len(held_records)} prefixes)")
    for col in ("variant", "size", "batch", "median ms", "p90 ms", "prefixes/s", "tokens/prefix", "Brier", "ECE",
                "coverage q10/q50/q90"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for variant in [v for v in ("fp32", "int8") if v in bundle.models]:
        m = runtime_metrics(args.prm, variant, held_records)
        prm = open_prm(args.prm, providers=["CPUExecutionProvider"], variant=variant, threads=args.threads,
                       max_batch=max(batches))
        for b in batches:
            qid = questions[0]
            prefixes = [by_question[qid][i % len(by_question[qid])] for i in range(b)]
            prm.score(question_text[qid], prefixes)  # warm-up
            before = prm.stats
            times = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                prm.score(question_text[qid], prefixes)
                times.append(time.perf_counter() - started)
            spent = prm.stats - before
            times.sort()
            table.add_row(
                variant, f"{bundle.model_path(variant).stat().st_size / 1e6:.1f} MB", str(b),
                f"{statistics.median(times) * 1e3:.2f}", f"{times[int(0.9 * (len(times) - 1))] * 1e3:.2f}",
                f"{b / statistics.median(times):,.0f}", f"{spent.tokens / spent.prefixes:.0f}",
                f"{m.brier_median:.4f}", f"{m.ece_median:.4f}", " / ".join(f"{v:.0%}" for v in m.coverage.values()),
            )
    console.print(table)


if __name__ == "__main__":
    main()
