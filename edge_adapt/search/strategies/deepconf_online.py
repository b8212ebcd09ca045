"""DeepConf online (arXiv 2508.15260): a few warm-up samples set a confidence floor, and every
later sample is cut off as soon as its last window of tokens is less confident than that floor
(it gets no vote); the samples that ran to their end vote, each weighing exp(its lowest window).

The paper's token confidence is the mean negative log-probability of the top-k candidates; here
it is the sampled token's log-probability (:mod:`edge_adapt.search.confidence`), which the runtime
records at no cost. The floor is set per question, from that question's warm-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from edge_adapt.budget.decisions import ConfidenceCut
from edge_adapt.generator import StepEnd
from edge_adapt.search.confidence import confidence_floor
from edge_adapt.search.context import SearchContext
from edge_adapt.search.strategy import MAX_LIVE_PATHS, check_int, check_number
from edge_adapt.search.types import Candidate
from edge_adapt.search.voting import confidence_pick


@dataclass(frozen=True)
class DeepConfOnline:
    n: int = 16
    warmup: int = 4  # samples drawn whole first; their lowest windows set the floor
    keep: float = 0.9  # DeepConf-high: the floor lets about 90% of such samples run to their end
    select: str = "auto"
    name: str = "deepconf_online"

    SPEC_KINDS: ClassVar[dict[str, dict[str, Any]]] = {"deepconf_online": {}}
    SPEC_MAIN: ClassVar[str] = "n"
    SPEC_ALWAYS: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        check_int("deepconf_online", "n", self.n, 1, MAX_LIVE_PATHS)
        check_int("deepconf_online", "warmup", self.warmup, 1, self.n)
        check_number("deepconf_online", "keep", self.keep, 0.0, 1.0, low_open=True)

    @property
    def live_paths(self) -> int:
        return max(self.warmup, self.n - self.warmup)

    needs_prm = False

    def run(self, ctx: SearchContext) -> None:
        granted = ctx.grant("sample", self.warmup)
        if granted == 0:
            return
        ctx.complete(granted, score=False)
        ctx.guard.observe()
        floor = warmup_floor(ctx.candidates, self.keep)
        rest = ctx.grant("sample", self.n - len(ctx.candidates)) if len(ctx.candidates) < self.n else 0
        if rest:
            ctx.complete(rest, score=False, min_confidence=floor)
            ctx.guard.observe()
        # a warm-up sample under the floor votes no more than a later one cut off there would have
        answers = [c.answer if c.confidence.lowest >= floor else None for c in ctx.candidates]
        ctx.adaptive_pick = confidence_pick("deepconf", answers, [c.confidence for c in ctx.candidates], ctx.equal, keep=1.0)
        ctx.record(ConfidenceCut(warmup=granted, keep=self.keep, floor=round(floor, 4), drawn=len(ctx.candidates),
                                 cut=cut_off(ctx.candidates)))


def warmup_floor(warmup: Sequence[Candidate], keep: float) -> float:
    """DeepConf's online floor from the warm-up samples: later samples whose last window falls
    below it are cut off (``StepRules.min_confidence``). Also what ``adaptive_vote:keep=...`` composes."""
    return confidence_floor([c.confidence.lowest for c in warmup], keep)


def cut_off(candidates: Sequence[Candidate]) -> int:
    """How many samples the floor cut off."""
    return sum(1 for c in candidates if c.end is StepEnd.LOW_CONFIDENCE)
