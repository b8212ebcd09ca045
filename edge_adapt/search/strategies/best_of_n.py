"""Best-of-N: N whole solutions sampled together from the question, one of them picked (by the
PRM, a vote, or a PRM-weighted vote); its instance-adaptive version sizes N per question from
the PRM's pessimistic quantile; either may stop early once the answers agree."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from edge_adapt.budget.decisions import EarlyStopDecision, FixedSamples, IASSamples, LoweredConfidence
from edge_adapt.errors import SamplingConfigError
from edge_adapt.search.context import SearchContext
from edge_adapt.search.ias import achieved_confidence, n_samples
from edge_adapt.search.picks import PICKS, SCORED_PICKS, Select
from edge_adapt.search.stopping import consistency_move
from edge_adapt.search.strategy import MAX_LIVE_PATHS, EarlyStop, check_int, check_number, check_pick
from edge_adapt.search.voting import group_answers

# a spec kind's pick: best_of_n picks by the PRM, majority/weighted/cisc/deepconf by their name
_PICKS: dict[str, dict[str, Any]] = {"": {}, **{p: {"select": p} for p in PICKS if p != "prm"}}


@dataclass(frozen=True)
class BestOfN:
    n: int = 16
    select: Select = "prm"
    early_stop: EarlyStop | None = None
    name: str = "best_of_n"

    SPEC_KINDS: ClassVar[dict[str, dict[str, Any]]] = {
        "best_of_n": _PICKS[""], "majority": _PICKS["majority"], "weighted": _PICKS["weighted"], "cisc": _PICKS["cisc"],
        "deepconf": _PICKS["deepconf"]}
    SPEC_MAIN: ClassVar[str] = "n"
    SPEC_ALWAYS: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        check_int("best_of_n", "n", self.n, 1, MAX_LIVE_PATHS)
        check_pick("best_of_n", self.select)

    @property
    def live_paths(self) -> int:
        return self.n

    @property
    def needs_prm(self) -> bool:
        return self.select in SCORED_PICKS

    def run(self, ctx: SearchContext) -> None:
        ctx.record(FixedSamples(self.n))
        sample(ctx, self.n, self.select, self.early_stop)


@dataclass(frozen=True)
class IASBestOfN:
    """N = min(N(p_low), n_max), p_low the PRM's ``size_quantile`` for the question alone."""

    n_max: int = 32
    confidence: float = 0.99
    size_quantile: float = 0.1
    select: Select = "prm"
    early_stop: EarlyStop | None = None
    name: str = "ias_best_of_n"

    SPEC_KINDS: ClassVar[dict[str, dict[str, Any]]] = {
        "ias_best_of_n": _PICKS[""], "ias_majority": _PICKS["majority"], "ias_weighted": _PICKS["weighted"]}
    SPEC_MAIN: ClassVar[str] = "n_max"
    SPEC_ALWAYS: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        check_int("ias_best_of_n", "n_max", self.n_max, 1, MAX_LIVE_PATHS)
        check_number("ias_best_of_n", "confidence", self.confidence, 0.0, 1.0, low_open=True, high_open=True)
        check_number("ias_best_of_n", "size_quantile", self.size_quantile, 0.0, 1.0, low_open=True, high_open=True)
        check_pick("ias_best_of_n", self.select)

    @property
    def live_paths(self) -> int:
        return self.n_max

    needs_prm = True  # N comes from the PRM's score of the question

    def run(self, ctx: SearchContext) -> None:
        p_low = ctx.question_score().at(self.size_quantile)
        needed = n_samples(p_low, self.confidence)
        n = min(needed, self.n_max)
        ctx.record(IASSamples(p_low, self.size_quantile, self.confidence, "N = ceil(log(1-C)/log(1-p_low))",
                              needed, n, needed > self.n_max))
        allowance = ctx.guard.affordable("sample", n)
        if allowance.units < n:  # a tight budget lowers the target confidence instead of failing
            n = max(1, allowance.units)
            ctx.record(LoweredConfidence(from_confidence=self.confidence, to_confidence=achieved_confidence(p_low, n),
                                         n=n, limit=allowance.limit))
        sample(ctx, n, self.select, self.early_stop)


def sample(ctx: SearchContext, n: int, select: str, early_stop: EarlyStop | None) -> None:
    """Draw ``n`` solutions (in rounds under early stopping), as the budget grants them."""
    if n < 1:
        raise SamplingConfigError(f"best-of-N needs N >= 1, got {n}")
    round_size = early_stop.round_size if early_stop is not None else n
    drawn = 0
    while drawn < n:
        granted = ctx.grant("sample", min(round_size, n - drawn))
        if granted == 0:
            break
        ctx.complete(granted, score=select in SCORED_PICKS)
        ctx.guard.observe()
        drawn += granted
        if early_stop is not None and drawn < n:  # Adaptive-Consistency's stop, checked after each round
            votes = [len(g) for g in group_answers(ctx.candidates, ctx.equal)]
            move = consistency_move(votes, drawn, n, early_stop.threshold)
            if move.reason == "settled":
                ctx.record(EarlyStopDecision(drawn, n, tuple(sorted(votes, reverse=True)), move.right, early_stop.threshold))
                return
