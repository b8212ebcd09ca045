"""Spreading one energy budget (a battery's worth) over many questions by expected gain per joule.

What a question gains from its n-th sample depends on how its answer is picked, not only on its
success probability p:

- :class:`AnyCorrect` is pass@n, ``1 - (1-p)^n``: the n-th sample adds ``p(1-p)^(n-1)``. It is the
  right model when something can tell a right answer from a wrong one for sure (an oracle, or a
  PRM that ranks perfectly).
- :class:`PluralityVote` is a plain majority vote. Its accuracy is not pass@n: with one right and
  one wrong answer a vote is a coin toss, so a second sample adds nothing, and two right
  answers out of three win. Planning a majority-voted run with pass@n gains buys second samples
  that change no answer (docs/RESULTS.md, "One energy budget over many questions").

What a question's p is, the PRM says as quantiles, not as one number, and a plan made with the
median alone treats an uncertain question as a sure one. :class:`SuccessBelief` keeps the
quantiles as a small discrete distribution of p and averages the selector's accuracy over it:
a hard question whose median is 0.05 but whose q90 is 0.4 is worth opening (its expected p is
about 0.15), and a third vote on a question that is "0.7, give or take 0.3" pays less than on a
sure 0.7 (a plan on the median alone leaves hard questions unopened).

The allocator buys, greedily, the bundle of samples (one or a few more for the same question)
with the best gain per joule. Bundles matter because a vote's gains are not concave (0, then a
jump): a one-sample-at-a-time greedy would never buy the second sample that makes the third one
pay.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from edge_adapt.errors import BudgetError
from edge_adapt.prm.scorer import level_masses
from edge_adapt.search.calibration.answer_model import AnswerModel


class SelectionModel(Protocol):
    """How likely the answer picked from ``n`` samples is right, for a question whose samples are
    each right with probability ``p``."""

    name: str

    def accuracy(self, p: float, n: int) -> float: ...


@dataclass(frozen=True)
class AnyCorrect:
    """pass@n: some sample is right and the selector finds it. The n-th sample gains p(1-p)^(n-1)."""

    name: str = "pass@n"

    def accuracy(self, p: float, n: int) -> float:
        return 1.0 - (1.0 - p) ** n


@dataclass(frozen=True)
class PluralityVote:
    """A plain majority vote with ties to the earliest answer (``search.voting.majority_vote``).

    Assumes the wrong answers differ from each other, so any two right answers win; with one
    right answer among n, every answer ties at one vote and the earliest wins, which is the
    right one with probability 1/n. Hence
    ``P(k >= 2) + P(k = 1)/n = 1 - (1-p)^n - (n-1) p (1-p)^(n-1)``. Wrong answers that agree
    make a vote weaker than this; on the default task they rarely do.
    """

    name: str = "majority vote"

    def accuracy(self, p: float, n: int) -> float:
        if n <= 0:
            return 0.0
        return 1.0 - (1.0 - p) ** n - (n - 1) * p * (1.0 - p) ** (n - 1)


@dataclass(frozen=True)
class CalibratedSelection:
    """The selector's accuracy as measured offline for this generator and PRM: the gain curves
    stored beside the PRM (``selector_model.json``, the same ones adaptive search is calibrated
    with), looked up by the question's PRM median, which is what ``p`` is here. Flat past the
    largest n the calibration measured: there is no evidence that more samples pay."""

    model: AnswerModel
    selector: str = "majority"

    @property
    def name(self) -> str:
        return f"calibrated {self.selector}"

    def __post_init__(self) -> None:
        if self.selector not in self.model.gains:
            raise BudgetError(f"the answer model has no gain curves for {self.selector!r} "
                              f"(has {', '.join(self.model.gains) or 'none: calibrate it with `edge-adapt export selector`'})")

    def accuracy(self, p: float, n: int) -> float:
        curve = self.model.gain_curve(self.selector, p)
        return curve.at(n) if curve is not None else 0.0


@dataclass(frozen=True)
class SuccessBelief:
    """A question's success probability as a few values of p with weights that sum to 1."""

    values: tuple[float, ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.values or len(self.values) != len(self.weights):
            raise BudgetError(f"a success belief needs one weight per value, got {len(self.values)} values and "
                              f"{len(self.weights)} weights")
        if min(self.weights) < 0 or not math.isclose(sum(self.weights), 1.0, abs_tol=1e-9):
            raise BudgetError(f"success belief weights must be non-negative and sum to 1, got {self.weights}")

    @classmethod
    def point(cls, p: float) -> SuccessBelief:
        return cls((min(max(float(p), 0.0), 1.0),), (1.0,))

    @classmethod
    def from_quantiles(cls, levels: Sequence[float], values: Sequence[float]) -> SuccessBelief:
        """Each quantile stands for the probability mass nearest to it (:func:`level_masses`)."""
        if len(levels) != len(values) or not levels or list(levels) != sorted(levels) or not 0 < levels[0] <= levels[-1] < 1:
            raise BudgetError(f"quantile levels must be increasing in (0, 1), one per value; got {levels} for {values}")
        return cls(tuple(min(max(float(v), 0.0), 1.0) for v in values), tuple(level_masses(levels)))

    @property
    def mean(self) -> float:
        return sum(w * v for v, w in zip(self.values, self.weights, strict=True))

    def accuracy(self, selection: SelectionModel, n: int) -> float:
        """The selector's accuracy at ``n`` samples, averaged over what p may be."""
        return sum(w * selection.accuracy(v, n) for v, w in zip(self.values, self.weights, strict=True))


@dataclass(frozen=True)
class BatchAllocation:
    samples: tuple[int, ...]  # per question
    expected_correct: float  # sum over questions of the selector's accuracy at their sample count
    joules_planned: float
    selection: str = ""  # the selection model the plan was made for


def _per_question(value: float | Sequence[float], q: int, what: str) -> list[float]:
    values = [float(value)] * q if isinstance(value, (int, float)) else [float(c) for c in value]
    if len(values) != q:
        raise BudgetError(f"{len(values)} per-question {what} for {q} questions")
    return values


def allocate_batch(success: Sequence[float | SuccessBelief], joules_per_sample: float | Sequence[float], total_joules: float,
                   max_per_question: int = 64, first_sample_joules: float | Sequence[float] = 0.0,
                   selection: SelectionModel = AnyCorrect(), lookahead: int = 4) -> BatchAllocation:
    """Spread ``total_joules`` over questions by expected gain per joule.

    ``success``: each question's probability that one sample is right, as a number or, better,
    as a :class:`SuccessBelief` from the PRM's calibrated question-level quantiles.
    ``selection``: how the answer will be picked, which decides what an extra sample is worth
    (see the module docstring). ``first_sample_joules`` is what a question costs once, whatever
    its number of samples (prefill, scoring the question): the first bundle carries it, so a
    question worth little is not opened at all.

    Greedy over bundles of up to ``lookahead`` samples: each question offers the bundle with the
    best gain per joule from where it stands, and the best offer is bought while it fits. For
    pass@n without a fixed cost the gains are concave and this is optimal; otherwise it is a
    (good) heuristic.
    """
    q = len(success)
    costs = _per_question(joules_per_sample, q, "costs")
    first = _per_question(first_sample_joules, q, "first-sample costs")
    if any(c <= 0 for c in costs) or any(f < 0 for f in first):
        raise BudgetError("joules per sample must be positive (and first-sample joules not negative)")
    if lookahead < 1 or max_per_question < 1:
        raise BudgetError("lookahead and max_per_question must be at least 1")
    p = [x if isinstance(x, SuccessBelief) else SuccessBelief.point(x) for x in success]
    n = [0] * q
    left = float(total_joules)

    def price(i: int, k: int) -> float:
        return k * costs[i] + (first[i] if n[i] == 0 else 0.0)

    def best_offer(i: int, affordable: float) -> tuple[float, int] | None:
        """(gain per joule, bundle size) of question i's best bundle that costs at most ``affordable``."""
        now = p[i].accuracy(selection, n[i])
        best: tuple[float, int] | None = None
        for k in range(1, min(lookahead, max_per_question - n[i]) + 1):
            if price(i, k) > affordable:
                break
            gain = p[i].accuracy(selection, n[i] + k) - now
            if gain > 1e-12 and (best is None or gain / price(i, k) > best[0]):
                best = (gain / price(i, k), k)
        return best

    heap: list[tuple[float, int, int]] = []

    def offer(i: int) -> None:
        best = best_offer(i, left)
        if best:
            heapq.heappush(heap, (-best[0], i, best[1]))

    for i in range(q):
        offer(i)
    while heap:
        _, i, k = heapq.heappop(heap)
        if price(i, k) <= left:  # else it no longer fits: offer what still does (a smaller bundle)
            left -= price(i, k)
            n[i] += k
        offer(i)
    expected = sum(p[i].accuracy(selection, n[i]) for i in range(q))
    return BatchAllocation(tuple(n), expected, total_joules - left, selection.name)


def even_allocation(n_questions: int, joules_per_sample: float, total_joules: float,
                    first_sample_joules: float = 0.0) -> BatchAllocation:
    """The baseline: every question gets the same number of samples, as many as the total affords."""
    per_question = total_joules / n_questions - first_sample_joules
    # the tolerance keeps a budget of exactly k samples' worth from rounding down to k - 1
    per = math.floor(per_question / joules_per_sample + 1e-9) if joules_per_sample > 0 and per_question > 0 else 0
    spent = n_questions * (per * joules_per_sample + (first_sample_joules if per else 0.0))
    return BatchAllocation((per,) * n_questions, float("nan"), spent, "even")


@dataclass
class BatteryPacer:
    """The price that makes adaptive search spend one battery evenly over a queue of questions.

    A plan made up front (:func:`allocate_batch`) knows each question only by its PRM score;
    adaptive search also sees its samples (agreement, their scores) and stops where they settle.
    Run over a queue under one battery, it needs a price that spends the battery by the last
    question: after each question the price is scaled by how far spending is ahead of (dearer)
    or behind (cheaper) an even pace, ``total * done / questions``, at most by ``max_step`` per
    question. Not frozen: it is the queue's running state."""

    total_joules: float
    questions: int
    price: float = 8.0  # the adaptive strategy's price to start from (accuracy points per 1,000 tokens)
    max_step: float = 1.5
    floor: float = 0.25
    ceiling: float = 1024.0
    spent: float = 0.0
    done: int = 0

    def __post_init__(self) -> None:
        if not self.total_joules > 0 or self.questions < 1:
            raise BudgetError(f"a battery needs positive joules and at least one question, got {self.total_joules} J "
                              f"for {self.questions}")
        if not self.max_step > 1 or not 0 < self.floor <= self.price <= self.ceiling:
            raise BudgetError(f"pacing needs max_step > 1 and floor <= price <= ceiling, got {self.max_step}, "
                              f"{self.floor} <= {self.price} <= {self.ceiling}")

    @property
    def left(self) -> float:
        return self.total_joules - self.spent

    def record(self, joules: float) -> float:
        """Account one answered (or skipped, 0 J) question; returns the price for the next."""
        self.spent += max(float(joules), 0.0)
        self.done += 1
        pace = self.total_joules * self.done / self.questions
        ratio = min(max(self.spent / pace, 1.0 / self.max_step), self.max_step)  # pace > 0: total > 0, done >= 1
        self.price = min(max(self.price * ratio, self.floor), self.ceiling)
        return self.price
