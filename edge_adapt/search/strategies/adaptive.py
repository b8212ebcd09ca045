"""Value-aware sequential sampling: draw samples while the next ones are worth their cost.

Instance-adaptive scaling sizes N so that *some* sample is right (coverage). A user gets the
*picked* answer, and with a small PRM the picker, not coverage, bounds accuracy: past a few
samples, more of them buy nothing, and coverage gives the hardest questions the most samples.
This strategy instead asks, before every round, what one or two more samples would add to the
probability that the picked answer is right, and draws them only while that gain exceeds their
cost times a price. The gains come from the value table calibrated for this PRM
(:mod:`edge_adapt.search.calibration.answer_model`: measured in states like the current one: samples drawn,
the pick's score, agreement), or, without one, from the Bayesian fallback's lookahead.

One knob, ``price``, in accuracy points per 1,000 generated-token equivalents (a sample's generated
tokens plus its PRM tokens at ``prm_token_weight``; the unit and the rule are every adaptive
strategy's: :mod:`edge_adapt.search.stopping`), traces a whole accuracy-compute curve: a low price
samples until answers settle, a high
one stops after the first sample unless the question is both uncertain and likely to be
resolved by a second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from edge_adapt.budget.decisions import ValueSamplingSummary
from edge_adapt.errors import SamplingConfigError
from edge_adapt.search.calibration.answer_model import PickState, QuestionModel
from edge_adapt.search.context import SearchContext
from edge_adapt.search.posterior import Evidence, Moments, expected_accuracy, posterior
from edge_adapt.search.stopping import FIRST, PRM_TOKEN_WEIGHT, Move, NextRound, past_limits, value_move, work_per_sample
from edge_adapt.search.voting import group_of, votes_for


@dataclass(frozen=True)
class ValueSampling:
    price: float = 8.0  # accuracy points (0-100) per 1,000 tokens of work a further sample must earn
    n_max: int = 16
    stop_at: float = 0.98  # stop at once when the picked answer is at least this likely right
    lookahead: int = 2  # rounds of 1..lookahead samples are weighed (a vote's second sample may only tie)
    prm_token_weight: float = PRM_TOKEN_WEIGHT  # a PRM token's cost in generated tokens
    use_prm: bool = True  # score finished samples with the PRM (evidence); False: agreement and the prior only
    select: str = "auto"  # the calibrated pick (the PRM folder's selector_model.json says which), else the posterior
    name: str = "adaptive"

    SPEC_KINDS: ClassVar[dict[str, dict[str, Any]]] = {"adaptive": {}}
    SPEC_MAIN: ClassVar[str] = "price"
    SPEC_ALWAYS: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        if not (math.isfinite(self.price) and self.price >= 0):
            raise SamplingConfigError(f"adaptive: price must be a finite number >= 0 (accuracy points per 1,000 tokens), got "
                                      f"{self.price}")
        if not 1 <= self.n_max <= 128:
            raise SamplingConfigError(f"adaptive: n_max must be in 1..128, got {self.n_max}")
        if not 0.5 <= self.stop_at <= 1.0:
            raise SamplingConfigError(f"adaptive: stop_at must be in [0.5, 1], got {self.stop_at}")
        if self.lookahead not in (1, 2, 3):
            raise SamplingConfigError(f"adaptive: lookahead must be 1, 2 or 3, got {self.lookahead}")
        if not (math.isfinite(self.prm_token_weight) and self.prm_token_weight >= 0):
            raise SamplingConfigError(f"adaptive: prm_token_weight must be >= 0, got {self.prm_token_weight}")

    @property
    def live_paths(self) -> int:
        return self.lookahead  # rounds draw at most this many at once; finished ones are released

    needs_prm = True  # its prior comes from the PRM's score of the question

    def run(self, ctx: SearchContext) -> None:
        """Rounds of 1..lookahead samples while their expected gain in the picked answer's accuracy
        exceeds their cost at ``price``."""
        q = ctx.question_score()
        model = ctx.answer_model.for_question(q.values, q.levels)
        moments = Moments(model.prior, self.n_max + self.lookahead + 1)
        evidence, firsts = Evidence(), []  # firsts: each answer group's first candidate, as in the evidence
        gen0, prm0 = ctx.gen.usage, ctx.prm.stats
        rounds = []
        while True:
            drawn = len(ctx.candidates)
            work = work_per_sample((ctx.gen.usage - gen0).generated_tokens, (ctx.prm.stats - prm0).tokens, drawn,
                                   self.prm_token_weight)
            ctx.adaptive_pick = _pick_for(ctx, model.selector, evidence, moments, model, firsts)
            decision = next_round(evidence, moments, model, self, work, _pick_state(ctx, ctx.adaptive_pick))
            rounds.append(decision)
            if decision.draw == 0:
                break
            granted = ctx.grant("sample", decision.draw)
            if granted == 0:
                break
            ctx.complete(granted, score=self.use_prm or model.selector != "majority")
            ctx.guard.observe()
            for index in range(drawn, len(ctx.candidates)):
                cand = ctx.candidates[index]
                if cand.answer is None:
                    evidence = evidence.add(None, 0.0)
                    continue
                group = group_of(cand.answer, [ctx.candidates[first].answer for first in firsts], ctx.equal)  # type: ignore[misc]
                if group == len(firsts):
                    firsts.append(index)
                median = cand.final.median if cand.final is not None else None
                evidence = evidence.add(group, model.evidence_of(median))
        ctx.adaptive_pick = _pick_for(ctx, model.selector, evidence, moments, model, firsts)
        last = rounds[-1]
        ctx.record(ValueSamplingSummary(
            question_q=tuple(round(v, 4) for v in q.values), calibrated_model=ctx.answer_model.calibrated,
            picked_by=model.selector, price=self.price, samples=len(ctx.candidates),
            rounds=tuple(r.draw for r in rounds if r.draw),
            stop="no_answer" if ctx.gave_up else last.reason if last.draw == 0 else "budget_cap",
            p_answer=round(last.right, 4), gave_up=last.reason == "not_worth" and last.right < 0.5,
            gains_at_stop=tuple(round(g, 4) for g in last.gains), work_per_sample=round(last.work, 1),
            groups=tuple(g.count for g in evidence.groups),
        ))


def _pick_for(ctx: SearchContext, selector: str, evidence: Evidence, moments: Moments, model: QuestionModel,
              firsts: list[int]) -> int | None:
    """The candidate adaptive search would answer with now."""
    if selector != "posterior":
        return ctx.select(selector)
    best = posterior(evidence, moments, model.concentration).best
    if best is None:
        return None
    members = [i for i, c in enumerate(ctx.candidates)
               if c.answer is not None and ctx.equal(c.answer, ctx.candidates[firsts[best]].answer)]
    return max(members, key=lambda i: (ctx.candidates[i].final.median if ctx.candidates[i].final else 0.0, -i))


def _pick_state(ctx: SearchContext, pick: int | None) -> PickState:
    if pick is None:
        return PickState(len(ctx.candidates), 0.0, False)
    chosen = ctx.candidates[pick]
    votes = votes_for([c.answer for c in ctx.candidates], pick, ctx.equal)
    return PickState(len(ctx.candidates), chosen.final.median if chosen.final is not None else 0.0, votes >= 2)


def next_round(evidence: Evidence, moments: Moments, model: QuestionModel, strategy: ValueSampling,
               cost_per_sample: float, pick: PickState | None = None) -> NextRound:
    """The next move by the calibrated rule (:func:`~edge_adapt.search.stopping.value_move`) on
    rounds of 1..lookahead samples; the first sample is always drawn.

    With a value table (a calibrated model), the pick's accuracy and the gains are what replays of
    sequential search on calibration questions measured in the state ``pick`` describes. Without
    one, they are the answer model's posterior and its exact lookahead over ``evidence``."""
    n = evidence.samples
    if n == 0:
        return NextRound(FIRST)
    if n >= strategy.n_max:
        return NextRound(Move(0, "n_max", _accuracy(evidence, moments, model, pick)), work=cost_per_sample)
    horizon = min(strategy.lookahead, strategy.n_max - n)
    if model.values is not None:
        if pick is None:
            raise SamplingConfigError("a calibrated answer model decides on the pick's state: pass it")
        cell = model.values.lookup(pick)
        limit = past_limits(n, strategy.n_max, model.max_measured)
        if limit is not None or cell is None:
            return NextRound(Move(0, "past_calibration", cell.right if cell is not None else 0.0), work=cost_per_sample)
        right, gains = cell.right, cell.gains[:min(horizon, model.max_measured - n)]
    else:
        right = posterior(evidence, moments, model.concentration).accuracy
        gains = tuple(expected_accuracy(evidence, moments, model, r) - right for r in range(1, horizon + 1))
    move = value_move(right, gains, range(1, len(gains) + 1), room=len(gains), price=strategy.price, work=cost_per_sample,
                      stop_at=strategy.stop_at, lookahead=strategy.lookahead)
    return NextRound(move, work=cost_per_sample)


def _accuracy(evidence: Evidence, moments: Moments, model: QuestionModel, pick: PickState | None) -> float:
    if model.values is not None and pick is not None:
        cell = model.values.lookup(pick)
        return cell.right if cell is not None else 0.0
    return posterior(evidence, moments, model.concentration).accuracy
