"""Admission to the KV pool: room for a whole search is reserved before it starts.

A search may hold up to ``sequences`` live nodes and, beside its prompt, ``cells`` KV cells (every
live path writing its whole token cap). Reserving that much up front means a search that was let
in never runs out of room mid-step because of another; when the pool is spoken for, a new search
waits. First come, first served: a small search never overtakes a large one waiting before it, so
nobody starves (llama-server makes a request wait for a free slot; vLLM's scheduler admits by free
KV blocks, and can preempt; with a search's worst case reserved, nothing needs preempting).
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from edge_adapt.errors import BranchCapacityError, ContextOverflowError

POLL_S = 0.05  # how often a waiting search checks whether it was cancelled


@dataclass(frozen=True)
class Reservation:
    id: int
    cells: int
    sequences: int
    rows: int


class Admission:
    """The pool's cells and sequences, and the rows of a decode, reserved by searches in arrival order.

    ``rows`` caps the live paths of all searches together: past the batch size where the device's
    cost per row stops falling (``benchmarks/bench_decode_curve.py``), more rows in one decode only
    make every row slower (each row attends over the whole shared pool), so a wide search (a vote
    of sixteen) runs beside few others and narrow ones (adaptive search's one or two) fill the batch.
    A search wider than the cap runs alone."""

    def __init__(self, cells: int, sequences: int, rows: int = 0) -> None:
        self.cells = cells
        self.sequences = sequences
        self.rows = rows or sequences  # 0: no cap beyond the sequences
        self._cond = threading.Condition()
        self._queue: deque[int] = deque()
        self._ids = itertools.count()
        self.cells_reserved = 0
        self.sequences_reserved = 0
        self.rows_reserved = 0
        self.active = 0  # searches holding a reservation
        self.waited = 0  # searches that had to wait for room (a count, for reports)

    def reserve(self, cells: int, sequences: int, rows: int = 1, interrupt: Callable[[], None] | None = None) -> Reservation:
        """Wait until the room is free and take it; ``interrupt`` is polled while waiting (may raise)."""
        rows = min(rows, self.rows)
        if cells > self.cells:
            raise ContextOverflowError(f"this search needs {cells} KV cells (its prompt and every live path's token cap) "
                                       f"and the pool holds {self.cells}: shorten the prompt, lower max_tokens or the "
                                       "number of samples, or raise the context (--ctx)")
        if sequences > self.sequences:
            raise BranchCapacityError(f"this search holds up to {sequences} sequences and the generator has "
                                      f"{self.sequences}: run fewer samples at once or raise n_seq_max")
        me = next(self._ids)
        with self._cond:
            self._queue.append(me)
            try:
                waited = False
                while not (self._queue[0] == me and self._fits(cells, sequences, rows)):
                    waited = True
                    self._cond.wait(POLL_S)
                    if interrupt is not None:
                        interrupt()
                self.waited += waited
                self.cells_reserved += cells
                self.sequences_reserved += sequences
                self.rows_reserved += rows
                self.active += 1
            finally:
                self._queue.remove(me)
                self._cond.notify_all()
        return Reservation(me, cells, sequences, rows)

    def release(self, reservation: Reservation) -> None:
        with self._cond:
            self.cells_reserved -= reservation.cells
            self.sequences_reserved -= reservation.sequences
            self.rows_reserved -= reservation.rows
            self.active -= 1
            self._cond.notify_all()

    def _fits(self, cells: int, sequences: int, rows: int) -> bool:
        return (self.cells_reserved + cells <= self.cells and self.sequences_reserved + sequences <= self.sequences
                and self.rows_reserved + rows <= self.rows)
