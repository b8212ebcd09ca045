"""How sure the generator was of a sample, from the log-probabilities it already recorded.

DeepConf (arXiv 2508.15260) reads a trace's confidence from sliding windows of token confidence:
the lowest window ("group confidence": a trace that lost its way somewhere) and the last one
("tail": how it ended). Its token confidence is the mean negative log-probability of the top-k
candidates; here it is the sampled token's log-probability under the model (temperature 1),
which the runtime records at no extra cost (a top-k per token would add a partial sort of the
vocabulary to every draw). Higher is more confident throughout (log-probabilities, <= 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge_adapt.generator.steps import CONFIDENCE_WINDOW as WINDOW


@dataclass(frozen=True)
class TraceConfidence:
    """A finished sample's token confidence: its mean, its lowest window, its last window."""

    mean: float
    lowest: float  # the lowest mean over any WINDOW consecutive tokens (the whole trace when shorter)
    tail: float  # the mean over the last WINDOW tokens

    def as_record(self) -> dict[str, float]:
        return {"mean": round(self.mean, 4), "lowest": round(self.lowest, 4), "tail": round(self.tail, 4)}


def trace_confidence(logprobs: Sequence[float], window: int = WINDOW) -> TraceConfidence:
    """The confidence of a trace with these per-token log-probabilities (all 0 for no tokens)."""
    if not logprobs:
        return TraceConfidence(0.0, 0.0, 0.0)
    values = np.asarray(logprobs, dtype=float)
    w = min(window, len(values))
    sums = np.convolve(values, np.ones(w), mode="valid")
    return TraceConfidence(float(values.mean()), float(sums.min() / w), float(values[-w:].mean()))


def confidence_floor(lowest: Sequence[float], keep: float) -> float:
    """DeepConf's online threshold: the ``1 - keep`` quantile of warm-up samples' lowest-window
    confidences, so that about the most confident ``keep`` of such samples would run to their end."""
    if not lowest:
        raise ValueError("a confidence floor needs at least one warm-up sample")
    return float(np.quantile(np.asarray(lowest, dtype=float), 1.0 - keep))
