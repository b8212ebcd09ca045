"""The no-PRM mode: search without a process reward model, clearly labelled.

A generator without a PRM calibrated for it still answers by its own samples: votes, and the
adaptive vote on its agreement and token confidence (``edge-adapt calibrate``). :class:`NoPRM`
stands where the PRM would be: it costs nothing, and any
strategy that would read a score is refused before it runs (``needs_prm``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edge_adapt.errors import SamplingConfigError
from edge_adapt.prm.scorer import PRMStats

NO_PRM_HINT = ("without a PRM only strategies that read no score run (majority:n=N, adaptive_vote, consistency, esc, cisc, "
               "deepconf); calibrate a PRM for this generator with "
               "`edge-adapt export rollouts` and `export prm`, then pass --prm")


class NoPRM:
    """No PRM: zero cost, and a clear error if a score is ever asked for."""

    available = False
    provider = "none"
    variant = "none"
    threads: int | None = None
    spin = False
    bundle: Any = None

    def __init__(self) -> None:
        self.stats = PRMStats()

    def score(self, question: str, prefixes: Sequence[Sequence[str]], *, per_step: bool = False) -> list[Any]:
        raise SamplingConfigError(f"this strategy reads PRM scores; {NO_PRM_HINT}")

    def score_question(self, question: str) -> Any:
        raise SamplingConfigError(f"this strategy reads the PRM's score of the question; {NO_PRM_HINT}")
