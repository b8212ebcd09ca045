"""Online cost estimates of one device: what a round of samples or branch-steps costs in tokens,
joules and seconds, learnt from the rounds a policy observes.

Devices at the edge are rarely idle, so one round may cost many times the next (a cold first
decode, a burst of another process's work). The estimates are robust to that, and recover:

- **slow rounds are discounted**: a round costing more than :data:`OUTLIER` times what the other
  recent rounds predict for its size is left out of the fit (leave-one-out), so one slow moment
  does not set the price;
- **whether a question can be answered at all** is judged on the cheapest recent sample;
- **the estimate says how settled it is**: on fewer than :data:`SETTLED_ROUNDS` rounds, or none
  in the last :data:`STALE_S` seconds, a budget it would refuse is *probed* instead (one unit,
  then the estimate that round updates) — a refusal draws no sample, so without probes one slow
  moment would lock a budget out for good. A budget more than :data:`PLAUSIBLE_SPEEDUP` times
  below the cheapest recent sample is refused all the same.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

from edge_adapt.budget.guard import Unit

WINDOW = 64  # rounds (or questions, for the tail) an estimate remembers: more than one question's rounds
OUTLIER = 4.0  # a round costing this many times what the others predict is discounted
SETTLED_ROUNDS = 3  # rounds kept (after discounting) before an estimate may refuse a budget
STALE_S = 60.0  # an estimate with no round this recent is re-probed rather than trusted to refuse
# A budget this many times below the cheapest recent sample is refused even by an unsettled
# estimate: no quieter moment makes a sample that much cheaper than a cold start beside a busy
# process does.
PLAUSIBLE_SPEEDUP = 100.0


def _without_slow(values: list[float]) -> list[float]:
    """``values`` less the largest while it is more than :data:`OUTLIER` times the median of the rest."""
    kept = sorted(values)
    while len(kept) >= 2 and kept[-1] > OUTLIER * statistics.median(kept[:-1]):
        kept.pop()
    return kept


@dataclass
class Recent:
    """The last :data:`WINDOW` observations of one quantity: their largest and their smallest.
    ``robust``: the largest leaves out values far above the rest (a cost; a token count is not)."""

    robust: bool = False
    values: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def high(self) -> float:
        values = _without_slow(list(self.values)) if self.robust else self.values
        return max(values, default=0.0)

    @property
    def low(self) -> float:
        return min(self.values, default=0.0)


@dataclass(frozen=True)
class Round:
    """One observed expansion."""

    at: float  # time.monotonic() when it was observed
    unit: Unit
    units: int
    tokens: int
    joules: float
    seconds: float


@dataclass(frozen=True)
class AffineCost:
    """``cost ~ fixed + per_token * tokens`` per round, fitted by exponentially weighted least
    squares over the recent rounds with slow rounds left out.

    Why not a plain cost per token: a round also pays a fixed part (the PRM call over the new
    prefixes, scheduling, the first decode of each branch), so rounds of one sample cost far more
    per token than rounds of 32 decoded together. A per-token average learnt from small rounds
    made the policy grant ever fewer samples (the next rounds were smaller still and looked
    dearer), down to none; one learnt from big rounds under-priced a lone sample.
    """

    points: tuple[tuple[float, float], ...]  # (tokens, cost), oldest first
    decay: float = 0.9  # weight of the past (about the last ten rounds)

    @property
    def ready(self) -> bool:
        return bool(self.points)

    def kept(self) -> list[int]:
        """Indices of the rounds the fit uses: each round not :data:`OUTLIER` times dearer than
        the fit of the others predicts for its size."""
        return list(self._kept)

    @cached_property
    def _kept(self) -> list[int]:
        n = len(self.points)
        if n < 2:
            return list(range(n))
        terms = self._terms
        total = [sum(column) for column in zip(*terms, strict=True)]
        kept = []
        for i, (tokens, cost) in enumerate(self.points):
            fixed, per_token = _fit(*(t - own for t, own in zip(total, terms[i], strict=True)))
            predicted = fixed + per_token * tokens
            if predicted <= 0 or cost <= OUTLIER * predicted:
                kept.append(i)
        return kept or list(range(n))

    def coefficients(self) -> tuple[float, float]:
        """(fixed, per_token), both >= 0, from the rounds kept. per_token stays between a quarter of
        the average cost per token and that average: noise in a few similar-sized rounds can fit
        any slope, and an unbounded one priced a lone sample at twice a whole best-of-32 round."""
        return _fit(*self._sums(self._kept))

    def average(self) -> float:
        """The weighted average cost per token of the rounds kept."""
        _, sx, sy, _, _ = self._sums(self._kept)
        return sy / sx if sx > 0 else 0.0

    @cached_property
    def _terms(self) -> list[tuple[float, float, float, float, float]]:
        """Each round's weighted terms of the least-squares sums (w, x, y, xx, xy)."""
        n = len(self.points)
        terms = []
        for i, (tokens, cost) in enumerate(self.points):
            weight = self.decay ** (n - 1 - i)
            terms.append((weight, weight * tokens, weight * cost, weight * tokens * tokens, weight * tokens * cost))
        return terms

    def _sums(self, indices: list[int]) -> tuple[float, float, float, float, float]:
        terms = self._terms
        chosen = [terms[i] for i in indices] or [(0.0,) * 5]
        w, sx, sy, sxx, sxy = (sum(column) for column in zip(*chosen, strict=True))
        return w, sx, sy, sxx, sxy


