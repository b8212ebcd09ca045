"""When an adaptive search draws more samples, and when it stops: the one rule every adaptive
strategy decides by. Change how a calibrated stop decides here and nowhere else.

**The price unit.** A price is accuracy points (0-100) that further samples must earn per 1,000
*generated-token equivalents* of work: a sample's generated tokens, plus the PRM tokens read to
score it at :data:`PRM_TOKEN_WEIGHT` each (reading a token is a fraction of what writing one costs),
or at the weight ``edge-adapt calibrate --prm`` measured on the device (the PRM's seconds in
generating seconds). A strategy that reads no PRM pays generated tokens only. So ``price=8`` means
the same in ``adaptive`` (value-aware sampling on PRM scores) and ``adaptive_vote`` (on the
generator's own evidence).

**The calibrated rule** (:func:`value_move`). The search is in some state (samples drawn, how they
agree, how sure they look); a value cell measured offline in such states says how likely the
answer picked now is right, and what ``h`` more samples added to that on average. Stop when it is
at least ``stop_at`` likely right; otherwise take the horizon ``h`` that maximises
``gain(h) - price * h * work``, draw ``min(h, lookahead)`` now and decide again; stop when no
horizon pays. :func:`past_limits` stops a search at its sample cap or past what calibration saw.

**Adaptive-Consistency** (arXiv 2305.11860, :func:`consistency_move`), the rule without a
calibration: one more sample until a Beta posterior puts the leader ahead of the runner-up with
``threshold``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edge_adapt.search.voting import majority_confidence

PRM_TOKEN_WEIGHT = 0.1  # a PRM token in generated tokens where the device's own ratio is not measured


@dataclass(frozen=True)
class Move:
    """The next move: draw ``draw`` samples (0: stop), why, P(the answer picked now is right), and
    the gains of the horizons the rule weighed."""

    draw: int
    reason: str  # "first", "gain", "confident", "not_worth", "n_max", "past_calibration", "settled", "unsettled"
    right: float
    gains: tuple[float, ...] = ()


FIRST = Move(1, "first", 0.0)  # every adaptive search draws its first sample


@dataclass(frozen=True)
class NextRound:
    """A move and what it rested on: the value cell read (its key, and the calibration questions
    behind it) and the work per sample it was priced at (generated-token equivalents)."""

    move: Move
    cell: str = ""
    questions: int = 0
    work: float = 0.0

    @property
    def draw(self) -> int:
        return self.move.draw

    @property
    def reason(self) -> str:
        return self.move.reason

    @property
    def right(self) -> float:
        return self.move.right

    @property
    def gains(self) -> tuple[float, ...]:
        return self.move.gains


def work_per_sample(generated_tokens: float, prm_tokens: float, samples: int, prm_token_weight: float) -> float:
    """Generated-token equivalents one sample has cost so far (0 before the first)."""
    return (generated_tokens + prm_token_weight * prm_tokens) / samples if samples else 0.0


def past_limits(n: int, n_max: int, measured: int | None) -> str | None:
    """Why a search with ``n`` samples stops whatever they say: its cap, or past the samples per
    question calibration measured (``measured``; None: no calibration), where gains are unknown."""
    if n >= n_max:
        return "n_max"
    if measured is not None and n >= measured:
        return "past_calibration"
    return None


def value_move(right: float, gains: Sequence[float], horizons: Sequence[int], *, room: int, price: float,
               work: float, stop_at: float, lookahead: int) -> Move:
    """The calibrated rule (see the module's docstring): ``gains[i]`` is what ``horizons[i]`` more
    samples add to ``right``; horizons past ``room`` (samples the search may still draw) are not
    weighed; ``work`` is one sample's cost in generated-token equivalents."""
    if right >= stop_at:
        return Move(0, "confident", right)
    gains = tuple(gains)
    per_token = price / 100.0 / 1000.0
    best, best_net = 0, 0.0
    for h, gain in zip(horizons, gains, strict=False):
        if h > room:
            break
        net = gain - per_token * h * work
        if net > best_net + 1e-12:
            best, best_net = h, net
    return Move(min(best, lookahead), "gain" if best else "not_worth", right, gains)


def consistency_move(votes: Sequence[int], n: int, n_max: int, threshold: float) -> Move:
    """Adaptive-Consistency after ``n`` samples whose answer groups have ``votes``: stop once the
    leader is ahead of the runner-up with ``threshold`` (or at ``n_max``), else one more."""
    confidence = majority_confidence(votes) if any(votes) else 0.0
    if n >= n_max:
        return Move(0, "n_max", confidence)
    return Move(0, "settled", confidence) if confidence >= threshold else Move(1, "unsettled", confidence)
