"""Picking an answer among candidates: by PRM score, by (weighted) majority, and when to stop
sampling because the answers already agree (Adaptive-Consistency)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from edge_adapt.search.types import Candidate

Equal = Callable[[str | None, str], bool]


def group_answers(candidates: Sequence[Candidate], equal: Equal) -> list[list[int]]:
    """Indices of candidates grouped by equivalent answer (first member's answer is the key);
    candidates without an answer are left out."""
    groups: list[list[int]] = []
    for i, c in enumerate(candidates):
        if c.answer is None:
            continue
        for group in groups:
            if equal(c.answer, candidates[group[0]].answer):
                group.append(i)
                break
        else:
            groups.append([i])
    return groups


def majority_vote(candidates: Sequence[Candidate], equal: Equal) -> int | None:
    """The first candidate of the most frequent answer (ties: the earliest group), or None."""
    groups = group_answers(candidates, equal)
    return max(groups, key=len)[0] if groups else None


def weighted_vote(candidates: Sequence[Candidate], equal: Equal) -> int | None:
    """The answer whose candidates' PRM medians sum highest; returns its best-scored candidate."""
    groups = group_answers(candidates, equal)
    if not groups:
        return None

    def score(i: int) -> float:
        return candidates[i].final.median if candidates[i].final is not None else 0.0

    best = max(groups, key=lambda g: sum(score(i) for i in g))
    return max(best, key=score)


def best_scored(candidates: Sequence[Candidate]) -> int | None:
    """The candidate with the highest PRM median at its last step."""
    scored = [i for i, c in enumerate(candidates) if c.final is not None]
    return max(scored, key=lambda i: candidates[i].final.median) if scored else None


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
