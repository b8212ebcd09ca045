"""What the samples drawn so far say about a question's answer, calibrated offline for one
generator and PRM and stored beside the PRM as ``selector_model.json``.

Calibrated (``selector_calibration`` fits it): per bin of the question's PRM median, the gain
curves of each picker, and a :class:`ValueTable` measured by replaying sequential search on
calibration questions: in a state like this one (samples drawn, the pick's last-step median,
agreement), how often was the pick right, and what did one or two more samples add. Adaptive
search decides with the table and picks with the best picker.

The fallback, for a PRM folder without the file (and the parameters fitted beside the table):
a small Bayesian model of one question. Each sample is right with an unknown probability ``p``
(a prior on a grid of ``p``: per question bin, or the question's own quantiles); every right
sample gives the same answer; wrong answers follow a Chinese restaurant process with
concentration ``alpha`` (two agree with probability 1/(1+alpha)); a sample's PRM score may be
evidence through likelihoods ``f_right(bin)`` / ``f_wrong(bin)``, counted once per answer group.
Its posterior (:mod:`edge_adapt.search.posterior`) says which answer group is right, and what
more samples would add. Pure functions of numbers throughout.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_adapt.errors import ModelLoadError
from edge_adapt.files import atomic_write_text
from edge_adapt.prm.scorer import level_masses
from edge_adapt.search.calibration.cells import CellTable, ValueCell, read_cells

log = logging.getLogger(__name__)

MODEL_FILE = "selector_model.json"
MODEL_VERSION = 1
GRID_SIZE = 40  # values of p: midpoints of 40 equal cells of [0, 1]
MIN_SUPPORT = 20  # replayed states a value cell needs before a decision reads it
FALLBACK_CONCENTRATION = 1.0  # two wrong answers agree half the time: a cautious guess


def p_grid(size: int = GRID_SIZE) -> np.ndarray:
    return (np.arange(size) + 0.5) / size


@dataclass(frozen=True)
class GainCurve:
    """Accuracy of one selector with n = 1..len(accuracy) samples, for questions in one score bin."""

    accuracy: tuple[float, ...]
    questions: int

    def at(self, n: int) -> float:
        """Accuracy with n samples; 0 at n = 0 and flat past the measured range (no evidence
        that more samples pay is taken as no gain)."""
        if n <= 0 or not self.accuracy:
            return 0.0
        return self.accuracy[min(n, len(self.accuracy)) - 1]


@dataclass(frozen=True)
class ScoreEvidence:
    """How a sample's last-step median tells right from wrong, for questions of one score bin:
    likelihoods per score bin (shared edges), and the bins' centers for interpolation."""

    right: tuple[float, ...] = (1.0,)  # P(score bin | right sample)
    wrong: tuple[float, ...] = (1.0,)  # P(score bin | wrong sample)


@dataclass(frozen=True)
class PickState:
    """What the search has, as the value table sees it: samples drawn, the picked candidate's
    last-step median, and whether another sample gave the same answer."""

    n: int
    median: float
    agree: bool


@dataclass(frozen=True)
class ValueTable:
    """What more samples are worth, measured offline (``calibration.selector.fit_values``): for
    questions of one score bin, by samples drawn (``n_edges``), the pick's last-step median
    (``score_edges``) and agreement (keys "n,score,agree", "*" for a dropped condition). A state
    the replays never reached often enough (the table's ``min_support`` replayed states) borrows
    from the same pick at any n, then regardless of agreement, then from every state."""

    n_edges: tuple[int, ...]  # inner edges of the sample-count buckets
    score_edges: tuple[float, ...]  # inner edges of the pick's median buckets
    table: CellTable  # its cells' gains: one and two more samples

    @staticmethod
    def keys(state: PickState, n_edges: Sequence[int], score_edges: Sequence[float]) -> tuple[str, ...]:
        """The state's cells from the finest to the coarsest."""
        nb = int(np.searchsorted(n_edges, state.n, side="right"))
        sb = int(np.searchsorted(score_edges, state.median, side="right"))
        ag = int(state.agree)
        return (f"{nb},{sb},{ag}", f"*,{sb},{ag}", f"*,{sb},*", "*,*,*")

    def lookup(self, state: PickState) -> ValueCell | None:
        found = self.table.lookup(self.keys(state, self.n_edges, self.score_edges))
        return found[1] if found is not None else None


