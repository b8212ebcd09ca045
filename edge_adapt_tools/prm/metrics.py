"""How well calibrated a quantile PRM is, on held-out questions.

- Brier score of the median: mean squared difference between q50 and the Monte-Carlo rate.
- Expected calibration error of the median: bins of predicted q50, |mean q50 - mean rate|,
  weighted by bin size.
- Coverage: the fraction of targets below each quantile; a calibrated q10 has ~10% below it.
  Monte-Carlo targets are discrete (multiples of 1/n) and pile up at exactly 0 and 1, where a
  sigmoid output can never sit, so a literal "strictly below" count (``below``) puts every 0
  target under every quantile however well calibrated the model is. ``coverage`` is the
  randomized-PIT version for discrete outcomes: a target within half a Monte-Carlo step
  (1/(2n)) of the quantile is a tie and counts tau, its expected contribution under random
  tie-breaking; otherwise strictly below counts 1. ``coverage`` is the calibration check.
- Pinball loss: what training minimises, averaged over the quantile levels.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_adapt.assembly import open_prm
from edge_adapt_tools.prm.calibration_data import CalibrationRecord


@dataclass(frozen=True)
class CalibrationMetrics:
    n: int
    brier_median: float
    ece_median: float
    coverage: dict[str, float]  # "q10" -> fraction of targets below q10, ties at MC resolution counting tau
    below: dict[str, float]  # "q10" -> fraction of targets strictly below q10 (literal, see module doc)
    pinball: float
    warnings: tuple[str, ...] = ()  # why these numbers say little (too few targets, all alike)

    def to_dict(self) -> dict:
        return {"n": self.n, "brier_median": self.brier_median, "ece_median": self.ece_median,
                "coverage": self.coverage, "below": self.below, "pinball": self.pinball, "warnings": list(self.warnings)}


def level_name(level: float) -> str:
    return f"q{round(level * 100):02d}"


def pinball(preds: np.ndarray, targets: np.ndarray, levels: Sequence[float]) -> float:
    diff = targets[:, None] - preds
    tau = np.asarray(levels)[None, :]
    return float(np.maximum(tau * diff, (tau - 1) * diff).mean())


def _median(preds: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    return preds[:, list(levels).index(0.5)] if 0.5 in levels else preds[:, preds.shape[1] // 2]


def calibration_metrics(
    preds: np.ndarray,
    targets: np.ndarray,
    levels: Sequence[float],
    n_rollouts: np.ndarray | None = None,
    n_bins: int = 10,
) -> CalibrationMetrics:
    """``preds`` [n, L] quantile predictions (probabilities), ``targets`` [n] MC rates, and the
    number of rollouts behind each target (for the tie width of ``coverage``; None: no ties)."""
    preds = np.sort(np.asarray(preds, dtype=np.float64), axis=1)
    targets = np.asarray(targets, dtype=np.float64)
    half_step = np.zeros_like(targets) if n_rollouts is None else 0.5 / np.asarray(n_rollouts, dtype=np.float64)
    median = _median(preds, levels)
    bins = np.minimum((median * n_bins).astype(int), n_bins - 1)
    ece = sum(
        (bins == b).mean() * abs(median[bins == b].mean() - targets[bins == b].mean())
        for b in range(n_bins)
        if (bins == b).any()
    )
    coverage, below = {}, {}
    for i, tau in enumerate(levels):
        q = preds[:, i]
        tie = np.abs(targets - q) <= half_step
        coverage[level_name(tau)] = float(np.where(tie, tau, targets < q).mean())
        below[level_name(tau)] = float((targets < q).mean())
    return CalibrationMetrics(
        n=len(targets),
        brier_median=float(((median - targets) ** 2).mean()),
        ece_median=float(ece),
        coverage=coverage,
        below=below,
        pinball=pinball(preds, targets, levels),
        warnings=degenerate(targets),
    )


MIN_TARGETS = 50  # fewer held-out targets than this: the metrics are noise


def degenerate(targets: np.ndarray) -> tuple[str, ...]:
    """Why a calibration report on these targets would mislead: too few of them, or all alike
    (all 0 or all 1: any score near that value looks perfect, and coverage is exactly nominal)."""
    out = []
    if len(targets) < MIN_TARGETS:
        out.append(f"only {len(targets)} held-out targets (fewer than {MIN_TARGETS}): these metrics are mostly noise; "
                   "roll out more questions or hold out more of them (--holdout)")
    if len(targets) and (np.all(targets == 0) or np.all(targets == 1)):
        out.append(f"every held-out target is {int(targets[0])}: the generator {'never' if targets[0] == 0 else 'always'} "
                   "succeeds on these questions, so no score can be judged on them (a constant looks perfect); "
                   "calibrate on questions it sometimes gets right and sometimes wrong")
    return tuple(out)


def reliability_diagram(
    curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], levels: Sequence[float], path: str | Path, n_bins: int = 10
) -> Path:
    """Save a PNG: predicted median vs observed rate per bin, and coverage vs nominal level, one
    curve per entry of ``curves`` (e.g. {"before": (preds, targets, n_rollouts), "after": ...})."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.5))
    ax1.plot([0, 1], [0, 1], "k--", lw=1, label="perfect")
    width = 0.8 / max(1, len(curves))
    for k, (name, (preds, targets, n_rollouts)) in enumerate(curves.items()):
        preds = np.sort(preds, axis=1)
        median = _median(preds, levels)
        bins = np.minimum((median * n_bins).astype(int), n_bins - 1)
        xs, ys, ns = [], [], []
        for b in range(n_bins):
            sel = bins == b
            if sel.any():
                xs.append(median[sel].mean())
                ys.append(targets[sel].mean())
                ns.append(int(sel.sum()))
        m = calibration_metrics(preds, targets, levels, n_rollouts, n_bins)
        ax1.plot(xs, ys, "o-", label=f"{name} (Brier {m.brier_median:.3f}, ECE {m.ece_median:.3f})")
        coverage = [m.coverage[level_name(q)] for q in levels]
        ax2.bar(np.arange(len(levels)) + k * width, coverage, width=width, label=name)
    ax1.set(xlabel="predicted success probability (median)", ylabel="Monte-Carlo success rate",
            title="Reliability of the median", xlim=(0, 1), ylim=(0, 1))
    ax1.legend(fontsize=8)
    ax2.plot(np.arange(len(levels)) + width * (len(curves) - 1) / 2, levels, "k_", markersize=30, mew=2, label="nominal")
    ax2.set_xticks(np.arange(len(levels)) + width * (len(curves) - 1) / 2, [level_name(q) for q in levels])
    ax2.set(ylabel="fraction of targets below (ties at MC resolution count tau)", title="Quantile coverage", ylim=(0, 1.15))
    ax2.legend(fontsize=8, loc="upper left", ncol=len(curves) + 1)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def runtime_metrics(bundle_dir: str | Path, variant: str, records: Sequence[CalibrationRecord]) -> CalibrationMetrics:
    """Held-out calibration metrics measured through the device scorer (format, tokenizer, ONNX),
    scoring each question's prefixes in one batched call as search does."""
    prm = open_prm(bundle_dir, providers=["CPUExecutionProvider"], variant=variant)
    by_question: dict[str, list[CalibrationRecord]] = defaultdict(list)
    for r in records:
        by_question[r.question_id].append(r)
    preds, targets, counts = [], [], []
    for recs in by_question.values():
        scores = prm.score(recs[0].question, [list(r.prefix) for r in recs])
        preds += [s.final.values for s in scores]
        targets += [r.success_rate for r in recs]
        counts += [r.n_rollouts for r in recs]
    return calibration_metrics(np.asarray(preds), np.asarray(targets), prm.levels, np.asarray(counts))
