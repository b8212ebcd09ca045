"""A run's plots: accuracy against tokens and joules (the fixed curves and the adaptive points),
accuracy and samples per level, and the PRM's reliability. PNG files beside the summary."""

from __future__ import annotations

import logging
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from edge_adapt.bench.summary import StrategySummary, is_fixed
from edge_adapt.files import atomic_output

log = logging.getLogger(__name__)


def reliability(records: list[dict[str, Any]], bins: int = 10) -> list[tuple[float, float, int]]:
    """(mean predicted median, observed success rate, questions) per bin of the PRM's question-level
    median; observed = the fraction of correct candidates per question (one record per question)."""
    seen: dict[str, tuple[float, float]] = {}
    for r in records:
        if r["question_id"] in seen or not r.get("candidates") or r.get("question_quantiles") is None:
            continue  # no PRM, no reliability
        seen[r["question_id"]] = (r["question_quantiles"][1], r["candidates_correct"] / r["candidates"])
    grouped: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for pred, obs in seen.values():
        grouped[min(bins - 1, int(pred * bins))].append((pred, obs))
    return [(statistics.mean(p for p, _ in v), statistics.mean(o for _, o in v), len(v)) for _, v in sorted(grouped.items())]


def write_plots(folder: Path, records: list[dict[str, Any]], summaries: list[StrategySummary]) -> list[Path]:
    """PNG plots; an empty list (and the reason in the log) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("plots skipped: matplotlib is not installed (pip install 'edge-adapt[plots]')")
        return []
    written = []
    for name, fig in (*_frontiers(plt, summaries), _per_level(plt, summaries), _reliability(plt, records)):
        if fig is None:
            continue
        with atomic_output(folder / name) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(folder / name)
    return written


def _frontiers(plt: Any, summaries: list[StrategySummary]) -> list[tuple[str, Any]]:
    """Accuracy against generated tokens and against joules, log x: fixed strategies as curves,
    adaptive search as its price curve, the rest as points."""
    out = []
    for xkey, xlabel, name in (("tokens_per_question", "generated tokens per question", "accuracy_vs_tokens.png"),
                               ("joules_per_question", "joules per question", "accuracy_vs_joules.png")):
        points = [(getattr(s, xkey), s.accuracy, s.strategy) for s in summaries if getattr(s, xkey) is not None]
        if not points:
            continue
        fig, ax = plt.subplots(figsize=(8, 5))
        families: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
        for x, y, label in points:
            kind = label.split(":")[0]
            families[kind if is_fixed(label) or kind == "adaptive" else "other"].append((x, y, label))
        for family, pts in families.items():
            pts.sort()
            if family == "other":
                ax.scatter([x for x, _, _ in pts], [100 * y for _, y, _ in pts], s=40, marker="o", label="IAS and others")
            else:
                ax.plot([x for x, _, _ in pts], [100 * y for _, y, _ in pts], marker="D" if family == "adaptive" else "s",
                        lw=2 if family == "adaptive" else 1,
                        label=f"{family} (fixed)" if family != "adaptive" else "adaptive (price)")
            for x, y, label in pts:
                short = label.split(":", 1)[1] if family != "other" else label
                ax.annotate(short, (x, 100 * y), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.legend(fontsize=7)
        ax.set_xscale("log")
        ax.set(xlabel=xlabel, ylabel="accuracy (%)")
        ax.grid(alpha=0.3)
        out.append((name, fig))
    return out


def _per_level(plt: Any, summaries: list[StrategySummary]) -> tuple[str, Any]:
    levels = sorted({lv for s in summaries for lv in s.by_level})
    if not levels:
        return "per_level.png", None
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for s in summaries:
        a1.plot(levels, [100 * s.by_level.get(lv, {}).get("accuracy", math.nan) for lv in levels], marker="o", label=s.strategy)
        a2.plot(levels, [s.by_level.get(lv, {}).get("samples", math.nan) for lv in levels], marker="o", label=s.strategy)
    a1.set(xlabel="difficulty level", ylabel="accuracy (%)")
    a2.set(xlabel="difficulty level", ylabel="samples per question")
    a2.legend(fontsize=6)
    return "per_level.png", fig


def _reliability(plt: Any, records: list[dict[str, Any]]) -> tuple[str, Any]:
    rel = reliability(records)
    if not rel:
        return "reliability.png", None
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
    ax.scatter([p for p, _, _ in rel], [o for _, o, _ in rel], s=[10 + 3 * n for _, _, n in rel])
    ax.set(xlabel="PRM median P(success), question", ylabel="observed fraction of correct samples", xlim=(0, 1), ylim=(0, 1))
    return "reliability.png", fig
