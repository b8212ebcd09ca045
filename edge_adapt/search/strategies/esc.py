"""Early-Stopping Self-Consistency (ESC, arXiv 2401.10480): sample in windows, stop at the first
window whose answers all agree, answer by the majority of everything drawn."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from edge_adapt.budget.decisions import EarlyStopDecision
from edge_adapt.search.context import SearchContext
from edge_adapt.search.strategy import MAX_LIVE_PATHS, check_int
from edge_adapt.search.voting import group_answers


@dataclass(frozen=True)
class WindowAgreement:
    window: int = 4
    n_max: int = 16
    select: str = "majority"
    name: str = "esc"

    SPEC_KINDS: ClassVar[dict[str, dict[str, Any]]] = {"esc": {}}
    SPEC_MAIN: ClassVar[str] = "n_max"
    SPEC_ALWAYS: ClassVar[tuple[str, ...]] = ("window",)

    def __post_init__(self) -> None:
        check_int("esc", "window", self.window, 1, MAX_LIVE_PATHS)
        check_int("esc", "n_max", self.n_max, 1, MAX_LIVE_PATHS)

    @property
    def live_paths(self) -> int:
        return min(self.window, self.n_max)

    needs_prm = False

    def run(self, ctx: SearchContext) -> None:
        while len(ctx.candidates) < self.n_max:
            start = len(ctx.candidates)
            granted = ctx.grant("sample", min(self.window, self.n_max - start))
            if granted == 0:
                return
            ctx.complete(granted, score=False)
            ctx.guard.observe()
            window = ctx.candidates[start:]
            if len(window) == self.window and all(c.answer is not None for c in window) \
                    and len(group_answers(window, ctx.equal)) == 1:
                if len(ctx.candidates) < self.n_max:
                    ctx.record(EarlyStopDecision(len(ctx.candidates), self.n_max, (self.window,), 1.0, 1.0))
                return
