"""How well calibrated the PRM's *question* score is, level by level, on a finished bench run.

IAS sizes N from the PRM's quantiles of the empty prefix alone, but the recipe's calibration
figures pool every held-out prefix, where empty prefixes are about one record in twelve: a
question score biased one way can hide inside a good pooled figure (it did; the recipe's
evaluation now also reports the question score, over its 16 samples). This reads the records of
an `edge-adapt bench` run, takes a fixed best-of-N strategy (every question sampled N times at the
run's temperature: N Monte-Carlo rollouts of the empty prefix), and compares the question
quantiles the bench recorded with the share of right samples, by level, with the same metrics
as the recipe (`edge_adapt_tools/prm/metrics.py`: coverage counts a tie within half a Monte-Carlo step as tau).

    python benchmarks/question_calibration.py runs/search                   # best_of_n:n=32
    python benchmarks/question_calibration.py runs/search -s best_of_n:n=16
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from edge_adapt.bench.records import RunFolder, RunFolderError
from edge_adapt_tools.prm.metrics import calibration_metrics

LEVELS = (0.1, 0.5, 0.9)  # the quantiles a bench record stores for the question


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="an edge-adapt bench output folder (holds records.jsonl)")
    parser.add_argument("-s", "--strategy", default="best_of_n:n=32", help="a fixed best-of-N strategy of that run")
    args = parser.parse_args()
    folder = RunFolder(args.run)
    try:
        folder.config()  # a clear error when this is not a bench run folder
    except RunFolderError as exc:
        raise SystemExit(str(exc)) from None
    by_level: dict[str, list[tuple[list[float], float, int]]] = defaultdict(list)
    for r in folder.records():
        if r["strategy"] == args.strategy and r.get("question_quantiles") and r.get("candidates"):
            rate = r["candidates_correct"] / r["candidates"]
            by_level[str(r.get("level"))].append((r["question_quantiles"], rate, r["candidates"]))
    if not by_level:
        raise SystemExit(f"no records of {args.strategy!r} with question quantiles in {folder.records_path}; "
                         "choose a best_of_n strategy the run holds (-s)")
    print(f"question score vs the share of right samples ({args.strategy}), {folder.records_path}")
    print("| level | questions | share right | PRM median (mean) | Brier of the median | coverage q10 / q50 / q90 |")
    print("|---|---|---|---|---|---|")
    rows = sorted(by_level.items(), key=lambda kv: (kv[0] == "None", kv[0]))
    everything = [item for _, items in rows for item in items]
    for name, items in [*rows, ("all", everything)]:
        preds = np.array([q for q, _, _ in items])
        targets = np.array([t for _, t, _ in items])
        m = calibration_metrics(preds, targets, LEVELS, n_rollouts=np.array([n for *_, n in items]))
        cov = " / ".join(f"{v:.0%}" for v in m.coverage.values())
        print(f"| {name} | {m.n} | {targets.mean():.1%} | {preds[:, 1].mean():.2f} | {m.brier_median:.4f} | {cov} |")


if __name__ == "__main__":
    main()
