"""How a search picks its answer among its samples: the one registry of picks.

- ``prm``: the best-scored sample (the PRM's final score);
- ``weighted``: the answer whose PRM scores sum highest;
- ``majority``: the most frequent answer;
- ``cisc``, ``deepconf``: votes weighted by the generator's token confidence (no PRM);
- ``auto``: the strategy's own pick (adaptive search and the adaptive vote choose as they go).
"""

from __future__ import annotations

from typing import Literal, get_args

from edge_adapt.errors import SamplingConfigError

Select = Literal["prm", "weighted", "majority", "cisc", "deepconf", "auto"]
PICKS: tuple[str, ...] = tuple(p for p in get_args(Select) if p != "auto")  # what a fixed strategy may pick by
SCORED_PICKS = ("prm", "weighted")  # read PRM scores
CONFIDENCE_PICKS = ("cisc", "deepconf")  # read the generator's token confidence


def unknown_pick(how: object, allowed: tuple[str, ...] = PICKS) -> SamplingConfigError:
    return SamplingConfigError(f"unknown selection {how!r}; choose one of {', '.join(allowed)}")