def _fit(w: float, sx: float, sy: float, sxx: float, sxy: float) -> tuple[float, float]:
    """(fixed, per_token) from weighted least-squares sums (see :meth:`AffineCost.coefficients`)."""
    if w <= 1e-12:
        return 0.0, 0.0
    mx, my = sx / w, sy / w
    average = my / mx if mx > 0 else 0.0
    var = sxx / w - mx * mx
    if var <= 1e-9 * max(mx * mx, 1.0):
        return 0.0, average  # one round size seen so far: no way to split the cost
    per_token = min(max((sxy / w - mx * my) / var, 0.25 * average), average)
    return max(my - per_token * mx, 0.0), per_token


@dataclass(frozen=True)
class Settledness:
    """How much an estimate rests on: rounds kept and discounted, and the newest round's age."""

    rounds: int
    discounted: int
    newest_age_s: float | None

    @property
    def settled(self) -> bool:
        """Trusted to refuse a budget: enough rounds kept, and a recent one."""
        return (self.rounds >= SETTLED_ROUNDS and self.newest_age_s is not None
                and self.newest_age_s <= STALE_S)

    def describe(self) -> str:
        slow = f", {self.discounted} slow one(s) discounted" if self.discounted else ""
        age = f", the newest {self.newest_age_s:.0f} s ago" if self.newest_age_s is not None else ""
        return f"{self.rounds} recent round(s){slow}{age}"


@dataclass
class CostEstimates:
    """Online cost estimates shared by every question of a run (they describe the device)."""

    clock: Callable[[], float] = time.monotonic
    rounds: deque[Round] = field(default_factory=lambda: deque(maxlen=WINDOW))
    tokens_per_unit: dict[str, Recent] = field(default_factory=dict)  # recent rounds' tokens per unit, per unit
    tokens_seen: int = 0

    def update(self, unit: Unit, units: int, tokens: int, joules: float, seconds: float) -> None:
        if units <= 0 or tokens <= 0:
            return
        self.rounds.append(Round(self.clock(), unit, units, tokens, joules, seconds))
        self.tokens_per_unit.setdefault(unit, Recent()).add(tokens / units)
        self.tokens_seen += tokens

    @property
    def joules(self) -> AffineCost:
        return AffineCost(tuple((r.tokens, r.joules) for r in self.rounds))

    @property
    def seconds(self) -> AffineCost:
        return AffineCost(tuple((r.tokens, r.seconds) for r in self.rounds))

    @property
    def ready(self) -> bool:
        return bool(self.rounds)

    def settledness(self) -> Settledness:
        kept = len(self.joules.kept())
        age = self.clock() - self.rounds[-1].at if self.rounds else None
        return Settledness(kept, len(self.rounds) - kept, age)

    def tokens_per(self, unit: Unit, cheapest: bool = False) -> float:
        """The most tokens one unit took in the recent rounds (``cheapest``: the fewest); a step
        falls back to a whole sample until one is seen."""
        recent = self.tokens_per_unit.get(unit) or self.tokens_per_unit.get("sample") or Recent()
        return recent.low if cheapest else recent.high

    def round_cost(self, unit: Unit, units: int, cheapest: bool = False) -> tuple[float, float, float]:
        """(tokens, joules, seconds) a round of ``units`` units is expected to cost: at most, or at least."""
        tokens = units * self.tokens_per(unit, cheapest)
        (j0, j1), (s0, s1) = self.joules.coefficients(), self.seconds.coefficients()
        return tokens, j0 + j1 * tokens, s0 + s1 * tokens

    def unit_cost(self, unit: Unit, cheapest: bool = False) -> tuple[float, float, float]:
        """(tokens, joules, seconds) of a round of one unit."""
        return self.round_cost(unit, 1, cheapest)

    def cheapest_unit(self, unit: Unit) -> tuple[float, float, float]:
        """(tokens, joules, seconds) of one unit at its cheapest: the least of the fitted cost of
        the fewest tokens and what recent rounds actually paid per unit (whether a question can be
        answered at all is judged on this)."""
        tokens, joules, seconds = self.unit_cost(unit, cheapest=True)
        for r in self.rounds:
            if r.unit == unit:
                joules, seconds = min(joules, r.joules / r.units), min(seconds, r.seconds / r.units)
        return tokens, joules, seconds
