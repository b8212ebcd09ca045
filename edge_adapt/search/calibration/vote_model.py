"""What a vote's samples say about its answer, from the generator's own evidence: no PRM needed.

After n samples of a question, the search sees a :class:`VoteState`: how many samples, how many
agree with the leading answer, how many distinct answers, and how sure the generator was of the
leader's samples (a token-confidence feature, or a PRM's score where one earned its place on
held-out questions). A :class:`VoteTable`, fitted by replaying sequential votes on the user's own
calibration questions (:mod:`edge_adapt.search.calibration.vote_fit`), says in such a state how often
the leader was right and what one or two more samples added. Cells seen on few calibration
questions are shrunk toward the coarser cell above them, and a decision is read from the finest
cell that enough questions stand behind. :func:`vote_round` turns that into the next move.

The file (``GENERATOR.calibration.json`` beside the GGUF) records what it was fitted for: the
generator's sha256 and the prompt and sampling settings. Stacks refuse it for another generator
and warn when the prompt settings differ.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_adapt.errors import ModelLoadError
from edge_adapt.files import atomic_write_text
from edge_adapt.search.calibration.cells import CellTable, ValueCell, read_cells
from edge_adapt.search.stopping import (
    FIRST,
    PRM_TOKEN_WEIGHT,
    Move,
    NextRound,
    consistency_move,
    past_limits,
    value_move,
)

log = logging.getLogger(__name__)

VOTE_MODEL_VERSION = 1
N_EDGES = (2, 3, 4, 5, 7, 10, 13)  # sample-count buckets: 1, 2, 3, 4, 5-6, 7-9, 10-12, 13+
SHARE_EDGES = (0.34, 0.5, 0.67, 0.999)  # the leader's vote share: <1/3, <1/2, <2/3, <1, all
FEATURES = ("mean", "lowest", "tail", "prm")  # what "how sure" reads: token confidence, or the PRM's median
# how many more samples the table prices: a vote's next sample often only ties, and a contested
# vote pays only after several, so one- and two-sample gains alone would stop it too early
HORIZONS = (1, 2, 4, 8)
MIN_QUESTIONS = 10  # a decision needs a cell this many calibration questions reached


@dataclass(frozen=True)
class Sample:
    """One finished sample as a vote sees it: its answer (None: cut off, no vote) and confidence."""

    answer: str | None
    confidence: float
    tokens: int = 0


@dataclass(frozen=True)
class VoteState:
    """What a vote has after ``n`` samples: the leader's votes and mean confidence, distinct answers."""

    n: int
    votes: int  # samples agreeing with the leading answer (0: no sample has an answer)
    runner_up: int  # samples agreeing with the second answer
    distinct: int
    confidence: float  # mean feature value of the leader's samples

    @property
    def share(self) -> float:
        return self.votes / self.n if self.n else 0.0


def leader(samples: Sequence[Sample]) -> tuple[str | None, list[int]]:
    """The leading answer and its samples' indices: most votes, ties to the higher mean confidence,
    then to the earlier answer. Answers compare as given (labels already grouped)."""
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        if s.answer is not None:
            groups.setdefault(s.answer, []).append(i)
    if not groups:
        return None, []

    def rank(item: tuple[str, list[int]]) -> tuple[int, float]:
        members = item[1]
        return len(members), sum(samples[i].confidence for i in members) / len(members)

    answer, members = max(groups.items(), key=rank)  # max keeps the first of equals: the earlier answer
    return answer, members


def vote_state(samples: Sequence[Sample]) -> VoteState:
    lead, members = leader(samples)
    counts = sorted((sum(1 for s in samples if s.answer == a) for a in {s.answer for s in samples}
                     if a is not None and a != lead), reverse=True)
    confidence = sum(samples[i].confidence for i in members) / len(members) if members else 0.0
    return VoteState(len(samples), len(members), counts[0] if counts else 0, len(counts) + bool(members), confidence)


def cell_keys(state: VoteState, confidence_edges: Sequence[float]) -> tuple[str, ...]:
    """The state's cells from the finest to the coarsest (the last, "*", holds every state)."""
    nb = int(np.searchsorted(N_EDGES, state.n, side="right"))
    sb = int(np.searchsorted(SHARE_EDGES, state.share, side="right")) if state.votes else -1
    cb = int(np.searchsorted(confidence_edges, state.confidence, side="right"))
    db = 0 if state.distinct <= 1 else 1 if state.distinct <= state.n / 2 else 2  # concentrated or scattered
    return (f"{nb},{sb},{cb},{db}", f"{nb},{sb},{cb}", f"{nb},{sb}", f"{nb}", "*")


@dataclass(frozen=True)
class VoteTable:
    """The vote's value table (:mod:`~edge_adapt.search.calibration.cells`): cells by
    :func:`cell_keys`, each shrunk toward its parent; a decision reads the finest cell its table's
    ``min_support`` calibration questions reached, the root "*" always."""

    confidence_edges: tuple[float, ...]
    table: CellTable

    def lookup(self, state: VoteState) -> tuple[str, ValueCell]:
        """The finest cell enough questions stand behind (the root always answers)."""
        found = self.table.lookup(cell_keys(state, self.confidence_edges))
        if found is None:
            raise ModelLoadError("vote model: its table has no root cell; rerun `edge-adapt calibrate`")
        return found


