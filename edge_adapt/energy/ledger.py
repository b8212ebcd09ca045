"""Joules per search when searches share the device.

One meter measures the whole device; several searches share its decodes and PRM runs. The
ledger reads the meter at every shared piece of work and splits the joules since its previous
reading over the searches by their part in the work that closes the interval:

- a decode by the rows each search had in the batch (a generated token or a prompt token is a row),
- a PRM run by the tokens each search had scored in it,
- anything else (a search's own reading before it decides: its Python, waiting, picking) evenly
  over the searches open at that moment.

Every joule read between the first and the last reading while searches are open goes to exactly
one search, so the per-search joules of a run add up to what the meter measured over the time
searches were open (joules while no search is open, between questions, are nobody's). Alone, a
search gets everything, as when it ran by itself.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Mapping

from edge_adapt.energy.meters import EnergyReading, Meter


class Account:
    """One search's joules: what the ledger has charged it so far."""

    def __init__(self, ledger: EnergyLedger) -> None:
        self.ledger = ledger
        self.joules = 0.0

    def charge(self, shares: Mapping[Hashable, float]) -> None:
        """Close the meter's interval and split it over ``shares`` (this account's ledger)."""
        self.ledger.charge(shares)

    def read(self) -> EnergyReading:
        """This search's joules so far, as a reading (timestamp and source of the meter)."""
        reading = self.ledger.settle()
        return EnergyReading(self.joules, None, reading.source, reading.estimated, reading.timestamp)

    def close(self) -> None:
        self.ledger.close(self)

    def __enter__(self) -> Account:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EnergyLedger:
    """The meter's readings, split over the open accounts (see the module's docstring). Thread-safe."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self._lock = threading.Lock()
        self._open: set[Account] = set()
        self._last: EnergyReading | None = None
        self.charged = 0.0  # joules handed to accounts, in all
        self.measured = 0.0  # joules the meter measured while accounts were open

    def read(self) -> EnergyReading:
        """The meter itself (serialised: some meters keep state between readings)."""
        with self._lock:
            return self.meter.read()

    def open(self) -> Account:
        account = Account(self)
        with self._lock:
            if not self._open:
                self._last = self.meter.read()  # idle time before is nobody's
            self._open.add(account)
        return account

    def close(self, account: Account) -> None:
        with self._lock:
            if account not in self._open:
                return
            self._split({})  # what happened up to now is still the open searches'
            self._open.discard(account)

    def charge(self, shares: Mapping[Hashable, float]) -> EnergyReading:
        with self._lock:
            return self._split(shares)

    def settle(self) -> EnergyReading:
        """Split what was spent since the last reading evenly over the open accounts."""
        with self._lock:
            return self._split({})

    def _split(self, shares: Mapping[Hashable, float]) -> EnergyReading:
        reading = self.meter.read()
        last, self._last = self._last, reading
        if last is None or not self._open:
            return reading
        joules = max(0.0, reading.joules - last.joules)
        self.measured += joules
        weights = {a: float(w) for a, w in shares.items() if isinstance(a, Account) and a in self._open and w > 0}
        if not weights:
            weights = dict.fromkeys(self._open, 1.0)
        total = sum(weights.values())
        for account, weight in weights.items():
            account.joules += joules * weight / total
        self.charged += joules
        return reading
