"""One search's view of the shared PRM: its own cost, its energy payer.

Searches that run together share one PRM; each holds a view, so that ``stats`` says what *this*
search scored (the deltas a search's cost and adaptive search's pricing read) and every call names
who pays for its tokens in the batched runs. Without a PRM the view is as absent as the PRM.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Sequence
from typing import Any

from edge_adapt.prm.protocol import PRM
from edge_adapt.prm.scorer import PrefixScore, PRMStats, Quantiles


class SearchPRM:
    """A search's PRM: scores through the shared one, counted on its own."""

    def __init__(self, prm: PRM, payer: Hashable | None = None) -> None:
        self.shared = prm
        self.payer = payer
        self.available = prm.available
        self.provider = prm.provider
        self.variant = prm.variant
        self.bundle: Any = prm.bundle
        self.stats = PRMStats()
        self._lock = threading.Lock()

    def score(self, question: str, prefixes: Sequence[Sequence[str]], *, per_step: bool = False) -> list[PrefixScore]:
        scorer = getattr(self.shared, "score_with_stats", None)
        if scorer is None:  # no PRM (it raises what to do), or a PRM without shared runs
            return self.shared.score(question, prefixes, per_step=per_step)
        scores, cost = scorer(question, prefixes, per_step=per_step, payer=self.payer)
        with self._lock:
            self.stats = self.stats + cost
        return scores

    def score_question(self, question: str) -> Quantiles:
        return self.score(question, [[]])[0].final
