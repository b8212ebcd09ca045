"""Instance-adaptive scaling (IAS): how many samples a question or a beam needs.

Pure functions of calibrated success probabilities (Park et al., arXiv 2506.09338):

- ``n_samples``: if each sample succeeds with probability ``p``, ``N = ceil(log(1-C)/log(1-p))``
  samples contain a success with probability at least ``C``. ``p`` is the PRM's *low* quantile
  (10% by default), clipped to [1e-4, 1-1e-4]: sizing on a pessimistic estimate is what keeps
  the confidence honest when the PRM is unsure.
- ``beams_to_keep``: with candidate prefixes sorted by ``p`` (best first), keep the fewest
  ``K`` such that ``K * M_max >= N(p_(K))``: the K-th best prefix could be covered if each kept
  beam were expanded M_max times. A clearly good prefix means K = 1; K never exceeds K_max.
- ``expansion_width``: expand each kept beam by ``M = min(ceil(N(min p_kept) / K_max), M_max)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from edge_adapt.errors import SamplingConfigError

P_MIN, P_MAX = 1e-4, 1 - 1e-4


def clip_probability(p: float) -> float:
    return min(max(float(p), P_MIN), P_MAX)


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise SamplingConfigError(f"the target confidence C must be in (0, 1), got {confidence}")


def n_samples(p: float, confidence: float = 0.99) -> int:
    """Samples needed so that at least one succeeds with probability ``confidence``."""
    _check_confidence(confidence)
    p = clip_probability(p)
    return max(1, math.ceil(math.log(1.0 - confidence) / math.log(1.0 - p) - 1e-12))


def beams_to_keep(p_sorted: Sequence[float], m_max: int, k_max: int, confidence: float = 0.99) -> int:
    """K = min{k : k * M_max >= N(p_(k))}, at most K_max (and at most len(p_sorted))."""
    if not p_sorted:
        return 0
    if any(a < b for a, b in zip(p_sorted, p_sorted[1:], strict=False)):
        raise ValueError("p_sorted must be sorted best first (descending)")
    limit = min(k_max, len(p_sorted))
    for k in range(1, limit + 1):
        if k * m_max >= n_samples(p_sorted[k - 1], confidence):
            return k
    return limit


def expansion_width(p_min_kept: float, k_max: int, m_max: int, confidence: float = 0.99) -> int:
    """M = min(ceil(N(min p_kept) / K_max), M_max), at least 1."""
    return max(1, min(math.ceil(n_samples(p_min_kept, confidence) / k_max), m_max))


# Targets a tight budget may fall back to, in order; below 0.5 a search is no longer a search.
CONFIDENCE_LADDER = (0.95, 0.9, 0.8, 0.7, 0.6, 0.5)


def achieved_confidence(p: float, n: int) -> float:
    """The C that ``n`` samples reach when each succeeds with probability ``p``: 1 - (1-p)^n."""
    return 1.0 - (1.0 - clip_probability(p)) ** n
