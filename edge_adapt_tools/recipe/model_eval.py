"""What the default models must show, measured on the held-out test split.

For every test problem the generator samples K solutions at temperature 0.7 (one shared
prefill, all K decoded together); from those: pass@1 (the expected accuracy of one sample:
correct / K, averaged), oracle pass@K (any sample correct), and best-of-K ranked by the PRM's
median at the last step. Per difficulty level and overall. The PRM's *question* score (the
empty prefix, what adaptive search sizes N by) is checked against the share of the K samples that
are right, on its own: the recipe's held-out figures pool every prefix, where questions are about
one record in twelve, and an optimistic question score could hide among them. Speed:
one easy question answered with best-of-N search, models loaded, timed.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from edge_adapt.generator import Generator, SamplingParams
from edge_adapt.prm import QuantilePRM
from edge_adapt.search import BestOfN, Searcher
from edge_adapt.tasks import Problem, Task
from edge_adapt_tools.prm.metrics import calibration_metrics

# part of the recipe's evaluation stamp: a build evaluated by an earlier version is re-evaluated
# (1: pass@1, oracle, PRM best-of-K, vote; 2: also the PRM's question score against the samples)
EVALUATION_FORM = 2


@dataclass
class LevelStats:
    problems: int = 0
    pass_at_1: float = 0.0
    oracle: float = 0.0
    prm_best: float = 0.0
    majority: float = 0.0
    question_median: float = 0.0  # the PRM's median at the empty prefix, to set beside pass_at_1


@dataclass
class ModelEvaluation:
    samples_per_problem: int
    temperature: float
    overall: LevelStats
    by_level: dict[int, LevelStats] = field(default_factory=dict)
    generated_tokens: int = 0
    seconds: float = 0.0
    easy_search_seconds: dict[str, float] = field(default_factory=dict)
    # the question score's quantiles against the share of right samples (CalibrationMetrics.to_dict)
    question_calibration: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


EVALUATION_SAMPLES = 16  # samples per test problem


def evaluate_models(
    generator: Generator,
    prm: QuantilePRM,
    task: Task,
    problems: Sequence[Problem],
    *,
    samples: int = EVALUATION_SAMPLES,
    temperature: float = 0.7,
    seed: int = 0,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> ModelEvaluation:
    started = time.perf_counter()
    sampling = SamplingParams(temperature=temperature)
    before = generator.usage
    rows: dict[int, list[tuple[float, bool, bool, bool, float]]] = defaultdict(list)
    # per problem: the question score's quantiles, the share of its samples that are right, and how many
    question_scores: list[tuple[float, ...]] = []
    samples_right: list[tuple[float, int]] = []
    for i, problem in enumerate(problems):
        root = generator.prefill(task.prompt(problem), seed=seed + i)
        try:
            leaves, _ = generator.complete([root], samples, sampling=sampling, rules=task.step_rules)
        finally:
            generator.release(root)
        texts = [leaf.solution_text() for leaf in leaves]
        correct = [task.is_correct(t, problem) for t in texts]
        scores = prm.score(problem.question, [[s.text for s in leaf.steps()] for leaf in leaves])
        # a call of its own: the int8 PRM quantizes activations per batch, so a question scored in the
        # candidates' batch moves their scores by ~1e-3, enough to flip near-ties in the ranking
        question = prm.score_question(problem.question)
        rate = sum(correct) / len(correct)
        question_scores.append(question.values)
        samples_right.append((rate, len(correct)))
        best = max(range(len(leaves)), key=lambda j: scores[j].final.median)
        answers = [task.extract_answer(t) for t in texts]
        votes: dict[str | None, int] = defaultdict(int)
        for a in answers:
            votes[a] += 1
        top = max((a for a in votes if a is not None), key=lambda a: votes[a], default=None)
        rows[problem.level or 0].append((rate, any(correct), correct[best], top == problem.answer, question.median))
        progress(i + 1, len(problems))

    def summarise(items: list[tuple[float, bool, bool, bool, float]]) -> LevelStats:
        n = len(items)
        return LevelStats(n, *(sum(r[k] for r in items) / n for k in range(5)))

    every = [r for items in rows.values() for r in items]
    question_fit = calibration_metrics(
        np.array(question_scores), np.array([r for r, _ in samples_right]), prm.bundle.quantile_levels,
        n_rollouts=np.array([n for _, n in samples_right]),
    )
    return ModelEvaluation(
        samples_per_problem=samples,
        temperature=temperature,
        overall=summarise(every),
        by_level={level: summarise(items) for level, items in sorted(rows.items())},
        generated_tokens=(generator.usage - before).generated_tokens,
        seconds=time.perf_counter() - started,
        question_calibration=question_fit.to_dict(),
    )


EASY_SEARCH_N = 8  # samples per easy problem when timing search


def time_easy_search(searcher: Searcher, problems: Sequence[Problem], n: int = EASY_SEARCH_N) -> dict[str, float]:
    """Wall seconds to answer each easy problem with best-of-n search, models already loaded."""
    times = [searcher.run(BestOfN(n=n), problem, seed=i).cost.wall_s for i, problem in enumerate(problems)]
    times.sort()
    return {"n": n, "problems": len(times), "median_s": statistics.median(times), "max_s": times[-1]}
