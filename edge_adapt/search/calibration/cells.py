"""The value table both calibrated models read: a search's state, as keys from the finest
condition to the coarsest, to a :class:`ValueCell` measured by replaying sequential search on
calibration questions: how often the answer picked in that state was right, and what a few more
samples added to that.

The PRM's answer model (:mod:`edge_adapt.search.calibration.answer_model`) keys its states by the
samples drawn, the pick's score and agreement; the generator's vote model
(:mod:`edge_adapt.search.calibration.vote_model`) by the samples drawn, the leader's share, its
confidence and how scattered the answers are. Both tables are fitted by :func:`fit_cells` and
looked up by :meth:`CellTable.lookup`, and the rule that reads a cell is
:func:`edge_adapt.search.stopping.value_move`.

The file form of a table's cells: ``{"cells": {key: {"support", "right", "gains"}}, "min_support"}``.
Files written before this form (``count``/``min_count`` in the answer model, ``questions``/
``min_questions`` in the vote model) are read as they are.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ValueCell:
    """Replays that reached one state: how much stands behind the cell (calibration questions, or
    replayed states), how often the pick was right, and the mean change in that after each
    horizon's more samples."""

    support: int
    right: float
    gains: tuple[float, ...]


@dataclass(frozen=True)
class CellTable:
    """Cells by key; a cell answers once ``min_support`` stands behind it (``root``, where given,
    answers always)."""

    cells: Mapping[str, ValueCell]
    min_support: int
    root: str | None = None

    def lookup(self, keys: Sequence[str]) -> tuple[str, ValueCell] | None:
        """The finest of ``keys`` (finest first) with enough support, or None."""
        for key in keys:
            cell = self.cells.get(key)
            if cell is not None and (cell.support >= self.min_support or key == self.root):
                return key, cell
        return None

    def to_dict(self) -> dict[str, Any]:
        cells = {k: {"support": c.support, "right": c.right, "gains": list(c.gains)} for k, c in sorted(self.cells.items())}
        return {"min_support": self.min_support, "cells": cells}


def read_cells(data: Mapping[str, Any], support_key: str, min_key: str, min_default: int, root: str | None) -> CellTable:
    """A table's cells from a file: this form, or the one its model wrote before (``support_key``,
    ``min_key``). Refuses a number that is not finite."""
    cells = {str(k): ValueCell(int(c.get("support", c.get(support_key, 0))), float(c["right"]),
                               tuple(float(g) for g in c["gains"])) for k, c in data["cells"].items()}
    if not all(math.isfinite(v) for c in cells.values() for v in (c.right, *c.gains)):
        raise ValueError("a number in the table is not finite")
    return CellTable(cells, int(data.get("min_support", data.get(min_key, min_default))), root)


@dataclass(frozen=True)
class ReplayedState:
    """One state a replay reached: which calibration question (support counts distinct ones), its
    weight, its keys (finest first), whether the pick was right, and what each horizon added."""

    question: int
    weight: float
    keys: Sequence[str]
    right: float
    gains: Sequence[float]


def fit_cells(rows: Iterable[ReplayedState], horizons: int, *, prior_weight: float = 0.0,
              parent: Callable[[str], str | None] = lambda key: None) -> dict[str, ValueCell]:
    """Each key's weighted mean rightness and gains over the states that reached it. With
    ``prior_weight`` > 0 a cell is shrunk toward its ``parent`` cell (fitted first) as if that
    many weight of the parent's states stood beside its own: cells few questions reached lean on
    coarser ones. A horizon no state of a cell reached (and its parent does not know) ends the
    cell's gains."""
    sums: dict[str, list[float]] = {}  # key -> [weight, right, then weight and gain of each horizon]
    seen: dict[str, set[int]] = {}
    for row in rows:
        for key in row.keys:
            acc = sums.setdefault(key, [0.0] * (2 + 2 * horizons))
            acc[0] += row.weight
            acc[1] += row.weight * row.right
            for h, gain in enumerate(row.gains):
                acc[2 + 2 * h] += row.weight
                acc[3 + 2 * h] += row.weight * gain
            seen.setdefault(key, set()).add(row.question)
    cells: dict[str, ValueCell] = {}
    for key in sorted(sums, key=_depth):  # parents first
        acc, up = sums[key], parent(key)
        prior = cells.get(up) if up is not None and prior_weight > 0 else None

        def shrunk(total: float, weight: float, toward: float | None) -> float:
            if toward is None:
                return total / weight if weight else 0.0
            return (total + prior_weight * toward) / (weight + prior_weight)

        right = shrunk(acc[1], acc[0], prior.right if prior else None)
        gains = []
        for h in range(horizons):
            toward = prior.gains[h] if prior and len(prior.gains) > h else None
            if acc[2 + 2 * h] == 0 and toward is None:
                break
            gains.append(round(shrunk(acc[3 + 2 * h], acc[2 + 2 * h], toward), 5))
        cells[key] = ValueCell(len(seen[key]), round(right, 5), tuple(gains))
    return cells


def _depth(key: str) -> tuple[int, str]:
    """Coarser keys first: fewer conditions named (a "*" names none)."""
    named = [part for part in key.split(",") if part != "*"]
    return len(named), key