@dataclass(frozen=True)
class QuestionModel:
    """The answer model as it applies to one question: its prior, and its score evidence."""

    prior: np.ndarray
    concentration: float
    score_edges: tuple[float, ...] = ()
    score_centers: tuple[float, ...] = ()
    score: ScoreEvidence = field(default_factory=ScoreEvidence)
    values: ValueTable | None = None  # measured worth of more samples; None: the model's own lookahead
    max_measured: int = 0  # the replays saw at most this many samples of a question
    selector: str = "posterior"  # how the answer is picked (what ``values`` were measured for)

    @property
    def score_bins(self) -> int:
        return len(self.score.right)

    def score_bin(self, median: float | None) -> int | None:
        """The bin of a sample's last-step median; None when there is no score (or no score model)."""
        if median is None or self.score_bins == 1:
            return None
        return int(np.searchsorted(self.score_edges, median, side="right"))

    def log_ratio(self, score_bin: int | None) -> float:
        """log f_right / f_wrong of a score bin (0 without a score)."""
        if score_bin is None:
            return 0.0
        return math.log(self.score.right[score_bin]) - math.log(self.score.wrong[score_bin])

    def evidence_of(self, median: float | None) -> float:
        """log f_right / f_wrong of an observed score: interpolated linearly between the bins'
        centers (a score near a bin's edge should not jump), the end bins' values beyond them."""
        if median is None or self.score_bins == 1:
            return 0.0
        ratios = [self.log_ratio(b) for b in range(self.score_bins)]
        if not self.score_centers:
            return ratios[self.score_bin(median)]  # type: ignore[index]
        return float(np.interp(median, self.score_centers, ratios))


