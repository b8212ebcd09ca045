"""The energy-aware policy on the default models, on the held-out test split, in one run.

1. Per-question budgets: IAS best-of-N (N_max 32) under an energy budget and, separately, a
   latency budget. Prints how many questions stayed within each (the energy one must be all of
   them; the latency one at least 95%), with the meter that measured them (or "estimated").
2. A battery's worth of energy over the whole split: the same total joules spent evenly per
   question vs allocated by expected gain per joule from the PRM's calibrated question scores.
   Prints correct answers and joules actually spent for both.

    python benchmarks/bench_energy.py                   # 500 test problems (about 10 minutes here)
    python benchmarks/bench_energy.py --per-level 20    # quicker
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from rich.console import Console
from rich.table import Table

from edge_adapt.energy import open_meter
from edge_adapt.generator import Generator, GeneratorConfig, SamplingParams
from edge_adapt.models import load_default_models
from edge_adapt.policy import Budget, EnergyPolicy, allocate_batch, even_allocation
from edge_adapt.prm import QuantilePRM
from edge_adapt.search import BestOfN, IASBestOfN, Searcher, SearchSettings
from edge_adapt.tasks import ArithmeticTask
from edge_adapt.tasks.arithmetic import TEST_PER_LEVEL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-level", type=int, default=None, help="problems per level (default: the 500-problem split)")
    parser.add_argument("--energy", type=float, default=None, help="per-question energy budget, J (default: 40%% of best-of-32's mean)")
    parser.add_argument("--latency", type=float, default=None, help="per-question latency budget, s (default: 40%% of best-of-32's mean)")
    parser.add_argument("--samples-per-question", type=float, default=2.0, help="batch budget: this many samples' worth per question")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--meter", default=None)
    args = parser.parse_args()
    console = Console(width=None if sys.stdout.isatty() else 150)

    models = load_default_models()
    task = ArithmeticTask()
    problems = task.problems("test", [args.per_level] * 6 if args.per_level else list(TEST_PER_LEVEL))
    with Generator(models.generator, GeneratorConfig(n_ctx=16384, n_seq_max=80, n_threads=args.threads)) as gen:
        prm = QuantilePRM(models.prm, threads=args.threads)
        searcher = Searcher(gen, prm, task, SearchSettings(sampling=SamplingParams(temperature=0.7)))
        with open_meter(args.meter, usage=searcher.usage) as meter:
            policy = EnergyPolicy(meter, Budget(), searcher.usage)
            searcher.policy = policy
            warm = task.problems("calibration", 2)
            for p in warm:
                searcher.run(BestOfN(n=32), p, seed=args.seed)  # measure this device; sets the default budgets
            reference = [searcher.run(BestOfN(n=32), p, seed=args.seed + 1) for p in warm[::2]]  # one per level
            ref_j = statistics.mean(r.cost.joules for r in reference)
            ref_s = statistics.mean(r.cost.wall_s for r in reference)
            energy_budget = args.energy or round(0.4 * ref_j, 2)
            latency_budget = args.latency or round(0.4 * ref_s, 3)
            console.print(f"meter: {meter.source} ({'estimated' if meter.estimated else 'measured'}); best-of-32 costs "
                          f"{ref_j:.2f} J and {ref_s:.2f} s per question here")

            rows = []
            for label, budget in (("energy", Budget(energy_j=energy_budget)), ("latency", Budget(latency_s=latency_budget))):
                policy.budget = budget
                started = time.perf_counter()
                results = searcher.run_many(IASBestOfN(n_max=32), problems, seed=args.seed)
                limit = energy_budget if label == "energy" else latency_budget
                spent = [r.cost.joules if label == "energy" else r.cost.wall_s for r in results]
                within = sum(x <= limit for x in spent)
                correct = sum(bool(r.chosen) and task.is_correct(r.chosen.text, p) for r, p in zip(results, problems, strict=True))
                capped = sum(any(d.kind in ("budget_cap", "lowered_confidence") for d in r.decisions) for r in results)
                rows.append((label, f"{limit:g} {'J' if label == 'energy' else 's'}", f"{within}/{len(results)} ({within / len(results):.1%})",
                             f"{max(spent):.3g}", f"{statistics.mean(spent):.3g}", f"{capped}", f"{correct / len(results):.1%}",
                             f"{time.perf_counter() - started:.0f}"))
            table = Table(title=f"Per-question budgets, IAS best-of-N (N_max 32), {len(problems)} test problems")
            for col in ("budget", "limit", "within budget", "max spent", "mean spent", "questions capped", "accuracy", "run s"):
                table.add_column(col, justify="left" if col == "budget" else "right")
            for row in rows:
                table.add_row(*row)
            console.print(table)

            # -- a battery's worth over the whole split ---------------------------------------------
            policy.budget = Budget()
            est = policy.estimates
            tokens, joules_per_sample, _ = est.unit_cost("sample")
            per_sample = sum(r.cost.joules for r in reference) / sum(r.cost.samples for r in reference)
            total = args.samples_per_question * len(problems) * per_sample
            before = meter.read()
            scores = [prm.score_question(p.question) for p in problems]
            scoring_j = meter.read().joules - before.joules  # charged to the allocation that needs the scores
            plans = {
                "even (same share per question)": (even_allocation(len(problems), per_sample, total), 0.0),
                "by expected gain per joule": (allocate_batch([q.median for q in scores], per_sample, total - scoring_j), scoring_j),
            }
            table = Table(title=f"One energy budget for the whole split: {total:.1f} J ({args.samples_per_question:g} samples' worth per question)")
            for col in ("allocation", "correct", "accuracy", "joules spent", "within total", "questions given 0 samples"):
                table.add_column(col, justify="left" if col == "allocation" else "right")
            for label, (plan, spent_before) in plans.items():
                correct, spent = 0, spent_before
                for i, (p, n) in enumerate(zip(problems, plan.samples, strict=True)):
                    if n == 0:
                        continue
                    r = searcher.run(BestOfN(n=n), p, seed=args.seed + i)
                    spent += r.cost.joules
                    correct += bool(r.chosen) and task.is_correct(r.chosen.text, p)
                table.add_row(label, str(correct), f"{correct / len(problems):.1%}", f"{spent:.1f}",
                              "yes" if spent <= total else f"no (+{spent / total - 1:.0%})", str(plan.samples.count(0)))
            console.print(table)
            console.print(f"(planned with {per_sample:.3f} J per sample, measured on the warm-up; "
                          f"largest sample seen {tokens:.0f} tokens, {joules_per_sample:.3f} J)")


if __name__ == "__main__":
    main()
