"""The energy-aware policy: per-question budgets that cap what search may spend. (Spreading a
battery's worth of energy over many questions is :mod:`edge_adapt.budget.allocation`.)

Search asks the policy before every expansion (:meth:`QuestionGuard.grant`); the policy turns
what is left of each budget into the largest number of samples or branch-steps that still fits,
using cost estimates it learns online (joules and seconds as a fixed cost per round plus a cost
per generated token, tokens per sample and per step, measured around every expansion including
its PRM call). Grants are pessimistic on purpose (the largest tokens-per-unit of the recent
rounds, times a safety factor): a budget is a promise, and a branch that does not fit is cheaper
to skip than to overrun. Whether a question can be answered at all is judged on the *cheapest*
recent sample, so that one request with long answers (a server's client asking a 150-factor
product) cannot make a budget that bought an answer before refuse every later one; slow rounds
are discounted, the estimates forget (only the last :data:`WINDOW` rounds count), and an
estimate that is not settled (too few rounds, or none recent) never refuses: the question runs as
a *probe* of one unit, which teaches the estimate what a unit costs now
(:mod:`edge_adapt.budget.online_costs`). A budget with no estimate yet is probed the same way.

A hard cap (``Budget.first_unit_floor=False``: a battery's share) is also kept while a round
runs: once the question's joules reach it, less what picking the answer costs, the samples in
flight end where they stand (their end reads ``budget``), since a grant can only estimate.

When a budget is tight, IAS keeps working at a lower target confidence C (search records the
C it could afford); a budget too small for even one greedy answer is a :class:`BudgetError`
before anything runs. A power cap is enforced by pacing: before an expansion the policy waits
until the average power over the sliding window is back under the cap.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from edge_adapt.budget.decisions import BudgetCap, Decision, PowerPaced
from edge_adapt.budget.guard import Allowance, Budget, Grant, Unit
from edge_adapt.budget.online_costs import PLAUSIBLE_SPEEDUP, STALE_S, CostEstimates, Recent
from edge_adapt.energy import EnergyReading, Meter, Usage
from edge_adapt.energy.ledger import EnergyLedger
from edge_adapt.errors import BudgetError

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Spent:
    joules: float
    seconds: float
    generated_tokens: int
    source: str
    estimated: bool


class EnergyPolicy:
    """Budgets for each question of a run, with cost estimates learnt as the run goes."""

    def __init__(self, meter: Meter, budget: Budget, usage: Callable[[], Usage]) -> None:
        self.meter = meter
        self.ledger = EnergyLedger(meter)  # joules per search when searches share the device
        self.budget = budget
        self.usage = usage
        self.estimates = CostEstimates()
        # What a question spends after its last expansion (scoring and picking the finished
        # candidates): the largest of the recent questions is held back from every grant.
        self.tails_joules = Recent(robust=True)
        self.tails_seconds = Recent(robust=True)
        self._power: deque[EnergyReading] = deque()

    def read(self) -> EnergyReading:
        reading = self.ledger.read()
        self._power.append(reading)
        while len(self._power) > 2 and reading.timestamp - self._power[1].timestamp >= self.budget.power_window_s:
            self._power.popleft()
        return reading

    def window_power(self) -> float | None:
        """Average watts over the sliding window (None until two readings exist)."""
        if len(self._power) < 2:
            return None
        first, last = self._power[0], self._power[-1]
        dt = last.timestamp - first.timestamp
        return (last.joules - first.joules) / dt if dt > 0 else None

    @property
    def tail_joules(self) -> float:
        return self.tails_joules.high

    @property
    def tail_seconds(self) -> float:
        return self.tails_seconds.high

    def start_question(self, budget: Budget | None = None, *, meter: Callable[[], EnergyReading] | None = None,
                       usage: Callable[[], Usage] | None = None, charged: Callable[[], float] | None = None) -> QuestionGuard:
        """A guard for one question, under ``budget`` (default: the policy's). ``meter`` and ``usage``
        read what *this* question has spent (its ledger account and its own work) where searches
        share the device; by default the whole device's meter and work. ``charged``: its joules so
        far without a new meter reading (a hard cap asks it before every decode)."""
        return QuestionGuard(self, budget, meter=meter, usage=usage, charged=charged)


class QuestionGuard:
    """One question's budget: search calls ``grant`` before and ``observe`` after each expansion."""

    def __init__(self, policy: EnergyPolicy, budget: Budget | None = None, *,
                 meter: Callable[[], EnergyReading] | None = None, usage: Callable[[], Usage] | None = None,
                 charged: Callable[[], float] | None = None) -> None:
        self.policy = policy
        self.budget = budget if budget is not None else policy.budget
        self._read = meter or policy.read
        self._usage = usage or policy.usage
        self._start = self._read()
        self._charged = charged or (lambda: self._read().joules)
        # a hard cap stops the samples in flight where what is left would not pay for the work
        # after them (scoring and picking, as dear as the dearest recent one)
        b = self.budget
        self._stop_at = None if b.energy_j is None or b.first_unit_floor else \
            self._start.joules + b.energy_j - policy.tail_joules
        self._usage0 = self._usage()
        self._round: tuple[EnergyReading, Usage, Unit, int] | None = None
        self._last_observed: EnergyReading | None = None
        self._granted_any = False
        self.probe: str | None = None  # why this question runs as a probe of one unit, if it does
        self._check_feasible()

    # -- what has been spent ------------------------------------------------------------------------

    def spent(self) -> Spent:
        now = self._read()
        usage = self._usage() - self._usage0
        return Spent(now.joules - self._start.joules, now.timestamp - self._start.timestamp, usage.generated_tokens,
                     now.source, now.estimated)

    def _check_feasible(self) -> None:
        """Refuse a budget that cannot buy one answer, or mark the question a probe where the
        estimate is not settled enough to refuse (see the module's docstring)."""
        est, b = self.policy.estimates, self.budget
        if b.energy_j is None and b.latency_s is None and b.tokens is None:  # unlimited, or a power cap (paced)
            return
        if not est.ready:
            self.probe = "no cost estimate yet: one unit first"
            return
        tokens, joules, seconds = est.cheapest_unit("sample")
        # one answer is one sample plus the work after it (scoring, picking), both as cheap as
        # recently seen; a question that passes here is never granted nothing (``grant`` floors
        # its first round at one unit)
        joules += self.policy.tails_joules.low
        seconds += self.policy.tails_seconds.low
        refusal, plausible = None, True
        if b.energy_j is not None and joules > b.energy_j:
            plausible = joules <= PLAUSIBLE_SPEEDUP * b.energy_j
            refusal = (f"an energy budget of {b.energy_j:g} J cannot buy one answer: one sample costs about {joules:.3g} J "
                       f"here ({self._start.source}{', estimated' if self._start.estimated else ''}); raise the budget "
                       f"to at least {math.ceil(joules * b.safety * 100) / 100:g} J")
        elif b.latency_s is not None and seconds > b.latency_s:
            plausible = seconds <= PLAUSIBLE_SPEEDUP * b.latency_s
            refusal = (f"a latency budget of {b.latency_s:g} s cannot buy one answer: one sample takes about "
                       f"{seconds:.3g} s here; raise it to at least {seconds * b.safety:.2g} s")
        elif b.tokens is not None and tokens > b.tokens:
            plausible = False  # a sample's tokens do not change with the device's load
            refusal = (f"a budget of {b.tokens} generated tokens cannot buy one answer: one sample takes up to "
                       f"{tokens:.0f} tokens here; raise it to at least {math.ceil(tokens)}")
        if refusal is None:
            return
        basis = est.settledness()
        # a hard cap (a battery's share) is never overrun to learn
        if not basis.settled and plausible and b.first_unit_floor:
            self.probe = f"the estimate is not settled ({basis.describe()}): one unit to learn what it costs now"
            log.info("budget probe: %s (%s)", refusal, basis.describe())
            return
        raise BudgetError(f"{refusal} (the cheapest sample of {basis.describe()}; an estimate with no round in "
                          f"{STALE_S:g} s is probed again)")

    # -- before and after each expansion --------------------------------------------------------

    def affordable(self, unit: Unit, requested: int) -> Allowance:
        """How many of ``requested`` units the budgets still fit, without committing to them."""
        est = self.policy.estimates
        if requested <= 0 or not est.ready or self.budget.unlimited:
            return Allowance(max(0, requested))
        tokens = est.tokens_per(unit)
        (fixed_j, j_per_token), (fixed_s, s_per_token) = est.joules.coefficients(), est.seconds.coefficients()
        per_j, per_s = j_per_token * tokens, s_per_token * tokens  # what each further unit adds to a round
        spent, safety = self.spent(), self.budget.safety
        b = self.budget
        left_j, left_s = math.inf, math.inf
        if b.energy_j is not None:
            left_j = b.energy_j - spent.joules - (self.policy.tail_joules + fixed_j) * safety
        if b.latency_s is not None:
            left_s = b.latency_s - spent.seconds - (self.policy.tail_seconds + fixed_s) * safety

        def units_in(left: float, per_unit: float) -> float:
            if left <= 0:
                return 0.0
            return left / (per_unit * safety) if per_unit > 0 else math.inf

        fits = {
            "energy": units_in(left_j, per_j),
            "latency": units_in(left_s, per_s),
            "tokens": (b.tokens - spent.generated_tokens) / tokens if b.tokens is not None and tokens > 0 else math.inf,
        }
        limit = min(fits, key=lambda k: fits[k])
        fit = fits[limit]
        # Near the limit, grant at most half of what is left: one round's spend varies (sample
        # lengths do), and halving rounds as the budget runs out keeps an unlucky round inside it.
        n = requested if requested <= fit / 2 else max(0, min(requested, math.floor(fit / 2 if fit >= 2 else fit)))
        return Allowance(n, limit if n < requested else None)

    def grant(self, unit: Unit, requested: int) -> Grant:
        """How many of ``requested`` units (samples or branch-steps) the budgets allow now."""
        if requested <= 0:
            return Grant(0)
        decisions: list[Decision] = []
        if (paced := self._pace()) is not None:
            decisions.append(paced)
        allowance = self.affordable(unit, requested)
        granted = allowance.units
        if self.probe is not None and not self._granted_any:
            granted = min(requested, 1)
            decisions.append(BudgetCap("probe", unit, requested, granted, self.probe))
        elif granted < requested:
            assert allowance.limit is not None
            floor = None
            if granted == 0 and not self._granted_any and self.budget.first_unit_floor:
                # The question passed the feasibility check, so one unit fits the budget as
                # estimated; only the safety margin (or a cost estimate that rose since) rules it
                # out. An answer that may run a little over beats no answer at all.
                granted, floor = 1, "first unit of a feasible question"
            decisions.append(BudgetCap(allowance.limit, unit, requested, granted, floor))
        if granted:
            self._granted_any = True
            self._round = (self._read(), self._usage(), unit, granted)
        return Grant(granted, tuple(decisions))

    def observe(self) -> None:
        """After an expansion: learn what it cost."""
        if self._round is None:
            return
        before, usage0, unit, units = self._round
        after = self._read()
        tokens = (self._usage() - usage0).generated_tokens
        self.policy.estimates.update(unit, units, tokens, after.joules - before.joules, after.timestamp - before.timestamp)
        self._round = None
        self._last_observed = after

    def cap_reached(self) -> bool:
        return self._stop_at is not None and self._charged() >= self._stop_at

    def finish(self) -> None:
        """At the end of the question: learn what the work after the last expansion cost."""
        if self._last_observed is None:
            return
        end = self._read()
        self.policy.tails_joules.add(end.joules - self._last_observed.joules)
        self.policy.tails_seconds.add(end.timestamp - self._last_observed.timestamp)

    def _pace(self) -> PowerPaced | None:
        cap = self.budget.power_w
        if cap is None:
            return None
        waited, power, gave_up = 0.0, None, None
        # Waiting longer than two windows means the device draws more than the cap even idle:
        # pacing cannot help, so go on and say so rather than stall forever.
        max_wait = 2 * self.budget.power_window_s
        while True:
            self.policy.read()
            power = self.policy.window_power()
            if power is None or power <= cap:
                break
            if self.budget.latency_s is not None and self.spent().seconds + 0.05 > self.budget.latency_s:
                gave_up = "latency budget"  # latency wins, and the record says so
                break
            if waited >= max_wait:
                gave_up = "idle power above the cap"
                break
            time.sleep(0.05)
            waited += 0.05
        if not (waited or gave_up):
            return None
        return PowerPaced(cap, round(waited, 3), None if power is None else round(power, 3), gave_up)