@dataclass(frozen=True)
class AnswerModel:
    """The calibrated parameters (see the module docstring). ``calibrated`` is False for the
    fallback used with PRM folders that hold no ``selector_model.json``.

    The score evidence is kept per question bin: on hard questions the PRM tells a right sample
    from a wrong one less well than on easy ones."""

    question_edges: tuple[float, ...]  # inner edges of the question-score bins (its median)
    priors: tuple[tuple[float, ...], ...]  # per question bin: weights over p_grid()
    concentration: float  # alpha of the wrong answers' restaurant process
    score_edges: tuple[float, ...] = ()  # inner edges of the last-step median's bins
    score_centers: tuple[float, ...] = ()  # median last-step score inside each bin (interpolation knots)
    scores: tuple[ScoreEvidence, ...] = ()  # per question bin; empty: no score evidence
    values: tuple[ValueTable, ...] = ()  # per question bin; empty: decide by the model's lookahead
    max_measured: int = 0  # samples per calibration question: past it, values are unknown
    selector: str = "posterior"  # the pick the values were measured for: the best selector's gain curves
    gains: dict[str, tuple[GainCurve, ...]] = field(default_factory=dict)  # selector -> curve per question bin
    calibrated: bool = True
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bins = len(self.question_edges) + 1
        if len(self.priors) != bins:
            raise ModelLoadError(f"answer model: {len(self.priors)} priors for {bins} question bins")
        if any(len(p) != GRID_SIZE for p in self.priors):
            raise ModelLoadError(f"answer model: every prior needs {GRID_SIZE} weights")
        if self.scores:
            if len(self.scores) != bins:
                raise ModelLoadError("answer model: score evidence for every question bin, or none")
            if any(not len(e.right) == len(e.wrong) == len(self.score_edges) + 1 for e in self.scores):
                raise ModelLoadError("answer model: one right and one wrong likelihood per score bin")
            if any(min(*e.right, *e.wrong) <= 0 for e in self.scores):
                raise ModelLoadError("answer model: score likelihoods must be positive")
        if self.values and len(self.values) != bins:
            raise ModelLoadError("answer model: a value table for every question bin, or none")
        if self.score_centers and len(self.score_centers) != len(self.score_edges) + 1:
            raise ModelLoadError("answer model: one center per score bin")
        if not (self.concentration > 0 and math.isfinite(self.concentration)):
            raise ModelLoadError(f"answer model: the concentration must be positive, got {self.concentration}")
        for name, curves in self.gains.items():
            if len(curves) != bins:
                raise ModelLoadError(f"answer model: gain curves for {name!r} need one per question bin")

    # -- lookups ------------------------------------------------------------------------------------

    def question_bin(self, question_median: float) -> int:
        return int(np.searchsorted(self.question_edges, question_median, side="right"))

    def for_question(self, question_quantiles: Sequence[float], levels: Sequence[float]) -> QuestionModel:
        """The model for a question the PRM scored ``question_quantiles`` at ``levels``.

        Calibrated: the prior, score evidence and value table of the median's bin. Fallback: the
        quantiles themselves as a three-point prior (each quantile carries the mass nearest to it,
        0.3/0.4/0.3 for 10/50/90%) on the grid's nearest points, no score evidence, no value table:
        decisions by the model's own lookahead, and the pick by its posterior."""
        if not self.calibrated:
            weights = np.zeros(GRID_SIZE)
            for value, mass in zip(question_quantiles, level_masses(levels), strict=False):
                weights[min(GRID_SIZE - 1, int(min(max(value, 0.0), 1.0) * GRID_SIZE))] += mass
            return QuestionModel(weights / weights.sum(), self.concentration)
        b = self.question_bin(_at_level(question_quantiles, levels, 0.5))
        score = self.scores[b] if self.scores else ScoreEvidence()
        values = self.values[b] if self.values else None
        return QuestionModel(np.asarray(self.priors[b], dtype=float), self.concentration, self.score_edges, self.score_centers,
                             score, values, self.max_measured, self.selector if values is not None else "posterior")

    def gain_curve(self, selector: str, question_median: float) -> GainCurve | None:
        curves = self.gains.get(selector)
        return None if curves is None else curves[self.question_bin(question_median)]

    # -- files --------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["gains"] = {k: [asdict(c) for c in v] for k, v in self.gains.items()}
        data["values"] = [{"n_edges": list(v.n_edges), "score_edges": list(v.score_edges), **v.table.to_dict()}
                          for v in self.values]
        return {"version": MODEL_VERSION, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnswerModel:
        if data.get("version") != MODEL_VERSION:
            raise ModelLoadError(f"answer model version {data.get('version')!r}; this edge_adapt reads version {MODEL_VERSION}")
        try:
            return cls(
                question_edges=tuple(float(x) for x in data["question_edges"]),
                priors=tuple(tuple(float(x) for x in p) for p in data["priors"]),
                concentration=float(data["concentration"]),
                score_edges=tuple(float(x) for x in data["score_edges"]),
                score_centers=tuple(float(x) for x in data.get("score_centers", ())),
                scores=tuple(ScoreEvidence(tuple(float(x) for x in e["right"]), tuple(float(x) for x in e["wrong"]))
                             for e in data.get("scores", ())),
                values=tuple(ValueTable(tuple(int(x) for x in v["n_edges"]), tuple(float(x) for x in v["score_edges"]),
                                        read_cells(v, "count", "min_count", MIN_SUPPORT, None))
                             for v in data.get("values", ())),
                max_measured=int(data.get("max_measured", 0)),
                selector=str(data.get("selector", "posterior")),
                gains={str(k): tuple(GainCurve(tuple(float(a) for a in c["accuracy"]), int(c["questions"])) for c in v)
                       for k, v in (data.get("gains") or {}).items()},
                calibrated=bool(data.get("calibrated", True)),
                provenance=dict(data.get("provenance") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"malformed answer model ({exc})") from exc

    def save(self, prm_folder: str | os.PathLike[str]) -> Path:
        path = Path(prm_folder) / MODEL_FILE
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def fallback(cls) -> AnswerModel:
        """For a PRM folder without ``selector_model.json``: the prior from the question's own
        quantiles, a cautious concentration, and no score evidence (a vote weighed by the prior)."""
        flat = tuple([1.0 / GRID_SIZE] * GRID_SIZE)
        return cls((), (flat,), FALLBACK_CONCENTRATION, calibrated=False,
                   provenance={"note": "fallback: no selector_model.json beside the PRM (`edge-adapt export selector`)"})

    @classmethod
    def for_prm(cls, prm_folder: str | os.PathLike[str]) -> AnswerModel:
        """The model stored beside a PRM, or the documented fallback when there is none."""
        path = Path(prm_folder) / MODEL_FILE
        if not path.is_file():
            log.warning("%s has no %s: adaptive search uses the uncalibrated fallback; run `edge-adapt export selector %s "
                        "-c CALIBRATION.jsonl` to calibrate it", prm_folder, MODEL_FILE, prm_folder)
            return cls.fallback()
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, ModelLoadError) as exc:
            raise ModelLoadError(f"{path}: {exc}; rebuild it with `edge-adapt export selector`.") from exc


def _at_level(values: Sequence[float], levels: Sequence[float], level: float) -> float:
    return values[list(levels).index(level)] if level in levels else values[len(values) // 2]
