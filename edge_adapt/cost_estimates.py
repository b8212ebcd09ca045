"""Online cost estimates of one device: what a round of samples or branch-steps costs in tokens,
joules and seconds, learnt from the rounds a policy observes (the largest recent tokens per unit
for grants, the cheapest for whether a question can be answered at all; both forget)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from edge_adapt.guard import Unit

WINDOW = 64  # rounds (or questions, for the tail) an estimate remembers: more than one question's rounds


@dataclass
class Recent:
    """The last :data:`WINDOW` observations of one quantity: their largest and their smallest."""

    values: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def high(self) -> float:
        return max(self.values, default=0.0)

    @property
    def low(self) -> float:
        return min(self.values, default=0.0)


@dataclass
class AffineCost:
    """``cost ~ fixed + per_token * tokens`` per round, fitted by exponentially weighted least squares.

    Why not a plain cost per token: a round also pays a fixed part (the PRM call over the new
    prefixes, scheduling, the first decode of each branch), so rounds of one sample cost far more
    per token than rounds of 32 decoded together. A per-token average learnt from small rounds
    made the policy grant ever fewer samples (the next rounds were smaller still and looked
    dearer), down to none; one learnt from big rounds under-priced a lone sample.
    """

    decay: float = 0.9  # weight of the past (about the last ten rounds)
    w: float = 0.0
    sx: float = 0.0
    sy: float = 0.0
    sxx: float = 0.0
    sxy: float = 0.0

    def add(self, tokens: float, cost: float) -> None:
        d = self.decay
        self.w, self.sx, self.sy = d * self.w + 1, d * self.sx + tokens, d * self.sy + cost
        self.sxx, self.sxy = d * self.sxx + tokens * tokens, d * self.sxy + tokens * cost

    @property
    def ready(self) -> bool:
        return self.w > 0

    def coefficients(self) -> tuple[float, float]:
        """(fixed, per_token), both >= 0. per_token stays between a quarter of the average cost
        per token and that average: noise in a few similar-sized rounds can fit any slope, and an
        unbounded one priced a lone sample at twice a whole best-of-32 round."""
        mx, my = self.sx / self.w, self.sy / self.w
        average = my / mx if mx > 0 else 0.0
        var = self.sxx / self.w - mx * mx
        if var <= 1e-9 * max(mx * mx, 1.0):
            return 0.0, average  # one round size seen so far: no way to split the cost
        per_token = min(max((self.sxy / self.w - mx * my) / var, 0.25 * average), average)
        return max(my - per_token * mx, 0.0), per_token


@dataclass
class CostEstimates:
    """Online cost estimates shared by every question of a run (they describe the device)."""

    joules: AffineCost = field(default_factory=AffineCost)
    seconds: AffineCost = field(default_factory=AffineCost)
    tokens_per_unit: dict[str, Recent] = field(default_factory=dict)  # recent rounds' tokens per unit, per unit
    tokens_seen: int = 0

    def update(self, unit: Unit, units: int, tokens: int, joules: float, seconds: float) -> None:
        if units <= 0 or tokens <= 0:
            return
        self.joules.add(tokens, joules)
        self.seconds.add(tokens, seconds)
        self.tokens_per_unit.setdefault(unit, Recent()).add(tokens / units)
        self.tokens_seen += tokens

    @property
    def ready(self) -> bool:
        return self.joules.ready

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
