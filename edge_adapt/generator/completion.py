"""Whole solutions: a parent's branches stepped to their ends, every branch batched."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any

from edge_adapt.generator.sampling import SamplingParams
from edge_adapt.generator.steps import StepRules
from edge_adapt.generator.tree import GenerationStats, Node

if TYPE_CHECKING:
    from edge_adapt.generator.runtime import Generator


def complete(
    generator: Generator,
    parents: Sequence[Node],
    n: int | Sequence[int] = 1,
    *,
    sampling: SamplingParams | None = None,
    rules: StepRules | None = None,
    max_steps: int = 64,
    between_steps: Callable[[], None] | None = None,
    on_token: Callable[[bytes], None] | None = None,
    payer: Hashable | None = None,
    cap_reached: Callable[[], bool] | None = None,
) -> tuple[list[Node], GenerationStats]:
    """Sample ``n`` full solutions from each parent, step by step, all branches batched.

    Returns the last node of every solution (its path holds the steps) and the cost. A
    solution still going after ``max_steps`` steps is returned as it stands (its ``end`` is
    then not a solution end). Every node this call made is released before it returns, also
    when ``between_steps`` (called before every step after the first, and before every batched
    decode inside a step) raises to stop it. ``on_token`` receives every generated token's
    bytes as it is decoded (for one solution: a stream to a reader). Once ``cap_reached`` (asked
    before every decode) is true, every solution ends where it stands (``budget``).
    """
    options: dict[str, Any] = {"sampling": sampling, "rules": rules, "payer": payer, "interrupt": between_steps,
                               "on_token": on_token, "cap_reached": cap_reached}
    frontier = generator.expand(parents, n, **options)
    stats = frontier.stats
    leaves = [c for c in frontier.children if c.ends_solution]
    live = [c for c in frontier.children if not c.ends_solution]
    try:
        steps = 1
        while live and steps < max_steps:
            if between_steps is not None:
                between_steps()
            step = generator.expand(live, 1, hand_over=True, **options)  # each step continues its parent's sequence
            stats = stats + step.stats
            leaves += [c for c in step.children if c.ends_solution]
            live = [c for c in step.children if not c.ends_solution]
            steps += 1
    finally:
        generator.release(*live)
    leaves += live
    return leaves, stats