@dataclass(frozen=True)
class VoteModel:
    """The fitted vote model of one generator (see the module docstring)."""

    feature: str  # which confidence the table reads (FEATURES)
    table: VoteTable
    max_measured: int  # samples per calibration question: past it the table knows nothing
    price: float  # the default price, chosen on calibration questions (accuracy points per 1,000 tokens)
    provenance: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)  # what the fit chose and measured
    # where ``feature`` is the PRM's: the best token-confidence feature and its table, for a stack without the PRM
    generator_only: tuple[str, VoteTable] | None = None

    def __post_init__(self) -> None:
        if self.feature not in FEATURES:
            raise ModelLoadError(f"vote model: feature {self.feature!r} is not one of {', '.join(FEATURES)}")
        if "*" not in self.table.table.cells:
            raise ModelLoadError("vote model: its table has no root cell")
        if not (math.isfinite(self.price) and self.price >= 0):
            raise ModelLoadError(f"vote model: price must be a finite number >= 0, got {self.price}")

    @property
    def needs_prm(self) -> bool:
        return self.feature == "prm"

    @property
    def prm_token_weight(self) -> float:
        """A PRM token in generated-token equivalents as ``calibrate --prm`` measured it on the
        device (the sampling run's PRM time at its generation speed), else the default."""
        cost = self.report.get("prm_cost") or {}
        tokens, work = cost.get("prm_tokens_per_sample"), cost.get("generated_token_equivalents")
        return float(work) / float(tokens) if tokens and work is not None else PRM_TOKEN_WEIGHT

    def without_prm(self) -> VoteModel | None:
        """The model a stack without a PRM reads: this one, or its generator-only table (None: none)."""
        if not self.needs_prm:
            return self
        if self.generator_only is None:
            return None
        feature, table = self.generator_only
        return VoteModel(feature, table, self.max_measured, self.price, self.provenance, self.report)

    def to_dict(self) -> dict[str, Any]:
        data = {"version": VOTE_MODEL_VERSION, "feature": self.feature, "max_measured": self.max_measured, "price": self.price,
                "table": _table_dict(self.table), "provenance": self.provenance, "report": self.report}
        if self.generator_only is not None:
            data["generator_only"] = {"feature": self.generator_only[0], "table": _table_dict(self.generator_only[1])}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VoteModel:
        if not isinstance(data, dict) or data.get("version") != VOTE_MODEL_VERSION:
            raise ModelLoadError(f"vote model version {data.get('version') if isinstance(data, dict) else None!r}; "
                                 f"this edge_adapt reads version {VOTE_MODEL_VERSION}")
        try:
            alt = data.get("generator_only")
            return cls(str(data["feature"]), _table_of(data["table"]), int(data["max_measured"]), float(data["price"]),
                       dict(data.get("provenance") or {}), dict(data.get("report") or {}),
                       (str(alt["feature"]), _table_of(alt["table"])) if alt else None)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelLoadError(f"malformed vote model ({exc!r})") from exc

    def save(self, path: str | os.PathLike[str]) -> Path:
        target = Path(path)
        atomic_write_text(target, json.dumps(self.to_dict(), indent=1) + "\n")
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> VoteModel:
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError, ModelLoadError) as exc:
            raise ModelLoadError(f"{path}: {exc}; rebuild it with `edge-adapt calibrate`") from exc


def _table_dict(table: VoteTable) -> dict[str, Any]:
    return {"confidence_edges": list(table.confidence_edges), **table.table.to_dict()}


def _table_of(t: dict[str, Any]) -> VoteTable:
    edges = tuple(float(x) for x in t["confidence_edges"])
    if not all(math.isfinite(v) for v in edges):
        raise ValueError("a confidence edge is not finite")
    return VoteTable(edges, read_cells(t, "questions", "min_questions", MIN_QUESTIONS, "*"))


def vote_round(state: VoteState, model: VoteModel | None, *, price: float, work: float, n_max: int,
               stop_at: float = 0.98, lookahead: int = 2, threshold: float = 0.95) -> NextRound:
    """The vote's next move: with a model, the calibrated rule (:func:`~edge_adapt.search.stopping.value_move`)
    on the cell of the vote's state, weighing :data:`HORIZONS`; without one, Adaptive-Consistency."""
    if state.n == 0:
        return NextRound(FIRST)
    if model is None:
        return NextRound(consistency_move([state.votes, state.runner_up], state.n, n_max, threshold))
    key, cell = model.table.lookup(state)
    limit = past_limits(state.n, n_max, model.max_measured)
    if limit is not None:
        return NextRound(Move(0, limit, cell.right), key, cell.support)
    move = value_move(cell.right, cell.gains, HORIZONS, room=min(n_max, model.max_measured) - state.n, price=price,
                      work=work, stop_at=stop_at, lookahead=lookahead)
    return NextRound(move, key, cell.support)
