"""The contract between search and whatever limits its spending.

Search asks a :class:`Guard` before each expansion how many units (samples or branch-steps) it
may have, and records the typed :class:`Grant` it gets back; the guard learns what a round cost
when search says it is done. :class:`~edge_adapt.budget.policy.EnergyPolicy` hands out the budgeted
guard, :class:`Unlimited` grants everything. Search and policy both import this module, never
each other.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from edge_adapt.budget.decisions import Decision
from edge_adapt.energy import EnergyReading, Usage
from edge_adapt.energy.ledger import EnergyLedger
from edge_adapt.errors import BudgetError

Unit = Literal["sample", "step"]  # a full solution from the question, or one step of one branch


@dataclass(frozen=True)
class Budget:
    """Per-question limits; ``None`` means unlimited."""

    energy_j: float | None = None
    latency_s: float | None = None
    tokens: int | None = None  # generated tokens
    power_w: float | None = None  # average over ``power_window_s``, enforced by pacing
    power_window_s: float = 2.0
    safety: float = 1.25  # predicted costs are multiplied by this before they are granted
    # a question that passed the feasibility check gets its first unit even where the safety margin
    # rules it out (an answer that may run a little over beats none); False: a hard cap (a battery's
    # share, where what one question overruns another loses): no unit beyond the estimate, and the
    # samples in flight end where the energy runs out
    first_unit_floor: bool = True

    def __post_init__(self) -> None:
        for name in ("energy_j", "latency_s", "tokens", "power_w"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise BudgetError(f"budget {name} must be a positive finite number, got {value}; leave it unset for no limit")
        if not (math.isfinite(self.power_window_s) and self.power_window_s > 0):
            raise BudgetError(f"budget power_window_s must be a positive finite number of seconds, got {self.power_window_s}")
        if not (math.isfinite(self.safety) and self.safety >= 1.0):
            raise BudgetError(f"budget safety factor must be a finite number >= 1, got {self.safety}")

    @property
    def unlimited(self) -> bool:
        return self.energy_j is None and self.latency_s is None and self.tokens is None and self.power_w is None


@dataclass(frozen=True)
class Allowance:
    """How many units the budgets would fit now (nothing committed); ``limit`` names the binding
    one when that is fewer than requested."""

    units: int
    limit: str | None = None


@dataclass(frozen=True)
class Grant:
    """Units search may spend now, and the guard's decisions on the way (pacing, caps), in order."""

    units: int
    decisions: tuple[Decision, ...] = ()


class Guard(Protocol):
    """One question's spending limits, asked before each expansion."""

    def affordable(self, unit: Unit, requested: int) -> Allowance: ...

    def grant(self, unit: Unit, requested: int) -> Grant: ...

    def observe(self) -> None:
        """After the granted expansion: learn what it cost."""

    def finish(self) -> None:
        """At the end of the question: learn what the work after the last expansion cost."""

    def cap_reached(self) -> bool:
        """Whether a hard cap is spent (asked before every decode: the question's samples end there)."""


class SpendingPolicy(Protocol):
    """What a searcher is built with to budget its questions and meter them."""

    ledger: EnergyLedger  # the device's joules, split over the searches that share it

    def start_question(self, budget: Budget | None = None, *, meter: Callable[[], EnergyReading] | None = None,
                       usage: Callable[[], Usage] | None = None, charged: Callable[[], float] | None = None) -> Guard: ...

    def read(self) -> EnergyReading: ...


class Unlimited:
    """The guard of a searcher without a policy: grants everything, records nothing."""

    def affordable(self, unit: Unit, requested: int) -> Allowance:
        return Allowance(max(0, requested))

    def grant(self, unit: Unit, requested: int) -> Grant:
        return Grant(max(0, requested))

    def observe(self) -> None:
        pass

    def finish(self) -> None:
        pass

    def cap_reached(self) -> bool:
        return False
