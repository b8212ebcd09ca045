"""What a search strategy is to the searcher, the spec parser and the composition root.

A strategy is a frozen dataclass of settings that runs itself on a :class:`SearchContext`,
declares how many solution paths it decodes at once (which sizes the generator's sequences and
KV pool), and names the spec kinds it is written as (``best_of_n:n=16``, ``majority:n=16``...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from edge_adapt.generator import StepRules
from edge_adapt.search.context import SearchContext


class Strategy(Protocol):
    name: str
    select: str
    # spec kind -> the settings that kind fixes (e.g. "majority": {"select": "majority"})
    SPEC_KINDS: ClassVar[dict[str, dict[str, Any]]]
    SPEC_MAIN: ClassVar[str]  # the setting that sets its cost, always written in its spec
    SPEC_ALWAYS: ClassVar[tuple[str, ...]]  # further settings always written

    @property
    def live_paths(self) -> int:
        """The most solution paths the strategy decodes at once."""
        ...

    def run(self, ctx: SearchContext) -> None:
        """Search: leave the candidates (and, for an ``auto`` pick, the choice) in ``ctx``."""
        ...


@dataclass(frozen=True)
class EarlyStop:
    """Adaptive-Consistency: sample in rounds, stop once P(leader is the majority) >= threshold."""

    threshold: float = 0.95
    round_size: int = 4


def sequences_needed(strategy: Strategy) -> int:
    """Generator sequences (``n_seq_max``) a strategy may hold at once: stepping N branches holds
    their parents too, plus the root."""
    return min(256, 2 * strategy.live_paths + 2)


PROMPT_ROOM = 512  # KV cells kept for the prompt: a default-task prompt is under 64 tokens, a GSM8K one a few hundred
MIN_KV_CELLS = 2048


def kv_cells_needed(strategy: Strategy, rules: StepRules) -> int:
    """The KV pool (``n_ctx`` of the unified cache) a search needs so that no path is cut short:
    the prompt once (branches share it) plus every live path's longest solution. Sized to the
    search rather than generously: the pool's size costs memory, not speed (llama.cpp attends
    over the cells in use; benchmarks/bench_kv.py)."""
    return max(MIN_KV_CELLS, PROMPT_ROOM + strategy.live_paths * rules.max_new_tokens)
