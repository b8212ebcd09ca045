"""Step-level beam search guided by the PRM, and its instance-adaptive version.

Both share one loop: expand the kept prefixes by one step, every ``every`` steps score the live
ones in one PRM call and decide which to keep and how wide to expand each, until the budget of
finished solutions is reached or the step cap ends them (those still going are graded as they
stand). They differ in that decision: a fixed top-n/width, or IAS's K and M from the kept
prefixes' pessimistic scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from edge_adapt.budget.decisions import BeamKept, IASBeamAllocation, IASFirstExpansion, LoweredConfidence
from edge_adapt.generator import Node
from edge_adapt.search.context import SearchContext
from edge_adapt.search.ias import CONFIDENCE_LADDER, beams_to_keep, expansion_width, n_samples
from edge_adapt.search.picks import Select
from edge_adapt.search.strategy import MAX_LIVE_PATHS, check_int, check_number, check_pick


@dataclass(frozen=True)
class BeamSearch:
    """Keep the best n/width prefixes (by the PRM median) and expand each by width, every
    ``score_every`` steps (in between, every beam is continued by one step)."""

    n: int = 16
    width: int = 4
    score_every: int = 1
    select: Select = "prm"
    name: str = "beam"

    SPEC_KINDS: ClassVar[dict[str, dict[str, Any]]] = {"beam": {}}
    SPEC_MAIN: ClassVar[str] = "n"
    SPEC_ALWAYS: ClassVar[tuple[str, ...]] = ("width",)

    def __post_init__(self) -> None:
        check_int("beam", "n", self.n, 1, MAX_LIVE_PATHS)
        check_int("beam", "width", self.width, 1, self.n)
        check_int("beam", "score_every", self.score_every, 1, 1_000)
        check_pick("beam", self.select)

    @property
    def live_paths(self) -> int:
        return self.n

    needs_prm = True  # prefixes are kept by their scores

    def run(self, ctx: SearchContext) -> None:
        beam_search(ctx, self, first=self.n, budget=self.n, every=self.score_every)

    def allocate(self, ctx: SearchContext, active: list[Node], remaining: int, step: int) -> tuple[list[Node], list[int]]:
        scores = ctx.score(active)
        k = max(1, min(len(active), -(-remaining // self.width)))
        order = sorted(range(len(active)), key=lambda i: -scores[i].at(ctx.settings.rank_quantile))
        ctx.record(BeamKept(step, k, self.width))
        return [active[i] for i in order[:k]], cap_widths([self.width] * k, remaining)


@dataclass(frozen=True)
class IASBeamSearch:
    """At each re-allocation: keep K = min{k : k*M_max >= N(p_(k))} <= K_max beams and expand each
    by M = min(ceil(N(min p_kept)/K_max), M_max); the first expansion samples N(p_question)."""

    k_max: int = 4
    m_max: int = 4
    confidence: float = 0.99
    size_quantile: float = 0.1
    realloc_every: int = 1
    select: Select = "prm"
    name: str = "ias_beam"

    SPEC_KINDS: ClassVar[dict[str, dict[str, Any]]] = {"ias_beam": {}}
    SPEC_MAIN: ClassVar[str] = "k_max"
    SPEC_ALWAYS: ClassVar[tuple[str, ...]] = ("m_max",)

    def __post_init__(self) -> None:
        check_int("ias_beam", "k_max", self.k_max, 1, MAX_LIVE_PATHS)
        check_int("ias_beam", "m_max", self.m_max, 1, MAX_LIVE_PATHS // self.k_max)
        check_number("ias_beam", "confidence", self.confidence, 0.0, 1.0, low_open=True, high_open=True)
        check_number("ias_beam", "size_quantile", self.size_quantile, 0.0, 1.0, low_open=True, high_open=True)
        check_int("ias_beam", "realloc_every", self.realloc_every, 1, 1_000)
        check_pick("ias_beam", self.select)

    @property
    def live_paths(self) -> int:
        return self.k_max * self.m_max

    needs_prm = True

    def run(self, ctx: SearchContext) -> None:
        budget = self.k_max * self.m_max
        p_low = ctx.question_score().at(self.size_quantile)
        first = min(n_samples(p_low, self.confidence), budget)
        ctx.record(IASFirstExpansion(p_low, first, budget))
        beam_search(ctx, self, first=first, budget=budget, every=self.realloc_every)

    def allocate(self, ctx: SearchContext, active: list[Node], remaining: int, step: int) -> tuple[list[Node], list[int]]:
        scores = ctx.score(active)
        p = [s.at(self.size_quantile) for s in scores]
        order = sorted(range(len(active)), key=lambda i: -p[i])
        allowance = ctx.guard.affordable("step", remaining)
        confidence = self.confidence
        while True:  # a tight budget steps down the confidence ladder until the allocation fits
            k = beams_to_keep([p[i] for i in order], self.m_max, self.k_max, confidence)
            m = expansion_width(min(p[i] for i in order[:k]), self.k_max, self.m_max, confidence)
            lower = [c for c in CONFIDENCE_LADDER if c < confidence]
            if min(k * m, remaining) <= allowance.units or not lower:
                break
            confidence = lower[0]
        if confidence != self.confidence:
            ctx.record(LoweredConfidence(step=step, from_confidence=self.confidence, to_confidence=confidence,
                                         limit=allowance.limit))
        ctx.record(IASBeamAllocation(step, k, m, tuple(round(p[i], 4) for i in order[:k])))
        return [active[i] for i in order[:k]], cap_widths([m] * k, remaining)


class _Allocator(Protocol):
    def allocate(self, ctx: SearchContext, active: list[Node], remaining: int, step: int) -> tuple[list[Node], list[int]]: ...


def beam_search(ctx: SearchContext, allocator: _Allocator, *, first: int, budget: int, every: int) -> None:
    """The shared loop: ``first`` children of the root, then re-allocation every ``every`` steps
    until ``budget`` solutions have finished."""
    active = _expand_within_budget(ctx, [ctx.root], [first]) or []
    ctx.live = [ctx.root, *active]
    step = 1
    while active and step < ctx.settings.max_steps and len(ctx.finished) < budget:
        remaining = budget - len(ctx.finished)
        if step % every == 0:
            kept, widths = allocator.allocate(ctx, active, remaining, step)
        else:
            kept, widths = active, [1] * len(active)
        ctx.gen.release(*[n for n in active if n not in kept])  # pruned: never generated further
        children = _expand_within_budget(ctx, kept, widths)
        if children is None:  # the budget allows no further step: the kept beams stand as they are
            active = kept
            break
        ctx.gen.release(*kept)
        active = children
        ctx.live = [ctx.root, *active]
        step += 1
    ctx.finalise(ctx.finished + active)  # solutions still going at the cap are graded as they stand


def _expand_within_budget(ctx: SearchContext, parents: Sequence[Node], widths: Sequence[int]) -> list[Node] | None:
    """Expand, after the guard has cut the widths down to what the budget allows; None when it
    allows nothing."""
    requested = sum(widths)
    granted = ctx.grant("step", requested)
    if granted < requested:
        widths = cap_widths(list(widths), granted)
    if granted == 0:
        return None
    keep = [(p, w) for p, w in zip(parents, widths, strict=True) if w > 0]
    children = ctx.expand([p for p, _ in keep], [w for _, w in keep])
    ctx.guard.observe()
    return children


def cap_widths(widths: list[int], remaining: int) -> list[int]:
    """Trim expansion widths so that no more than ``remaining`` new branches are made."""
    out, left = [], remaining
    for w in widths:
        take = max(0, min(w, left))
        out.append(take)
        left -= take
    return out
