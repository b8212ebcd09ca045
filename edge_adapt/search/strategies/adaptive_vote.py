"""The adaptive vote: value-aware sequential sampling on the generator's own evidence.

Samples are drawn one or two at a time; before each round the generator's vote model
(:mod:`edge_adapt.search.calibration.vote_model`, fitted by ``edge-adapt calibrate`` on the user's questions)
says what one or two more samples would add to P(the leading answer is right) in the state the
vote is in, and the round is drawn only while that exceeds its cost at ``price`` (accuracy points
per 1,000 generated-token equivalents, the unit of every adaptive strategy:
:mod:`edge_adapt.search.stopping`). No PRM is needed; a PRM's score joins only where calibration chose it.
Without a vote model it is Adaptive-Consistency: one sample at a time until the leader's lead is
settled (a Beta posterior, ``threshold``), at most ``n_max``. The decision record says which.

``keep`` < 1 composes DeepConf's online termination with either: once ``warmup`` samples are in,
their lowest-window confidences set a floor, and later samples are cut off below it (no vote).

Like every search, it stops once its first samples hold no extractable answer
(``SearchSettings.give_up_after``): their answers cannot be compared, so more earn nothing.
Wherever no sample has an answer, the searcher replies with the best sample
(:func:`~edge_adapt.search.voting.no_answer_pick`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from edge_adapt.budget.decisions import AdaptiveVoteSummary
from edge_adapt.errors import SamplingConfigError
from edge_adapt.search.calibration.vote_model import Sample, leader, vote_round, vote_state
from edge_adapt.search.context import SearchContext
from edge_adapt.search.stopping import work_per_sample
from edge_adapt.search.strategies.deepconf_online import cut_off, warmup_floor
from edge_adapt.search.strategy import MAX_LIVE_PATHS, check_int, check_number
from edge_adapt.search.types import Candidate
from edge_adapt.search.voting import Equal, group_indices


@dataclass(frozen=True)
class AdaptiveVote:
    price: float = 8.0  # accuracy points (0-100) per 1,000 generated-token equivalents a further sample must earn
    n_max: int = 16
    stop_at: float = 0.98  # stop when the leader is at least this likely right (calibrated)
    threshold: float = 0.95  # Adaptive-Consistency's stop, without a vote model
    calibrated: bool = True  # False: Adaptive-Consistency even when a vote model is there (a baseline)
    keep: float = 1.0  # < 1: DeepConf's online termination after the warm-up (deepconf_online's keep)
    warmup: int = 4
    select: str = "auto"
    name: str = "adaptive_vote"

    SPEC_KINDS: ClassVar[dict[str, dict[str, Any]]] = {"adaptive_vote": {}}
    SPEC_MAIN: ClassVar[str] = "price"
    SPEC_ALWAYS: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        if not (isinstance(self.price, (int, float)) and math.isfinite(self.price) and self.price >= 0):
            raise SamplingConfigError(f"adaptive_vote: price must be a finite number >= 0 (accuracy points per 1,000 "
                                      f"tokens), got {self.price!r}")
        check_int("adaptive_vote", "n_max", self.n_max, 1, MAX_LIVE_PATHS)
        check_number("adaptive_vote", "stop_at", self.stop_at, 0.5, 1.0)
        check_number("adaptive_vote", "threshold", self.threshold, 0.5, 1.0, high_open=True)
        check_number("adaptive_vote", "keep", self.keep, 0.0, 1.0, low_open=True)
        check_int("adaptive_vote", "warmup", self.warmup, 1, MAX_LIVE_PATHS)

    live_paths = 2  # rounds draw one or two; finished ones are released
    needs_prm = False  # a vote model that chose the PRM's scores falls back to its token-confidence table without one

    def run(self, ctx: SearchContext) -> None:
        model = ctx.vote_model if self.calibrated else None
        if model is not None and not ctx.prm.available:
            model = model.without_prm()  # calibrated with a PRM: the generator's own evidence, as calibrated beside it
        feature = model.feature if model is not None else "mean"
        samples: list[Sample] = []
        rounds: list[int] = []
        floor: float | None = None
        weight = model.prm_token_weight if model is not None and model.needs_prm else 0.0  # the PRM's work, where it is read
        gen0, prm0 = ctx.gen.usage, ctx.prm.stats
        while True:
            work = work_per_sample((ctx.gen.usage - gen0).generated_tokens, (ctx.prm.stats - prm0).tokens, len(samples), weight)
            decision = vote_round(vote_state(samples), model, price=self.price, work=work, n_max=self.n_max,
                                  stop_at=self.stop_at, threshold=self.threshold)
            if decision.draw == 0:
                break
            granted = ctx.grant("sample", decision.draw)
            if granted == 0:
                break
            rounds.append(granted)
            ctx.complete(granted, score=feature == "prm", min_confidence=floor)
            ctx.guard.observe()
            samples = _samples(ctx.candidates, feature, ctx.equal)
            if self.keep < 1 and floor is None and len(samples) >= self.warmup:
                floor = warmup_floor(ctx.candidates, self.keep)
        _, members = leader(samples)
        ctx.adaptive_pick = max(members, key=lambda i: (samples[i].confidence, -i)) if members else None
        sizes = sorted((len(g) for g in group_indices([s.answer for s in samples], lambda a, b: a == b)), reverse=True)
        stop = "no_answer" if ctx.gave_up else decision.reason if decision.draw == 0 else "budget_cap"
        ctx.record(AdaptiveVoteSummary(
            rule=f"calibrated:{feature}" if model is not None else "adaptive-consistency", price=self.price,
            samples=len(samples), rounds=tuple(rounds), stop=stop,
            p_answer=round(decision.right, 4), cell=decision.cell, questions_behind=decision.questions, votes=tuple(sizes),
            confidence_floor=None if floor is None else round(floor, 4),
            cut=None if floor is None else cut_off(ctx.candidates)))


@dataclass(frozen=True)
class AdaptiveConsistency(AdaptiveVote):
    """Adaptive-Consistency alone (the uncalibrated rule, also where a vote model exists): a baseline,
    and the safe default for a generator nobody calibrated."""

    calibrated: bool = False
    name: str = "consistency"

    SPEC_KINDS: ClassVar[dict[str, dict[str, Any]]] = {"consistency": {}}
    SPEC_MAIN: ClassVar[str] = "n_max"


def _samples(candidates: Sequence[Candidate], feature: str, equal: Equal) -> list[Sample]:
    """The candidates as the vote model sees them: answer groups labelled "a0", "a1", ... in order of
    first appearance (answers compared as the task compares them), with their confidence."""
    labels = {i: f"a{g}" for g, members in enumerate(group_indices([c.answer for c in candidates], equal)) for i in members}
    return [Sample(labels.get(i), _feature(c, feature), c.n_tokens) for i, c in enumerate(candidates)]


def _feature(candidate: Candidate, feature: str) -> float:
    if feature == "prm":
        return candidate.final.median if candidate.final is not None else 0.0
    return float(getattr(candidate.confidence, feature))
