"""Fitting the answer model and the selectors' gain curves from graded, PRM-scored solutions.

Input: calibration questions, each with the PRM's score of the question alone and the generator's
sampled solutions (answer, right or wrong, last-step PRM median). Output: an
:class:`~edge_adapt.search.calibration.answer_model.AnswerModel` holding

- per bin of the question's median score, the prior of the per-sample success probability p: the
  average over the bin's questions of the Jeffreys posterior of p given k right of m samples
  (binomial noise widens it a little: a cautious prior);
- the wrong answers' concentration alpha, by maximum likelihood of how wrong answers repeat;
- the likelihoods of a sample's last-step median (in bins with equal counts) for right and
  wrong samples, Laplace-smoothed;
- gain curves: per question bin and selector (PRM pick, majority vote, PRM-weighted vote), the
  accuracy with n = 1..m samples, averaged over every subset of n of a question's m samples (a
  seeded sample of subsets where there are too many), made non-decreasing in n by
  pool-adjacent-violators (a subset's accuracy can only fall with n by noise; a selector can
  always ignore a sample); the best of them is the picker adaptive search uses;
- the value table of that picker, from replays of sequential search (:func:`fit_values`).

Pure: numbers in, numbers out. ``edge_adapt_tools/prm/selector.py`` reads a calibration file and
scores it with the exported PRM.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_adapt.errors import EdgeAdaptError
from edge_adapt.search.calibration.answer_model import (
    GRID_SIZE,
    MIN_SUPPORT,
    AnswerModel,
    GainCurve,
    PickState,
    ScoreEvidence,
    ValueTable,
    p_grid,
)
from edge_adapt.search.calibration.cells import CellTable, ReplayedState, fit_cells
from edge_adapt.search.posterior import _log_crp
from edge_adapt.search.voting import group_indices, group_of, pick, votes_for

Equal = Callable[[str | None, str], bool]
SELECTORS = ("prm", "majority", "weighted")  # gain curves are measured for each; adaptive search picks with the best
MAX_SUBSETS = 200  # per question and n; exhaustive below this


@dataclass(frozen=True)
class ScoredSolution:
    answer: str | None
    correct: bool
    median: float | None  # the PRM's last-step median


@dataclass(frozen=True)
class CalibrationQuestion:
    question_median: float  # the PRM's median for the question alone
    solutions: tuple[ScoredSolution, ...]  # in sampling order


def _quantile_edges(values: Sequence[float], bins: int) -> tuple[float, ...]:
    """Inner edges splitting ``values`` into ``bins`` groups of about equal counts (duplicates merged)."""
    if bins <= 1 or not values:
        return ()
    qs = np.quantile(np.asarray(values, dtype=float), [i / bins for i in range(1, bins)])
    return tuple(sorted({float(q) for q in qs}))


def _jeffreys(k: int, m: int) -> np.ndarray:
    grid = p_grid()
    logd = (k - 0.5) * np.log(grid) + (m - k - 0.5) * np.log1p(-grid)
    d = np.exp(logd - logd.max())
    return d / d.sum()


def fit_concentration(questions: Sequence[CalibrationQuestion], equal: Equal) -> float:
    """alpha maximising the probability of how each question's wrong answers repeat."""
    partitions = []
    for q in questions:
        wrong = [s.answer for s in q.solutions if not s.correct and s.answer is not None]
        sizes = [len(g) for g in group_indices(wrong, equal)]
        if sum(sizes) >= 2:
            partitions.append(sizes)
    if not partitions:
        return 1.0
    alphas = np.logspace(-2, 2, 161)
    ll = [sum(_log_crp(sizes, float(a)) for sizes in partitions) for a in alphas]
    return float(alphas[int(np.argmax(ll))])


def _pick(selector: str, subset: Sequence[ScoredSolution], equal: Equal) -> ScoredSolution | None:
    """What ``selector`` answers with among ``subset``: the same rule search uses (``voting.pick``)."""
    i = pick(selector, [s.answer for s in subset], [s.median for s in subset], equal)
    return None if i is None else subset[i]


N_EDGES = (2, 3, 4, 6, 9)  # sample-count buckets of the value table: 1, 2, 3, 4-5, 6-8, 9+
SCORE_BUCKETS = 5


