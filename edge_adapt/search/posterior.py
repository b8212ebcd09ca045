"""The fallback answer model's posterior over one question's answer groups, and what more samples
would add to the pick's accuracy, by exact enumeration of their outcomes (see
:mod:`edge_adapt.search.calibration.answer_model` for the model). Pure functions of numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge_adapt.errors import SamplingConfigError
from edge_adapt.search.calibration.answer_model import GRID_SIZE, QuestionModel, p_grid


@dataclass(frozen=True)
class Group:
    """Samples that gave one answer: how many, and the sum of their scores' log ratios."""

    count: int
    log_ratio: float = 0.0

    @property
    def evidence(self) -> float:
        """The group's score evidence, counted once: the mean of its members' log ratios. Samples
        with one answer are mostly the same solution, scored alike: one piece of evidence, not
        ``count`` independent ones."""
        return self.log_ratio / self.count if self.count else 0.0


@dataclass(frozen=True)
class Evidence:
    """What a question's samples showed: answer groups (in order of first appearance) and the
    number of samples that gave no answer (counted as wrong, in no group)."""

    groups: tuple[Group, ...] = ()
    unanswered: int = 0

    @property
    def samples(self) -> int:
        return sum(g.count for g in self.groups) + self.unanswered

    def add(self, group: int | None, log_ratio: float) -> Evidence:
        """One more sample: joining ``group`` (an index), a new group (``len(groups)``), or none."""
        if group is None:
            return Evidence(self.groups, self.unanswered + 1)
        if group == len(self.groups):
            return Evidence((*self.groups, Group(1, log_ratio)), self.unanswered)
        g = self.groups[group]
        return Evidence(self.groups[:group] + (Group(g.count + 1, g.log_ratio + log_ratio),) + self.groups[group + 1:],
                        self.unanswered)


class Moments:
    """log E[p^a (1-p)^b] under a prior on p_grid(), tabulated for a + b <= n_max."""

    def __init__(self, prior: np.ndarray, n_max: int) -> None:
        if prior.shape != (GRID_SIZE,) or prior.min() < 0 or not prior.sum() > 0:
            raise SamplingConfigError("a prior needs one non-negative weight per grid point, not all zero")
        grid = p_grid()
        k = np.arange(n_max + 1)[:, None]
        logp, log1p = k * np.log(grid), k * np.log1p(-grid)  # [n_max+1, G]
        with np.errstate(divide="ignore"):
            logw = np.log(prior / prior.sum())
        terms = logw[None, None, :] + logp[:, None, :] + log1p[None, :, :]
        top = terms.max(axis=-1)
        self.table = top + np.log(np.exp(terms - top[..., None]).sum(axis=-1))
        self.n_max = n_max

    def log(self, a: int, b: int) -> float:
        return float(self.table[a, b])


def _log_crp(counts: Sequence[int], alpha: float) -> float:
    """log probability of one sequence of wrong answers falling into groups of these sizes."""
    total = sum(counts)
    if total == 0:
        return 0.0
    return (len(counts) * math.log(alpha) + sum(math.lgamma(c) for c in counts)
            + math.lgamma(alpha) - math.lgamma(alpha + total))


@dataclass(frozen=True)
class Posterior:
    right: tuple[float, ...]  # P(group j holds the right answer)
    none: float  # P(no group does)
    p_right: tuple[float, ...]  # E[p | group j is right], the chance the next sample is right, per hypothesis
    p_none: float

    @property
    def best(self) -> int | None:
        return max(range(len(self.right)), key=lambda j: self.right[j]) if self.right else None

    @property
    def accuracy(self) -> float:
        """The probability that the most probable group is right: stopping now's accuracy."""
        return max(self.right) if self.right else 0.0


def posterior(evidence: Evidence, moments: Moments, alpha: float) -> Posterior:
    n = evidence.samples
    counts = [g.count for g in evidence.groups]
    if n + 1 > moments.n_max:
        raise SamplingConfigError(f"{n} samples exceed the {moments.n_max - 1} the moments were tabulated for")
    logs = []
    for j, g in enumerate(evidence.groups):
        others = counts[:j] + counts[j + 1:]
        logs.append(moments.log(g.count, n - g.count) + g.evidence + _log_crp(others, alpha))
    logs.append(moments.log(0, n) + _log_crp(counts, alpha))
    top = max(logs)
    weights = [math.exp(x - top) for x in logs]
    total = sum(weights)
    probs = [w / total for w in weights]
    p_right = tuple(math.exp(moments.log(g.count + 1, n - g.count) - moments.log(g.count, n - g.count)) for g in evidence.groups)
    p_none = math.exp(moments.log(1, n) - moments.log(0, n))
    return Posterior(tuple(probs[:-1]), probs[-1], p_right, p_none)


def outcomes(evidence: Evidence, post: Posterior, model: QuestionModel) -> list[tuple[float, Evidence]]:
    """The next sample's possible outcomes with their probabilities (summing to 1): it joins an
    answer group or starts a new one, with a PRM score in one of the model's bins."""
    counts = [g.count for g in evidence.groups]
    wrong_total = sum(counts)
    k = len(counts)
    # probability that the next sample joins group i (or a new one, i = k) being right / wrong
    join_right = [post.right[i] * post.p_right[i] for i in range(k)] + [post.none * post.p_none]
    join_wrong = [0.0] * (k + 1)
    hypotheses = [(post.right[h], post.p_right[h], h) for h in range(k)] + [(post.none, post.p_none, None)]
    alpha = model.concentration
    for weight, p_next, right in hypotheses:
        m = wrong_total - (counts[right] if right is not None else 0)
        scale = weight * (1.0 - p_next) / (alpha + m)
        for i in range(k):
            if i != right:
                join_wrong[i] += scale * counts[i]
        join_wrong[k] += scale * alpha
    out = []
    bins: list[int | None] = list(range(model.score_bins)) if model.score_bins > 1 else [None]
    for i in range(k + 1):
        for b in bins:
            fr = model.score.right[b] if b is not None else 1.0
            fw = model.score.wrong[b] if b is not None else 1.0
            prob = join_right[i] * fr + join_wrong[i] * fw
            if prob > 0:
                out.append((prob, evidence.add(i, model.log_ratio(b))))
    return out


def expected_accuracy(evidence: Evidence, moments: Moments, model: QuestionModel, more: int) -> float:
    """Expected accuracy of the most-probable-answer pick after ``more`` further samples (exact
    enumeration of their outcomes; the work grows as (groups x score bins)^more, so keep more <= 2)."""
    post = posterior(evidence, moments, model.concentration)
    if more == 0:
        return post.accuracy
    return sum(prob * expected_accuracy(nxt, moments, model, more - 1) for prob, nxt in outcomes(evidence, post, model))
