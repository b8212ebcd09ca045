"""Decisions: what search and the budget guard chose, and why, as recorded in every result.

Each kind is a frozen dataclass; ``kind`` and ``detail`` give the record's JSON form (field
names as written in bench records; ``key`` metadata renames a field, ``omit_none`` drops it when
unset). Below both search and the policy, so neither imports the other for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

_FROM = {"key": "from"}
_TO = {"key": "to"}
_OPTIONAL = {"omit_none": True}


@dataclass(frozen=True)
class Decision:
    """A choice the search (or the budget guard) made, and why."""

    kind: ClassVar[str] = "decision"

    @property
    def detail(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.metadata.get("omit_none"):
                continue
            out[f.metadata.get("key", f.name)] = list(value) if isinstance(value, tuple) else value
        return out

    def as_record(self) -> dict[str, Any]:
        return {"kind": self.kind, "detail": self.detail}


# -- how many samples -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleSize(Decision):
    """How many samples a strategy set out to draw (the first expansion, for beam search)."""

    kind: ClassVar[str] = "n_samples"

    @property
    def samples(self) -> int:
        raise NotImplementedError


@dataclass(frozen=True)
class FixedSamples(SampleSize):
    n: int
    rule: str = "fixed"

    @property
    def samples(self) -> int:
        return self.n


@dataclass(frozen=True)
class IASSamples(SampleSize):
    """IAS best-of-N: N(p_low) samples for a target confidence, capped at n_max."""

    p_low: float
    quantile: float
    confidence: float
    rule: str
    needed: int
    n: int
    capped_at_n_max: bool

    @property
    def samples(self) -> int:
        return self.n


@dataclass(frozen=True)
class IASFirstExpansion(SampleSize):
    """IAS beam search: the first expansion's width from the question's score."""

    p_low: float
    first_expansion: int
    budget: int

    @property
    def samples(self) -> int:
        return self.first_expansion


@dataclass(frozen=True)
class LoweredConfidence(Decision):
    """A budget too tight for the target confidence: IAS aims lower instead of failing."""

    kind: ClassVar[str] = "lowered_confidence"
    step: int | None = field(default=None, metadata=_OPTIONAL)
    from_confidence: float = field(default=0.0, metadata=_FROM)
    to_confidence: float = field(default=0.0, metadata=_TO)
    n: int | None = field(default=None, metadata=_OPTIONAL)
    limit: str | None = None


@dataclass(frozen=True)
class EarlyStopDecision(Decision):
    """Adaptive-Consistency stopped sampling: the leader is the majority with this confidence."""

    kind: ClassVar[str] = "early_stop"
    after: int
    of: int
    votes: tuple[int, ...]
    confidence: float
    threshold: float


@dataclass(frozen=True)
class ValueSamplingSummary(Decision):
    """Adaptive search's rounds, why it stopped, and what it believed of its answer then."""

    kind: ClassVar[str] = "value_sampling"
    question_q: tuple[float, ...]
    calibrated_model: bool
    picked_by: str
    price: float
    samples: int
    rounds: tuple[int, ...]
    stop: str
    p_answer: float
    gave_up: bool
    gains_at_stop: tuple[float, ...]
    work_per_sample: float
    groups: tuple[int, ...]


@dataclass(frozen=True)
class AdaptiveVoteSummary(Decision):
    """An adaptive vote's rounds, why it stopped, and what it believed of its leader then: with the
    generator's calibrated vote model (the cell read and how many calibration questions stand behind
    it), or Adaptive-Consistency's stop where there is none."""

    kind: ClassVar[str] = "adaptive_vote"
    rule: str  # "calibrated:<feature>" or "adaptive-consistency"
    price: float
    samples: int
    rounds: tuple[int, ...]
    stop: str
    p_answer: float
    cell: str
    questions_behind: int
    votes: tuple[int, ...]  # group sizes, the leader first
    confidence_floor: float | None = field(default=None, metadata=_OPTIONAL)  # DeepConf's termination, where asked
    cut: int | None = field(default=None, metadata=_OPTIONAL)  # samples it cut off


@dataclass(frozen=True)
class ConfidenceCut(Decision):
    """DeepConf's online termination: the confidence floor set from the warm-up samples' lowest
    windows, and how many later samples it cut off."""

    kind: ClassVar[str] = "confidence_cut"
    warmup: int
    keep: float
    floor: float
    drawn: int
    cut: int


# -- beam search ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BeamKept(Decision):
    """Fixed beam search: the prefixes kept at a step, each expanded by ``width``."""

    kind: ClassVar[str] = "beam_allocation"
    step: int
    kept: int
    width: int


@dataclass(frozen=True)
class IASBeamAllocation(Decision):
    """IAS beam search: K beams kept at a step, each expanded by M, and their scores."""

    kind: ClassVar[str] = "beam_allocation"
    step: int
    K: int
    M: int
    p_kept: tuple[float, ...]


@dataclass(frozen=True)
class GaveUp(Decision):
    """No further samples: the first ``after`` (at least ``give_up_after``) hold no extractable
    answer, so there is nothing to compare and more would earn nothing."""

    kind: ClassVar[str] = "gave_up"
    after: int
    give_up_after: int


@dataclass(frozen=True)
class Selected(Decision):
    """Which candidate became the answer, and by what rule (None: no candidate)."""

    kind: ClassVar[str] = "select"
    by: str
    chosen: int | None


# -- the budget guard -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BudgetCap(Decision):
    """Fewer units granted than requested, and the binding limit."""

    kind: ClassVar[str] = "budget_cap"
    limit: str
    unit: str
    requested: int
    granted: int
    floor: str | None = field(default=None, metadata=_OPTIONAL)


@dataclass(frozen=True)
class PowerPaced(Decision):
    """The guard waited for the average power to fall under the cap (or gave up waiting)."""

    kind: ClassVar[str] = "power_cap"
    cap_w: float
    waited_s: float
    window_w: float | None
    gave_up: str | None = field(default=None, metadata=_OPTIONAL)