def replay(solutions: Sequence[ScoredSolution], selector: str, equal: Equal) -> list[tuple[PickState, bool]]:
    """Sequential search over ``solutions`` in this order: after each, the state the value table
    sees (the pick's median and agreement) and whether the pick is right."""
    out = []
    for n in range(1, len(solutions) + 1):
        seen = solutions[:n]
        chosen = _pick(selector, seen, equal)
        if chosen is None:
            out.append((PickState(n, 0.0, False), False))
            continue
        votes = votes_for([s.answer for s in seen], seen.index(chosen), equal)
        out.append((PickState(n, chosen.median if chosen.median is not None else 0.0, votes >= 2), chosen.correct))
    return out


def best_selector(gains: dict[str, tuple[GainCurve, ...]]) -> str:
    """The picker whose gain curves are highest on average (over question bins by their questions,
    and over n): adaptive search picks with it, and its value table is measured for it."""
    def area(curves: tuple[GainCurve, ...]) -> float:
        total = sum(c.questions for c in curves) or 1
        return sum(c.questions * (sum(c.accuracy) / len(c.accuracy) if c.accuracy else 0.0) for c in curves) / total

    return max((s for s in SELECTORS if s in gains), key=lambda s: area(gains[s]))


def fit_values(questions: Sequence[CalibrationQuestion], model: AnswerModel, selector: str, equal: Equal, *,
               orderings: int = 8, seed: int = 0) -> tuple[ValueTable, ...]:
    """Per question bin, the value table (see :class:`ValueTable`) from replaying sequential search
    on each question's samples in ``orderings`` seeded random orders: in each state reached, was
    the pick right, and how did one and two more samples change that."""
    rng = random.Random(seed)
    rows: dict[int, list[tuple[PickState, float, list[float]]]] = {b: [] for b in range(len(model.question_edges) + 1)}
    for q in questions:
        b = model.question_bin(q.question_median)
        for _ in range(orderings):
            order = list(q.solutions)
            rng.shuffle(order)
            states = replay(order, selector, equal)
            for i, (state, right) in enumerate(states[:-1]):
                later = [float(states[i + r][1]) - float(right) for r in (1, 2) if i + r < len(states)]
                rows[b].append((state, float(right), later))
    score_edges = _quantile_edges([state.median for rs in rows.values() for state, _, _ in rs], SCORE_BUCKETS)
    tables = []
    for b in sorted(rows):
        # every replayed state counts once (support: states, not questions), unshrunk
        replayed = (ReplayedState(i, 1.0, ValueTable.keys(state, N_EDGES, score_edges), right, later)
                    for i, (state, right, later) in enumerate(rows[b]))
        tables.append(ValueTable(N_EDGES, score_edges, CellTable(fit_cells(replayed, 2), MIN_SUPPORT)))
    return tuple(tables)


