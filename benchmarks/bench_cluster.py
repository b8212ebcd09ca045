"""Calibration rollouts on one process against `--ray` workers, and what a cluster would do.

Rolls out the same default-task calibration questions twice with the shipped generator: locally
(one process, all cores to llama.cpp) and on a local Ray instance with 2 workers of 1 core each,
checks that both wrote the same records, and prints questions per hour and generated tokens per
second for each. Then the scaling model on paper: from the measured per-question cost, how long
the paper's calibration recipe takes with W workers (each worker's rate is measured, so the
model assumes what a cluster gives: W workers, each with the cores one worker had here).

    python benchmarks/bench_cluster.py [--questions 40] [-n 4] [-m 4]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from edge_adapt.cluster import ClusterSettings
from edge_adapt.generator import GeneratorConfig
from edge_adapt.models import load_default_models
from edge_adapt.tasks import ArithmeticTask
from edge_adapt_tools.prm.rollouts import RolloutSettings, build_calibration_set

# The paper's recipe (Park et al., 2506.09338): N solutions per question, every step prefix
# continued M times, over its calibration questions.
PAPER_N, PAPER_M, PAPER_QUESTIONS = 8, 8, 500


def keyed(path: Path) -> dict:
    return {(r["question_id"], tuple(r["prefix"])): r for r in map(json.loads, path.read_text().splitlines())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=40)
    parser.add_argument("-n", "--solutions", type=int, default=4)
    parser.add_argument("-m", "--continuations", type=int, default=4)
    args = parser.parse_args()
    generator = load_default_models(None).generator
    task = ArithmeticTask()
    problems = task.calibration_problems("calibration", -(-args.questions // len(task.levels)))[: args.questions]
    settings = RolloutSettings(n_solutions=args.solutions, n_continuations=args.continuations)
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for label, threads, cluster in (("local, 1 process", cores, None),
                                        ("--ray, 2 workers x 1 core", 1, ClusterSettings(workers=2, cpus_per_worker=1))):
            out = Path(tmp) / f"{'ray' if cluster else 'local'}.jsonl"
            started = time.perf_counter()
            report = build_calibration_set(generator, task, problems, out, settings,
                                           GeneratorConfig(n_ctx=8192, n_seq_max=256, n_threads=threads), cluster=cluster)
            wall = time.perf_counter() - started  # the Ray run includes starting Ray and its workers
            rows.append((label, report, wall))
        same = keyed(Path(tmp) / "local.jsonl") == keyed(Path(tmp) / "ray.jsonl")
    print(f"{args.questions} default-task calibration questions, N={args.solutions}, M={args.continuations}, "
          f"{cores} CPU cores; records identical: {same}")
    print("| run | wall s | questions/hour | generated tokens/s | records |")
    print("|---|---|---|---|---|")
    for label, report, wall in rows:
        print(f"| {label} | {wall:.0f} | {3600 * report.questions / wall:.0f} | {report.generated_tokens / wall:.0f} | "
              f"{report.records} |")
    (_, local, local_wall), (_, remote, remote_wall) = rows
    print(f"\n--ray / local throughput: {local_wall / remote_wall:.2f}x (same {cores} cores: Ray adds workers, not cores)")
    workers = remote.cluster["workers"] if remote.cluster else []
    per_worker = [w["questions_per_hour"] for w in workers if w["questions_per_hour"]]
    rate = sum(per_worker) / len(per_worker) if per_worker else 0.0
    tokens_per_question = remote.generated_tokens / max(1, remote.questions)
    # a question costs N solutions plus M continuations of each distinct prefix (~ s per solution,
    # from the records: one record per distinct prefix, the empty one included)
    s = max(0.0, (remote.records / max(1, remote.questions) - 1) / args.solutions)
    scale = (PAPER_N * (1 + s * PAPER_M)) / (args.solutions * (1 + s * args.continuations))
    print(f"\nscaling model: one worker (1 core) does {rate:.0f} questions/hour at N={args.solutions}, M={args.continuations} "
          f"({tokens_per_question:,.0f} generated tokens a question, {s:.1f} distinct prefixes per solution); the paper's recipe "
          f"(N={PAPER_N}, M={PAPER_M}) costs "
          f"~{scale:.1f}x that per question")
    print("| workers | questions/hour (paper recipe) | hours for 500 questions |")
    print("|---|---|---|")
    for w in (1, 2, 4, 8, 16, 32, 64):
        per_hour = w * rate / scale
        print(f"| {w} | {per_hour:.0f} | {PAPER_QUESTIONS / per_hour:.2f} |")


if __name__ == "__main__":
    main()
