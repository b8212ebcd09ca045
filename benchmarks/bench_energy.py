"""The energy-aware policy on the default models, on the held-out test split, in one run.

1. Per-question budgets: IAS best-of-N (N_max 32) under an energy budget and, separately, a
   latency budget. Prints how many questions stayed within each (the energy one must be all of
   them; the latency one at least 95%), with the meter that measured them (or "estimated").
2. A battery's worth of energy over the whole split (1, 2 and 4 samples' worth per question):
   every question the same number of samples vs samples allocated by expected gain per joule
   from the PRM's calibrated question scores, each question answered by majority vote. Three
   allocations: with the pass@n gains p(1-p)^(n-1) at the PRM's median p; with the gains of the
   majority vote that actually picks the answer, at the median p; and with the vote's gains
   averaged over the PRM's quantiles of p (edge_adapt/budget/allocation.py says why each step
   matters); and with the majority vote's gain curves measured offline for this PRM (the ones
   adaptive search is calibrated with, selector_model.json), by the question's median. Every plan is held to the total: a
question whose planned cost no longer fits is
   cut (in the same shuffled order for all). And, planned as it goes, adaptive search (the
   ``solve`` default, its calibrated pick, its PRM work charged) with its price paced to the
   battery (``BatteryPacer``): it also sees each question's samples, not only the question's
   score. Prints correct answers and joules spent for each.

    python benchmarks/bench_energy.py --latency 0.6     # 500 test problems (17 minutes on 2 CPU cores)
    python benchmarks/bench_energy.py --per-level 20    # quicker
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

from rich.console import Console
from rich.table import Table

from edge_adapt.assembly import StackSettings, open_stack
from edge_adapt.budget.allocation import (
    AnyCorrect,
    BatteryPacer,
    CalibratedSelection,
    PluralityVote,
    SuccessBelief,
    allocate_batch,
    even_allocation,
)
from edge_adapt.budget.guard import Budget
from edge_adapt.energy import Meter
from edge_adapt.errors import BudgetError
from edge_adapt.models import load_default_models
from edge_adapt.prm import QuantilePRM
from edge_adapt.search import BestOfN, IASBestOfN, Searcher, SearchResult, ValueSampling
from edge_adapt.settings import MeterSettings, ModelSettings, RunSettings
from edge_adapt.tasks import ArithmeticTask, Problem
from edge_adapt.tasks.arithmetic import TEST_PER_LEVEL


def sample_cost_model(one: list[tuple[Problem, SearchResult]], many: list[tuple[Problem, SearchResult]]) -> tuple[float, float]:
    """(joules to open a question, joules per sample per question character), from warm-up runs of
    one and of many samples on the same questions. A sample's cost grows with its solution, and on
    a chain task the solution grows with the question (one step per operation); opening a
    question (prefill, scoring it) costs the same whatever the number of samples. A flat cost per
    sample overspent the even plan by 20% in the first version of this benchmark."""
    extra = sum(r_many.cost.joules - r_one.cost.joules for (_, r_one), (_, r_many) in zip(one, many, strict=True))
    units = sum((r_many.cost.samples - r_one.cost.samples) * len(p.question) for (p, r_one),
                (_, r_many) in zip(one, many, strict=True))
    per_char = extra / units
    fixed = statistics.mean(max(r.cost.joules - r.cost.samples * per_char * len(p.question), 0.0) for p, r in one)
    return fixed, per_char


def execute(searcher: Searcher, problems: list[Problem], samples: tuple[int, ...], costs: list[float], fixed: float, total: float,
            already_spent: float, order: list[int], seed: int) -> tuple[int, float, int]:
    """Run a plan under a hard total: questions in ``order`` (shuffled, so neither plan loses the
    same questions to the empty battery), each with its planned number of majority-voted
    samples, while its planned cost (opening the question plus its samples) still fits what is
    left. Returns (correct, joules spent, questions cut)."""
    correct, spent, cut = 0, already_spent, 0
    for i in order:
        n = samples[i]
        if n == 0:
            continue
        if spent + fixed + n * costs[i] > total:
            cut += 1
            continue
        r = searcher.run(BestOfN(n=n, select="majority"), problems[i], seed=seed + i)
        spent += r.cost.joules
        correct += bool(r.answer) and r.answer == problems[i].answer
    return correct, spent, cut


def execute_paced(searcher: Searcher, problems: list[Problem], costs: list[float], fixed: float, total: float,
                  order: list[int], seed: int) -> tuple[int, float, int, float]:
    """Adaptive search over the questions in ``order``, its price paced to spend ``total`` by the
    last one; each question is also capped by what is left. Returns (correct, joules spent,
    questions cut, mean samples)."""
    pacer = BatteryPacer(total, len(problems))
    correct, cut, samples = 0, 0, 0
    for i in order:
        if pacer.spent + fixed + costs[i] > total:
            cut += 1
            pacer.record(0.0)
            continue
        try:
            r = searcher.run(ValueSampling(price=pacer.price), problems[i], seed=seed + i,
                             budget=Budget(energy_j=pacer.left, safety=1.0))
        except BudgetError:  # what is left cannot buy one answer here: the battery is empty
            cut += 1
            pacer.record(0.0)
            continue
        pacer.record(r.cost.joules)
        samples += r.cost.samples
        correct += bool(r.answer) and r.answer == problems[i].answer
    return correct, pacer.spent, cut, samples / len(problems)


def battery_comparison(searcher: Searcher, prm: QuantilePRM, meter: Meter, problems: list[Problem],
                       one: list[tuple[Problem, SearchResult]], many: list[tuple[Problem, SearchResult]],
                       samples_per_question: float, seed: int) -> Table:
    """One total energy budget over the split: the same samples per question vs allocation by
    expected gain per joule. A question runs with the same seed under every plan (its first
    samples are the same ones), so the plans differ mostly where their sample counts differ."""
    fixed, per_char = sample_cost_model(one, many)
    costs = [per_char * len(p.question) for p in problems]
    total = len(problems) * fixed + samples_per_question * sum(costs)
    before = meter.read()
    scores = [prm.score_question(p.question) for p in problems]
    scoring_j = meter.read().joules - before.joules  # charged to the allocation that needs the scores
    medians = [q.median for q in scores]
    beliefs = [SuccessBelief.from_quantiles(q.levels, q.values) for q in scores]
    plans = {"even (same samples per question)": (even_allocation(len(problems), sum(costs) / len(problems), total,
                                                                  fixed).samples, 0.0)}
    for label, success, selection in (("gain per joule, pass@n gains p(1-p)^(n-1), median p", medians, AnyCorrect()),
                                      ("gain per joule, majority-vote gains, median p", medians, PluralityVote()),
                                      ("gain per joule, majority-vote gains, p's quantiles", beliefs, PluralityVote()),
                                      ("gain per joule, calibrated majority-vote curves (selector_model.json)", medians,
                                       CalibratedSelection(searcher.answer_model, "majority"))):
        plan = allocate_batch(success, costs, total - scoring_j, first_sample_joules=fixed, selection=selection)
        plans[label] = (plan.samples, scoring_j)
    order = list(range(len(problems)))
    random.Random(seed).shuffle(order)
    table = Table(title=f"One energy budget for the whole split: {total:.1f} J ({samples_per_question:g} samples' worth "
                        f"per question), majority vote over each question's samples")
    for col in ("allocation", "correct", "accuracy", "joules spent", "within total", "given 0 samples", "cut by the budget"):
        table.add_column(col, justify="left" if col == "allocation" else "right")
    for label, (samples, spent_before) in plans.items():
        correct, spent, cut = execute(searcher, problems, samples, costs, fixed, total, spent_before, order, seed)
        table.add_row(label, str(correct), f"{correct / len(problems):.1%}", f"{spent:.1f}",
                      "yes" if spent <= total else f"no (+{spent / total - 1:.1%})", str(samples.count(0)), str(cut))
    correct, spent, cut, mean_samples = execute_paced(searcher, problems, costs, fixed, total, order, seed)
    table.add_row(f"adaptive search (solve's default), price paced to the battery ({mean_samples:.2f} samples/q)", str(correct),
                  f"{correct / len(problems):.1%}", f"{spent:.1f}", "yes" if spent <= total else f"no (+{spent / total - 1:.1%})",
                  "-", str(cut))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-level", type=int, default=None, help="problems per level (default: the 500-problem split)")
    parser.add_argument("--energy", type=float, default=None,
                        help="per-question energy budget, J (default: 40%% of best-of-32's mean)")
    parser.add_argument("--latency", type=float, default=None,
                        help="per-question latency budget, s (default: 40%% of best-of-32's mean)")
    parser.add_argument("--samples-per-question", type=float, nargs="+", default=[1.0, 2.0, 4.0],
                        help="batch budgets: this many samples' worth per question (one comparison each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--meter", default=None)
    args = parser.parse_args()
    console = Console(width=None if sys.stdout.isatty() else 150)

    models = load_default_models()
    task = ArithmeticTask()
    problems = task.problems("test", [args.per_level] * 6 if args.per_level else list(TEST_PER_LEVEL))
    strategies = (BestOfN(n=32), IASBestOfN(n_max=32), ValueSampling())
    run = RunSettings(ModelSettings(models.generator, models.prm, args.threads), meter=MeterSettings(args.meter))
    settings = StackSettings(run, task, strategies)
    with open_stack(settings) as stack:
        searcher, prm, meter = stack.searcher, stack.prm, stack.meter
        warm = task.problems("calibration", 2)
        for p in warm:
            searcher.run(BestOfN(n=32), p, seed=args.seed)  # measure this device; sets the default budgets
        reference = [(p, searcher.run(BestOfN(n=32), p, seed=args.seed + 1)) for p in warm[::2]]  # one per level
        single = [(p, searcher.run(BestOfN(n=1), p, seed=args.seed + 1)) for p in warm[::2]]
        ref_j = statistics.mean(r.cost.joules for _, r in reference)
        ref_s = statistics.mean(r.cost.wall_s for _, r in reference)
        energy_budget = args.energy or round(0.4 * ref_j, 2)
        latency_budget = args.latency or round(0.4 * ref_s, 3)
        console.print(f"meter: {meter.source} ({'estimated' if meter.estimated else 'measured'}); best-of-32 costs "
                      f"{ref_j:.2f} J and {ref_s:.2f} s per question here")

        rows = []
        for label, budget in (("energy", Budget(energy_j=energy_budget)), ("latency", Budget(latency_s=latency_budget))):
            started = time.perf_counter()
            results = [searcher.run(IASBestOfN(n_max=32), p, seed=args.seed + i, budget=budget) for i, p in enumerate(problems)]
            limit = energy_budget if label == "energy" else latency_budget
            spent = [r.cost.joules if label == "energy" else r.cost.wall_s for r in results]
            within = sum(x <= limit for x in spent)
            correct = sum(bool(r.chosen) and task.is_correct(r.chosen.text, p) for r, p in zip(results, problems, strict=True))
            capped = sum(any(d.kind in ("budget_cap", "lowered_confidence") for d in r.decisions) for r in results)
            rows.append((label, f"{limit:g} {'J' if label == 'energy' else 's'}",
                         f"{within}/{len(results)} ({within / len(results):.1%})",
                         f"{max(spent):.3g}", f"{statistics.mean(spent):.3g}", f"{capped}", f"{correct / len(results):.1%}",
                         f"{time.perf_counter() - started:.0f}"))
        table = Table(title=f"Per-question budgets, IAS best-of-N (N_max 32), {len(problems)} test problems")
        for col in ("budget", "limit", "within budget", "max spent", "mean spent", "questions capped", "accuracy", "run s"):
            table.add_column(col, justify="left" if col == "budget" else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)

        # -- a battery's worth over the whole split ---------------------------------------------
        for per_question in args.samples_per_question:
            console.print(battery_comparison(searcher, prm, meter, problems, single, reference, per_question, args.seed))


if __name__ == "__main__":
    main()
