"""Best-of-N: sample N full solutions from one shared prefill, rank them by the PRM's median."""

from __future__ import annotations

import time
from dataclasses import replace

from edge_adapt.generator import Generator, SamplingParams
from edge_adapt.prm import QuantilePRM
from edge_adapt.search.types import Candidate, Cost, Decision, SearchResult
from edge_adapt.tasks import Problem, Task


def best_of_n(
    generator: Generator,
    prm: QuantilePRM,
    task: Task,
    problem: Problem,
    n: int,
    *,
    sampling: SamplingParams | None = None,
    seed: int = 0,
    max_steps: int = 32,
) -> SearchResult:
    """Sample ``n`` solutions (decoded together), score them all in one PRM call, and return
    the one with the highest median success probability at its last step."""
    sampling = sampling or SamplingParams(temperature=0.7)
    started = time.perf_counter()
    gen_before, prm_before = generator.usage, prm.stats
    root = generator.prefill(task.prompt(problem), seed=seed)
    try:
        leaves, _ = generator.complete([root], n, sampling=sampling, rules=task.step_rules, max_steps=max_steps)
    finally:
        generator.release(root)
    candidates = [Candidate.from_leaf(leaf, task.extract_answer(leaf.solution_text())) for leaf in leaves]
    scores = prm.score(problem.question, [list(c.steps) for c in candidates], per_step=True)
    candidates = [replace(c, final=s.final, per_step=s.per_step or ()) for c, s in zip(candidates, scores)]
    best = max(range(len(candidates)), key=lambda i: candidates[i].final.median) if candidates else None
    chosen = candidates[best] if best is not None else None
    decisions = (
        Decision("n_samples", {"n": n, "why": "fixed budget"}),
        Decision("rank", {"by": "PRM median at the last step", "chosen": best}),
    )
    cost = Cost.from_stats(generator.usage - gen_before, prm.stats - prm_before, len(candidates), time.perf_counter() - started)
    return SearchResult("best_of_n", problem.question, chosen.answer if chosen else None, chosen, tuple(candidates), decisions, cost)
