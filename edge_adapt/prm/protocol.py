"""What search asks of a PRM, whichever is loaded: the calibrated ONNX scorer, or none at all.

``available`` says whether scores exist; a strategy that reads them on a stack without one is
refused before it runs (``Strategy.needs_prm``), and ``score`` on the absent PRM is an error that
says what to do. ``stats`` is what the PRM has done so far (calls, tokens, seconds), read as
deltas around a search for its cost and by the energy estimate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from edge_adapt.prm.scorer import PrefixScore, PRMStats, Quantiles


class PRM(Protocol):
    available: bool
    provider: str  # the ONNX Runtime execution provider, or "none"
    variant: str  # the model file's precision (fp32, int8, fp16), or "none"
    stats: PRMStats
    bundle: Any  # the exported folder's PRMBundle; None without a PRM

    def score(self, question: str, prefixes: Sequence[Sequence[str]], *, per_step: bool = False) -> list[PrefixScore]:
        """Every prefix (a list of step texts; ``[]`` is the question alone), in batched calls."""
        ...

    def score_question(self, question: str) -> Quantiles:
        ...
