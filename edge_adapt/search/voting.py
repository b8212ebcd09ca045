"""Picking an answer among candidates: by PRM score, by (weighted) majority, and when to stop
sampling because the answers already agree (Adaptive-Consistency)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from edge_adapt.errors import SamplingConfigError
from edge_adapt.search.confidence import TraceConfidence
from edge_adapt.search.picks import unknown_pick
from edge_adapt.search.types import Candidate

Equal = Callable[[str | None, str], bool]


def group_of(answer: str, keys: Sequence[str], equal: Equal) -> int:
    """The group ``answer`` belongs to: the first key it equals, or ``len(keys)`` (a new group),
    for votes built one sample at a time."""
    return next((g for g, key in enumerate(keys) if equal(answer, key)), len(keys))


def group_indices(answers: Sequence[str | None], equal: Equal) -> list[list[int]]:
    """Indices grouped by equivalent answer (a group's first member's answer is its key); ``None``
    (no answer) joins no group."""
    groups: list[list[int]] = []
    keys: list[str] = []
    for i, a in enumerate(answers):
        if a is None:
            continue
        g = group_of(a, keys, equal)
        if g == len(keys):
            keys.append(a)
            groups.append([])
        groups[g].append(i)
    return groups


def pick(how: str, answers: Sequence[str | None], scores: Sequence[float | None], equal: Equal) -> int | None:
    """The index a selector answers with, from the answers and last-step PRM medians alone (search
    picks with it, and the offline calibration replays the same rule):

    - ``prm``: the highest score among samples with an answer (any sample when none has one; the
      first on ties; unscored samples are not candidates);
    - ``majority``: the first sample of the most frequent answer (ties: the earliest group);
    - ``weighted``: the answer whose scores sum highest, its best-scored sample.
    """
    if how == "prm":
        scored = [i for i, sc in enumerate(scores) if sc is not None]
        among = [i for i in scored if answers[i] is not None] or scored
        return max(among, key=lambda i: scores[i]) if among else None  # type: ignore[arg-type, return-value]
    if how not in ("majority", "weighted"):
        raise unknown_pick(how, ("prm", "majority", "weighted"))
    groups = group_indices(answers, equal)
    if not groups:
        return None
    if how == "majority":
        return max(groups, key=len)[0]

    def score(i: int) -> float:
        return scores[i] or 0.0

    return max(max(groups, key=lambda g: sum(score(i) for i in g)), key=score)


CISC_TEMPERATURE = 0.1  # softmax temperature over mean log-probabilities (CISC tunes it; a fixed guess here)
DEEPCONF_KEEP = 0.9  # DeepConf-high: the most confident 90% of traces vote


def confidence_pick(how: str, answers: Sequence[str | None], confidences: Sequence[TraceConfidence], equal: Equal,
                    keep: float = DEEPCONF_KEEP) -> int | None:
    """Votes weighed by the generator's own confidence (no PRM), the answer's most confident sample:

    - ``cisc`` (arXiv 2502.06233): each sample weighs softmax(mean log-probability / T);
    - ``deepconf`` (arXiv 2508.15260, offline): the samples whose lowest-window confidence is in the
      top ``keep`` vote, each weighing exp(that confidence) (``keep=1``: all, as after the online
      version's termination, which already filtered).
    """
    if how == "cisc":
        scale = [c.mean / CISC_TEMPERATURE for c in confidences]
        top = max(scale, default=0.0)
        weights = [math.exp(v - top) for v in scale]
    elif how == "deepconf":
        lows = sorted((c.lowest for c, a in zip(confidences, answers, strict=True) if a is not None), reverse=True)
        cut = lows[max(0, math.ceil(keep * len(lows)) - 1)] if lows else 0.0
        weights = [math.exp(c.lowest) if c.lowest >= cut else 0.0 for c in confidences]
    else:
        raise SamplingConfigError(f"unknown confidence pick {how!r}; choose cisc or deepconf")
    groups = [g for g in group_indices(answers, equal) if any(weights[i] > 0 for i in g)]
    if not groups:
        return None
    best = max(groups, key=lambda g: sum(weights[i] for i in g))
    return max(best, key=lambda i: (confidences[i].mean, -i))


def votes_for(answers: Sequence[str | None], index: int, equal: Equal) -> int:
    """How many samples gave the answer of sample ``index`` (itself included; 0 if it has none)."""
    mine = answers[index]
    return 0 if mine is None else sum(1 for a in answers if a is not None and equal(a, mine))


def _medians(candidates: Sequence[Candidate]) -> list[float | None]:
    return [c.final.median if c.final is not None else None for c in candidates]


def group_answers(candidates: Sequence[Candidate], equal: Equal) -> list[list[int]]:
    """Indices of candidates grouped by equivalent answer; candidates without an answer are left out."""
    return group_indices([c.answer for c in candidates], equal)


def majority_vote(candidates: Sequence[Candidate], equal: Equal) -> int | None:
    """The first candidate of the most frequent answer (ties: the earliest group), or None."""
    return pick("majority", [c.answer for c in candidates], _medians(candidates), equal)


def weighted_vote(candidates: Sequence[Candidate], equal: Equal) -> int | None:
    """The answer whose candidates' PRM medians sum highest; returns its best-scored candidate."""
    return pick("weighted", [c.answer for c in candidates], _medians(candidates), equal)


def best_scored(candidates: Sequence[Candidate]) -> int | None:
    """The candidate with the highest PRM median at its last step."""
    return pick("prm", [c.answer for c in candidates], _medians(candidates), lambda a, b: a == b)


NO_ANSWER = "no_answer"  # how a reply was picked when no sample holds an answer (a Selected decision's ``by``)


def no_answer_pick(candidates: Sequence[Candidate]) -> int | None:
    """The reply of a search whose samples hold no extractable answer: the best sample that ended
    by itself (else any), by the PRM's last-step median where it scored them, else by the
    generator's mean token log-probability (how sure it was of what it wrote)."""
    if not candidates:
        return None
    finished = [i for i, c in enumerate(candidates) if c.end.finished] or list(range(len(candidates)))

    def rank(i: int) -> tuple[float, float, int]:
        c = candidates[i]
        return (c.final.median if c.final is not None else float("-inf"), c.confidence.mean, -i)

    return max(finished, key=rank)


def no_answer_reason(chosen: Candidate) -> str:
    """How :func:`no_answer_pick` chose ``chosen``, for its reader."""
    return "the PRM scored highest" if chosen.final is not None else \
        "the generator was surest of (mean token log-probability)"


def majority_confidence(votes: Sequence[int]) -> float:
    """P(the leading answer is the true majority), Adaptive-Consistency's Beta criterion.

    With v1 votes for the leading answer and v2 for the runner-up, the share of the leader
    among the two has posterior Beta(v1 + 1, v2 + 1); this is P(share > 1/2), in closed form
    for integer parameters (1 - I_{1/2}(a, b) with a = v1 + 1): sum_{j=0}^{v1} C(n, j) / 2^n,
    n = v1 + v2 + 1.
    """
    ranked = sorted(votes, reverse=True) + [0, 0]
    v1, v2 = ranked[0], ranked[1]
    n = v1 + v2 + 1
    return sum(math.comb(n, j) for j in range(0, v1 + 1)) / 2**n
