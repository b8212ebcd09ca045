"""Calibration questions (a generator's samples of each, grouped, graded, with their evidence) and
replays over them: any sampling rule, a fixed vote, the adaptive vote, each over seeded orders of
the same samples, so that every comparison is paired; and the held-out judgement of a fitted vote
model (the fixed curve, the adaptive vote at several prices, its promises against what happened)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from edge_adapt.errors import EdgeAdaptError
from edge_adapt.search.calibration.vote_model import Sample, VoteModel, leader, vote_round, vote_state
from edge_adapt.search.stopping import work_per_sample

PRICES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)


@dataclass(frozen=True)
class CalibrationSample:
    answer: str | None  # a label shared by equivalent answers; None: cut off, no vote
    correct: bool
    tokens: int
    features: dict[str, float | None]  # FEATURES -> value (prm: None when no PRM scored it)


@dataclass(frozen=True)
class VoteQuestion:
    id: str
    samples: tuple[CalibrationSample, ...]
    level: int | None = None

    def as_samples(self, feature: str, order: Sequence[int] | None = None) -> list[Sample]:
        idx = order if order is not None else range(len(self.samples))
        return [Sample(self.samples[i].answer, self.samples[i].features.get(feature) or 0.0, self.samples[i].tokens) for i in idx]

    def right(self, answer: str | None) -> bool:
        return answer is not None and any(s.correct for s in self.samples if s.answer == answer)


def orders(m: int, count: int, rng: random.Random) -> list[list[int]]:
    """``count`` random orders of ``m`` samples."""
    out = []
    for _ in range(count):
        order = list(range(m))
        rng.shuffle(order)
        out.append(order)
    return out


@dataclass(frozen=True)
class Replayed:
    """One strategy replayed on questions: accuracy, generated tokens and samples per question."""

    accuracy: float
    tokens: float
    samples: float
    per_level: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # level -> the same three
    by_question: dict[str, tuple[float, float]] = field(default_factory=dict, repr=False)  # id -> (P(right), tokens)


def _summarise(outcomes: Sequence[tuple[VoteQuestion, bool, int, int]]) -> Replayed:
    def stats(items: Sequence[tuple[VoteQuestion, bool, int, int]]) -> tuple[float, float, float]:
        k = len(items) or 1
        return (100.0 * sum(o[1] for o in items) / k, sum(o[2] for o in items) / k, sum(o[3] for o in items) / k)

    levels = sorted({str(o[0].level) for o in outcomes if o[0].level is not None})
    ids: dict[str, list[tuple[VoteQuestion, bool, int, int]]] = {}
    for o in outcomes:
        ids.setdefault(o[0].id, []).append(o)
    by_question = {qid: (accuracy / 100.0, tokens) for qid, (accuracy, tokens, _) in
                   ((qid, stats(items)) for qid, items in ids.items())}
    return Replayed(*stats(outcomes), {lv: stats([o for o in outcomes if str(o[0].level) == lv]) for lv in levels}, by_question)


Rule = Callable[[VoteQuestion, list[CalibrationSample]], tuple[int, str | None]]


def replay_rule(questions: Sequence[VoteQuestion], rule: Rule, *, orderings: int = 16, seed: int = 1) -> Replayed:
    """Any sampling rule replayed over seeded orders of each question's samples: ``rule`` sees the
    samples in order and says how many it drew and which answer it gave."""
    rng = random.Random(seed)
    outcomes = []
    for q in questions:
        for order in orders(len(q.samples), orderings, rng):
            n, answer = rule(q, [q.samples[i] for i in order])
            outcomes.append((q, q.right(answer), sum(q.samples[i].tokens for i in order[:n]), n))
    return _summarise(outcomes)


def replay_fixed(questions: Sequence[VoteQuestion], n: int, feature: str, *, orderings: int = 16, seed: int = 1) -> Replayed:
    """A fixed vote of ``n`` samples (the same leader rule), averaged over seeded orders."""
    rng = random.Random(seed)
    outcomes = []
    for q in questions:
        for order in orders(len(q.samples), orderings, rng):
            drawn = order[:n]
            right = q.right(leader(q.as_samples(feature, drawn))[0])
            outcomes.append((q, right, sum(q.samples[i].tokens for i in drawn), len(drawn)))
    return _summarise(outcomes)


def replay_adaptive(questions: Sequence[VoteQuestion], model: VoteModel | None, price: float, feature: str, *,
                    n_max: int = 16, orderings: int = 16, seed: int = 1, prm_work: float = 0.0
                    ) -> tuple[Replayed, list[tuple[float, bool, int]]]:
    """The adaptive vote replayed over seeded orders of each question's samples, and for every
    stop (P(right) the table promised, whether the leader was right, the questions behind it).
    ``prm_work``: what scoring a sample with the PRM costs in generated-token equivalents, where
    ``feature`` reads it (the price counts it, as a search that reads the PRM pays it)."""
    rng = random.Random(seed)
    outcomes, promises = [], []
    for q in questions:
        for order in orders(len(q.samples), orderings, rng):
            samples = q.as_samples(feature, order)
            n, decision = 0, None
            while True:
                seen = samples[:n]
                work = work_per_sample(sum(s.tokens for s in seen), n * prm_work, n, 1.0)
                decision = vote_round(vote_state(seen), model, price=price, work=work, n_max=min(n_max, len(samples)))
                if decision.draw == 0:
                    break
                n = min(n + decision.draw, len(samples))
            answer = leader(samples[:n])[0]
            right = q.right(answer)
            outcomes.append((q, right, sum(s.tokens for s in samples[:n]), n))
            promises.append((decision.right, right, decision.questions))
    return _summarise(outcomes), promises


@dataclass(frozen=True)
class Judgement:
    """The fitted model on held-out questions: the fixed vote curve, the adaptive vote at several
    prices, and per bin of promised P(right), the promise against what happened."""

    fixed: dict[int, Replayed]
    adaptive: dict[float, Replayed]
    reliability: tuple[tuple[str, int, float, float], ...]  # (bin, stops, promised %, measured %)
    questions_behind: tuple[int, int, int]  # min, median, max calibration questions behind a stop


def judge(model: VoteModel, held_out: Sequence[VoteQuestion], prices: Sequence[float] = PRICES, seed: int = 21,
          prm_work: float = 0.0) -> Judgement:
    held_out = [q for q in held_out if q.samples]
    if not held_out:
        raise EdgeAdaptError("no held-out questions with samples to judge the vote model on")
    m = min(len(q.samples) for q in held_out)
    fixed = {n: replay_fixed(held_out, n, model.feature, seed=seed) for n in range(1, m + 1)}
    adaptive, promises = {}, []
    for price in sorted({*prices, model.price}):
        adaptive[price], stops = replay_adaptive(held_out, model, price, model.feature, n_max=m, seed=seed,
                                                 prm_work=prm_work if model.needs_prm else 0.0)
        if price == model.price:
            promises = stops
    bins = []
    for lo, hi in ((0.0, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 1.01)):
        inside = [(p, r) for p, r, _ in promises if lo <= p < hi]
        if inside:
            bins.append((f"{lo:.1f}-{min(hi, 1.0):.1f}", len(inside), 100 * float(np.mean([p for p, _ in inside])),
                         100 * float(np.mean([r for _, r in inside]))))
    behind = sorted(q for _, _, q in promises)
    return Judgement(fixed, adaptive, tuple(bins), (behind[0], behind[len(behind) // 2], behind[-1]) if behind else (0, 0, 0))
