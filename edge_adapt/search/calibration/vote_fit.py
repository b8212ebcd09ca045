"""Fitting the vote model on a user's own questions, and judging it on questions it never saw.

Input: calibration questions, each with N samples drawn by the user's generator (answer labels
grouped by equivalence, graded, with their token confidences and, where a PRM scored them, its
median). The fit replays sequential votes over each question's samples in seeded random orders:
in every state reached, was the leader right, and what did 1, 2, 4 and 8 more samples change. Three
choices are made on calibration questions alone, out of fold (two folds of questions):

- the confidence feature (mean, lowest window, tail, or the PRM's median where there is one): the
  lowest log-loss of the table's P(leader right) on the other fold;
- the default price: the cheapest whose replayed accuracy on the other fold is within
  ``tolerance`` points of the best fixed vote (N = 1..N) measured there;
- nothing else: bins and shrinkage are fixed settings.

The questions, the replays and the held-out judgement are in :mod:`edge_adapt.search.calibration.vote_replay`.
Pure: numbers in, numbers out.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from edge_adapt.errors import EdgeAdaptError
from edge_adapt.search.calibration.cells import CellTable, ReplayedState, fit_cells
from edge_adapt.search.calibration.vote_model import (
    FEATURES,
    HORIZONS,
    MIN_QUESTIONS,
    VoteModel,
    VoteTable,
    cell_keys,
    leader,
    vote_state,
)
from edge_adapt.search.calibration.vote_replay import PRICES, Replayed, VoteQuestion, orders, replay_adaptive, replay_fixed

PRIOR_QUESTIONS = 4.0  # a cell's estimate counts its parent's as this many questions' worth


def available_features(questions: Sequence[VoteQuestion]) -> tuple[str, ...]:
    """The features every sample has (the PRM's only where every sample was scored)."""
    return tuple(f for f in FEATURES if all(s.features.get(f) is not None for q in questions for s in q.samples))


def _rows(questions: Sequence[VoteQuestion], feature: str, orderings: int, seed: int):  # type: ignore[no-untyped-def]
    """(question index, weight, state, right, gains after each of HORIZONS more samples that the
    question still has) of every replayed state."""
    rng = random.Random(seed)
    for qi, q in enumerate(questions):
        m = len(q.samples)
        for order in orders(m, orderings, rng):
            samples = q.as_samples(feature, order)
            trail = []
            for n in range(1, m + 1):
                seen = samples[:n]
                trail.append((vote_state(seen), float(q.right(leader(seen)[0]))))
            for n, (state, right) in enumerate(trail):
                gains = [trail[n + r][1] - right for r in HORIZONS if n + r < m]
                yield qi, 1.0 / orderings, state, right, gains


def fit_table(questions: Sequence[VoteQuestion], feature: str, *, orderings: int = 8, seed: int = 0,
              prior_questions: float = PRIOR_QUESTIONS, min_questions: int = MIN_QUESTIONS) -> VoteTable:
    """The value table of ``feature`` (see :class:`VoteTable`), each cell shrunk toward its parent."""
    rows = list(_rows(questions, feature, orderings, seed))
    if not rows:
        raise EdgeAdaptError("fitting the vote model needs questions with samples")
    confidences = [state.confidence for _, _, state, _, _ in rows if state.votes]
    edges = tuple(sorted({float(x) for x in np.quantile(confidences, [1 / 3, 2 / 3])})) if confidences else ()
    replayed = (ReplayedState(qi, w, cell_keys(state, edges), right, gains) for qi, w, state, right, gains in rows)
    cells = fit_cells(replayed, len(HORIZONS), prior_weight=prior_questions, parent=_parent)
    return VoteTable(edges, CellTable(cells, min_questions, root="*"))


def _parent(key: str) -> str | None:
    """The cell with the key's last condition dropped (the root "*" has none)."""
    if key == "*":
        return None
    return "*" if "," not in key else key.rsplit(",", 1)[0]


def log_loss(table: VoteTable, questions: Sequence[VoteQuestion], feature: str, seed: int) -> float:
    """Mean log-loss of the table's P(leader right) over replayed states of ``questions``."""
    total, weight = 0.0, 0.0
    for _, w, state, right, _ in _rows(questions, feature, 2, seed):
        p = min(max(table.lookup(state)[1].right, 0.01), 0.99)
        total -= w * (math.log(p) if right else math.log1p(-p))
        weight += w
    return total / weight if weight else float("inf")


def _folds(questions: Sequence[VoteQuestion], seed: int) -> tuple[list[VoteQuestion], list[VoteQuestion]]:
    order = list(questions)
    random.Random(seed).shuffle(order)
    return order[0::2], order[1::2]


def _choose_price(a: Sequence[VoteQuestion], b: Sequence[VoteQuestion], feature: str, m: int, seed: int,
                  tolerance: float, prm_work: float) -> tuple[float, dict[float, Replayed], dict[int, float]]:
    """Out of fold, the cheapest price within ``tolerance`` points of the best fixed vote there;
    with each price's replay (averaged over the two folds) and the fixed votes' accuracy."""
    fixed = {n: [replay_fixed(test, n, feature, seed=seed + 11) for _, test in ((a, b), (b, a))] for n in range(1, m + 1)}
    fixed_acc = {n: sum(r.accuracy for r in rs) / 2 for n, rs in fixed.items()}
    folds = [(fit_table(train, feature, seed=seed), test) for train, test in ((a, b), (b, a))]  # the price leaves them be
    by_price: dict[float, Replayed] = {}
    for price in PRICES:
        runs = [replay_adaptive(test, VoteModel(feature, table, m, price), price, feature, n_max=m, seed=seed + 13,
                                orderings=4, prm_work=prm_work if feature == "prm" else 0.0)[0] for table, test in folds]
        by_price[price] = Replayed(*(sum(getattr(r, k) for r in runs) / 2 for k in ("accuracy", "tokens", "samples")))
    within = [p for p, r in by_price.items() if r.accuracy >= max(fixed_acc.values()) - tolerance]
    price = max(within) if within else max(by_price, key=lambda p: by_price[p].accuracy)
    return price, by_price, fixed_acc


GIVE_UP_LOSS = 0.005  # the share of calibration questions giving up may cost (their leader would have been right)


def choose_give_up(questions: Sequence[VoteQuestion], *, orderings: int = 8, seed: int = 0) -> tuple[int, dict[str, float]]:
    """After how many samples without an extractable answer a search should stop: the fewest whose
    stop, replayed over seeded orders of each question's samples, loses at most
    :data:`GIVE_UP_LOSS` of the questions (their first k samples hold no answer, and the leader of
    all of them is right); with the share lost at each k."""
    rng = random.Random(seed)
    m = min(len(q.samples) for q in questions)
    lost = dict.fromkeys(range(1, m + 1), 0.0)
    for q in questions:
        right = q.right(leader(q.as_samples("mean"))[0])
        for order in orders(len(q.samples), orderings, rng):
            answered = [q.samples[i].answer is not None for i in order]
            for k in lost:
                lost[k] += right and not any(answered[:k])
    share = {str(k): round(v / (orderings * len(questions)), 4) for k, v in lost.items()}
    k = next((k for k in lost if lost[k] / (orderings * len(questions)) <= GIVE_UP_LOSS), m)
    return k, share


def fit_vote_model(questions: Sequence[VoteQuestion], *, seed: int = 0, tolerance: float = 1.0,
                   provenance: dict[str, Any] | None = None, prm_work: float = 0.0) -> VoteModel:
    """The vote model for these calibration questions, its feature and price chosen out of fold.

    The PRM's median is read only if it predicts the leader's correctness better (held-out-fold
    log-loss) *and* what it adds pays for scoring every sample: ``prm_work`` is that
    cost in generated-token equivalents (the sampling run's PRM time at its generation speed), and
    the vote with the PRM must be worth more, at its price, than the vote on the generator's own
    evidence at its own (accuracy points less price x tokens, out of fold)."""
    questions = [q for q in questions if q.samples]
    if len(questions) < 20:
        raise EdgeAdaptError(f"calibrating needs at least 20 questions with samples, got {len(questions)}")
    m = min(len(q.samples) for q in questions)
    a, b = _folds(questions, seed)
    features = available_features(questions)
    losses = {}
    for feature in features:
        losses[feature] = round(sum(log_loss(fit_table(train, feature, seed=seed), test, feature, seed + 7)
                                    for train, test in ((a, b), (b, a))) / 2, 5)
    feature = min(losses, key=lambda f: losses[f])
    price, by_price, fixed_acc = _choose_price(a, b, feature, m, seed, tolerance, prm_work)
    declined = None
    own = min((f for f in losses if f != "prm"), key=lambda f: losses[f]) if "prm" in losses else feature
    if feature == "prm" and prm_work > 0:
        own_price, own_by_price, own_fixed = _choose_price(a, b, own, m, seed, tolerance, prm_work)
        with_prm, without = by_price[price], own_by_price[own_price]
        worth_with = with_prm.accuracy - price * (with_prm.tokens + with_prm.samples * prm_work) / 1000
        worth_without = without.accuracy - price * without.tokens / 1000
        if worth_without >= worth_with:
            declined = {"prm_work_per_sample": round(prm_work, 1),
                        "with_prm": {"price": price, "accuracy": round(with_prm.accuracy, 2), "tokens": round(with_prm.tokens, 1),
                                     "samples": round(with_prm.samples, 2)},
                        "without": {"price": own_price, "accuracy": round(without.accuracy, 2),
                                    "tokens": round(without.tokens, 1)}}
            feature, price, by_price, fixed_acc = own, own_price, own_by_price, own_fixed
    report = {
        "feature": feature, "feature_log_loss": losses, "price": price, "tolerance_points": tolerance,
        "price_replays": {f"{p:g}": {"accuracy": round(r.accuracy, 2), "tokens": round(r.tokens, 1)} for p,
                          r in by_price.items()},
        "fixed_accuracy": {str(n): round(v, 2) for n, v in fixed_acc.items()},
        "chosen_on": f"two folds of the {len(questions)} calibration questions, each judged by a table fitted on the other",
    }
    if declined is not None:  # the PRM predicted better but did not pay for its scoring
        report["prm_declined"] = declined
    report["give_up_after"], report["give_up_lost"] = choose_give_up(questions, seed=seed)
    table = fit_table(questions, feature, seed=seed)
    generator_only = None
    if feature == "prm":  # a stack without the PRM still gets the best of the generator's own evidence
        generator_only = (own, fit_table(questions, own, seed=seed))
    return VoteModel(feature, table, m, price, dict(provenance or {}, questions=len(questions), samples_per_question=m), report,
                     generator_only)
