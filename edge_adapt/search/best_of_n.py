"""``best_of_n``: the one-call form of :class:`~edge_adapt.search.strategies.BestOfN`."""

from __future__ import annotations

from edge_adapt.generator import Generator, SamplingParams
from edge_adapt.prm import QuantilePRM
from edge_adapt.search.strategies import BestOfN, Searcher, SearchSettings
from edge_adapt.search.types import SearchResult
from edge_adapt.tasks import Problem, Task


def best_of_n(
    generator: Generator,
    prm: QuantilePRM,
    task: Task,
    problem: Problem,
    n: int,
    *,
    sampling: SamplingParams | None = None,
    seed: int = 0,
    max_steps: int = 32,
) -> SearchResult:
    """Sample ``n`` solutions from one shared prefill (decoded together), score them in one PRM
    call, and return the one with the highest median success probability at its last step."""
    settings = SearchSettings(sampling=sampling or SamplingParams(temperature=0.7), max_steps=max_steps)
    return Searcher(generator, prm, task, settings).run(BestOfN(n=n), problem, seed=seed)
