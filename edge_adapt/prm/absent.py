"""The no-PRM mode: search without a process reward model, clearly labelled.

A generator without a PRM calibrated for it can still answer by majority vote over samples (one
sample: plain sampling). :class:`NoPRM` stands where the PRM would be: it costs nothing, and any
strategy that would read a score is refused before it runs (``needs_prm``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edge_adapt.errors import SamplingConfigError
from edge_adapt.prm.scorer import PRMStats

NO_PRM_HINT = ("without a PRM only majority:n=N runs (n=1: plain sampling); calibrate a PRM for this generator with "
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

    def score(self, question: str, prefixes: Sequence[Sequence[str]], per_step: bool = False) -> list[Any]:
        raise SamplingConfigError(f"this strategy reads PRM scores; {NO_PRM_HINT}")

    def score_question(self, question: str) -> Any:
        raise SamplingConfigError(f"this strategy reads the PRM's score of the question; {NO_PRM_HINT}")