def _isotonic(values: Sequence[float], weights: Sequence[float]) -> list[float]:
    """Pool adjacent violators: the closest non-decreasing sequence (weighted least squares)."""
    blocks: list[list[float]] = []  # [mean, weight, length]
    for v, w in zip(values, weights, strict=True):
        blocks.append([v, w, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            b = blocks.pop()
            a = blocks[-1]
            total = a[1] + b[1]
            a[0] = (a[0] * a[1] + b[0] * b[1]) / total if total else (a[0] + b[0]) / 2
            a[1], a[2] = total, a[2] + b[2]
    return [b[0] for b in blocks for _ in range(int(b[2]))]


def gain_curve(questions: Sequence[CalibrationQuestion], selector: str, equal: Equal, seed: int = 0) -> GainCurve:
    """Accuracy of ``selector`` with n = 1..max samples, averaged over questions and subsets."""
    rng = random.Random(seed)
    longest = max((len(q.solutions) for q in questions), default=0)
    acc, weight = [], []
    for n in range(1, longest + 1):
        total, count = 0.0, 0
        for q in questions:
            m = len(q.solutions)
            if m < n:
                continue
            if math.comb(m, n) <= MAX_SUBSETS:
                subsets = list(itertools.combinations(range(m), n))
            else:
                subsets = [tuple(sorted(rng.sample(range(m), n))) for _ in range(MAX_SUBSETS)]
            right = 0
            for idx in subsets:
                chosen = _pick(selector, [q.solutions[i] for i in idx], equal)
                right += bool(chosen is not None and chosen.correct)
            total += right / len(subsets)
            count += 1
        if count:
            acc.append(total / count)
            weight.append(count)
    return GainCurve(tuple(round(a, 5) for a in _isotonic(acc, weight)), len(questions))


def _score_evidence(solutions: Sequence[ScoredSolution], edges: tuple[float, ...]) -> ScoreEvidence:
    """Laplace-smoothed likelihoods of the score bins among right and among wrong solutions: a bin
    with few samples leans towards uniform, i.e. towards no evidence."""
    k = len(edges) + 1
    right = np.ones(k)
    wrong = np.ones(k)
    for s in solutions:
        b = int(np.searchsorted(edges, s.median, side="right"))
        (right if s.correct else wrong)[b] += 1
    return ScoreEvidence(tuple(float(x) for x in right / right.sum()), tuple(float(x) for x in wrong / wrong.sum()))


def canonical(question: CalibrationQuestion, equal: Equal) -> CalibrationQuestion:
    """The question with each answer replaced by the label of its equivalence class ("a0", "a1", ...)."""
    firsts: list[str] = []
    labels: list[str | None] = []
    for s in question.solutions:
        if s.answer is None:
            labels.append(None)
            continue
        j = group_of(s.answer, firsts, equal)
        if j == len(firsts):
            firsts.append(s.answer)
        labels.append(f"a{j}")
    return CalibrationQuestion(question.question_median, tuple(
        ScoredSolution(label, s.correct, s.median) for label, s in zip(labels, question.solutions, strict=True)))


def _same_label(a: str | None, b: str) -> bool:
    return a == b


def fit_answer_model(questions: Sequence[CalibrationQuestion], equal: Equal, *, question_bins: int = 5, score_bins: int = 5,
                     min_per_bin: int = 12, provenance: dict[str, Any] | None = None) -> AnswerModel:
    """The calibrated :class:`AnswerModel` (see the module docstring). Bins shrink to what the data
    supports: at least ``min_per_bin`` questions per question bin, and ~40 samples per score bin."""
    # answers compared once per question: the fit compares them many thousand times, as labels
    questions = [canonical(q, equal) for q in questions if q.solutions]
    equal = _same_label
    if len(questions) < 2:
        raise EdgeAdaptError(f"calibrating the selector needs graded solutions of at least 2 questions, got {len(questions)}")
    medians = [q.question_median for q in questions]
    q_edges = _quantile_edges(medians, max(1, min(question_bins, len(questions) // min_per_bin)))
    bins = np.searchsorted(q_edges, medians, side="right")
    priors = []
    for b in range(len(q_edges) + 1):
        members = [q for q, qb in zip(questions, bins, strict=True) if qb == b]
        if not members:  # duplicate edges can leave a bin empty: a flat prior stands in
            priors.append(tuple([1.0 / GRID_SIZE] * GRID_SIZE))
            continue
        mix = np.mean([_jeffreys(sum(s.correct for s in q.solutions), len(q.solutions)) for q in members], axis=0)
        priors.append(tuple(float(x) for x in mix / mix.sum()))
    scored = [s for q in questions for s in q.solutions if s.median is not None]
    s_edges: tuple[float, ...] = ()
    centers: tuple[float, ...] = ()
    scores: tuple[ScoreEvidence, ...] = ()
    if scored and 0 < sum(s.correct for s in scored) < len(scored):
        medians_scored = np.asarray([s.median for s in scored], dtype=float)
        s_edges = _quantile_edges(list(medians_scored), max(1, min(score_bins, len(scored) // 40)))
        k = len(s_edges) + 1
        sb = np.searchsorted(s_edges, medians_scored, side="right")
        if all(np.any(sb == b) for b in range(k)):
            centers = tuple(float(np.median(medians_scored[sb == b])) for b in range(k))
        if len(set(centers)) < k:  # an empty bin, or ties in the data: the bins' own values, not interpolated
            centers = ()
        per_bin = []
        for b in range(len(q_edges) + 1):
            members = [s for q, qb in zip(questions, bins, strict=True) if qb == b for s in q.solutions if s.median is not None]
            per_bin.append(_score_evidence(members, s_edges))
        scores = tuple(per_bin)
    model = AnswerModel(q_edges, tuple(priors), fit_concentration(questions, equal), s_edges, centers, scores,
                        provenance=dict(provenance or {}, questions=len(questions),
                                        samples=sum(len(q.solutions) for q in questions)))
    gains = {}
    for selector in SELECTORS:
        curves = []
        for b in range(len(q_edges) + 1):
            members = [q for q, qb in zip(questions, bins, strict=True) if qb == b]
            curves.append(gain_curve(members, selector, equal) if members else GainCurve((), 0))
        gains[selector] = tuple(curves)
    selector = best_selector(gains)
    values = fit_values(questions, model, selector, equal)
    return dataclasses.replace(model, gains=gains, values=values, max_measured=max(len(q.solutions) for q in questions),
                               selector=selector)
