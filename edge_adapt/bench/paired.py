"""Adaptive strategies against their fixed neighbours on the same questions, with their noise.

"Within 1 point" and "above the curve" mean little on a few hundred questions without the noise
beside them: for each adaptive strategy of a run, the fixed strategies just cheaper and just dearer
(generated tokens per question) and the most accurate fixed one are compared question by question:
how many each alone got right, a two-sided sign test on those, and a 95% bootstrap interval of
the accuracy difference (over questions, seeded).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edge_adapt.bench.summary import StrategySummary, is_fixed


@dataclass(frozen=True)
class Paired:
    strategy: str
    other: str
    questions: int
    difference: float  # accuracy points, strategy - other
    low: float  # 95% bootstrap interval
    high: float
    only_mine: int  # questions only the strategy got right
    only_other: int
    p: float  # two-sided sign test on the questions only one got right
    token_ratio: float  # the strategy's tokens per question over the other's

    def line(self) -> str:
        return (f"{self.strategy} vs {self.other}: {self.difference:+.1f} points (95% CI {self.low:+.1f} .. {self.high:+.1f}; "
                f"only it right on {self.only_mine}, only {self.other} on {self.only_other}, sign test p = {self.p:.2f}) "
                f"at {self.token_ratio:.0%} of its tokens, {self.questions} questions")


def sign_test(a: int, b: int) -> float:
    n, k = a + b, min(a, b)
    return min(1.0, 2 * sum(math.comb(n, j) for j in range(k + 1)) / 2**n) if n else 1.0


def bootstrap_interval(differences: Sequence[float], *, draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """A 95% bootstrap interval of the mean of paired differences (resampling questions, seeded)."""
    rng = random.Random(seed)
    means = sorted(sum(rng.choice(differences) for _ in differences) / len(differences) for _ in range(draws))
    return means[int(0.025 * draws)], means[int(0.975 * draws)]


def paired(records: Sequence[dict[str, Any]], mine: str, other: str, *, draws: int = 2000, seed: int = 0) -> Paired | None:
    a = {r["question_id"]: r for r in records if r["strategy"] == mine}
    b = {r["question_id"]: r for r in records if r["strategy"] == other}
    common = sorted(set(a) & set(b))
    if not common:
        return None
    d = [int(a[q]["correct"]) - int(b[q]["correct"]) for q in common]
    low, high = bootstrap_interval(d, draws=draws, seed=seed)
    tokens = [sum(x[q]["cost"]["generated_tokens"] for q in common) for x in (a, b)]
    return Paired(mine, other, len(common), 100 * sum(d) / len(d), 100 * low, 100 * high, d.count(1), d.count(-1),
                  sign_test(d.count(1), d.count(-1)), tokens[0] / tokens[1] if tokens[1] else math.nan)


def neighbours(records: Sequence[dict[str, Any]], summaries: Sequence[StrategySummary]) -> list[Paired]:
    """Every adaptive strategy against its nearest cheaper and dearer fixed strategies and the best fixed one."""
    fixed = [s for s in summaries if is_fixed(s.strategy)]
    if not fixed:
        return []
    best = max(fixed, key=lambda s: (s.accuracy, -s.tokens_per_question))
    out = []
    for s in summaries:
        if is_fixed(s.strategy):
            continue
        cheaper = [f for f in fixed if f.tokens_per_question <= s.tokens_per_question]
        dearer = [f for f in fixed if f.tokens_per_question > s.tokens_per_question]
        chosen = ([max(cheaper, key=lambda f: f.tokens_per_question)] if cheaper else []) + \
                 ([min(dearer, key=lambda f: f.tokens_per_question)] if dearer else []) + [best]
        for other in dict.fromkeys(f.strategy for f in chosen):
            result = paired(records, s.strategy, other)
            if result is not None:
                out.append(result)
    return out
