"""What a search strategy is to the searcher, the spec parser and the composition root.

A strategy is a frozen dataclass of settings that runs itself on a :class:`SearchContext`,
declares how many solution paths it decodes at once (which sizes the generator's sequences and
KV pool), and names the spec kinds it is written as (``best_of_n:n=16``, ``majority:n=16``...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from edge_adapt.errors import SamplingConfigError
from edge_adapt.generator import StepRules
from edge_adapt.search.context import SearchContext
from edge_adapt.search.picks import PICKS

# The most solution paths a search decodes at once: stepping them holds their parents too, plus
# the root, and llama.cpp holds at most 256 sequences (2 x 127 + 2).
MAX_LIVE_PATHS = 127


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

    @property
    def needs_prm(self) -> bool:
        """Whether it reads PRM scores (without a PRM only those that do not can run)."""
        ...

    def run(self, ctx: SearchContext) -> None:
        """Search: leave the candidates (and, for an ``auto`` pick, the choice) in ``ctx``."""
        ...


@dataclass(frozen=True)
class EarlyStop:
    """Adaptive-Consistency: sample in rounds, stop once P(leader is the majority) >= threshold."""

    threshold: float = 0.95
    round_size: int = 4

    def __post_init__(self) -> None:
        check_number("+es", "threshold", self.threshold, 0.0, 1.0, low_open=True)
        check_int("+es", "round_size", self.round_size, 1, MAX_LIVE_PATHS)


def check_int(kind: str, name: str, value: int, low: int, high: int) -> None:
    """A strategy's integer setting in [low, high], or a SamplingConfigError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SamplingConfigError(f"{kind}: {name} must be an integer in {low}..{high}, got {value!r}")


def check_number(kind: str, name: str, value: float, low: float, high: float, *, low_open: bool = False,
                 high_open: bool = False) -> None:
    """A strategy's finite setting in its range (open ends as asked), or a SamplingConfigError naming it."""
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
          and (value > low if low_open else value >= low) and (value < high if high_open else value <= high))
    if not ok:
        raise SamplingConfigError(f"{kind}: {name} must be a finite number in {'(' if low_open else '['}{low:g}, "
                                  f"{high:g}{')' if high_open else ']'}, got {value!r}")


def check_pick(kind: str, select: str) -> None:
    if select not in PICKS:
        raise SamplingConfigError(f"{kind}: select must be one of {', '.join(PICKS)}, got {select!r}")


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
    return max(MIN_KV_CELLS, kv_cells_per_search(strategy, rules))


def kv_cells_per_search(strategy: Strategy, rules: StepRules) -> int:
    """What one search of ``strategy`` holds at most: a prompt, and every live path's longest solution."""
    return PROMPT_ROOM + strategy.live_paths * rules.max_new_tokens
