"""Summaries of a run, rebuilt from its records alone: tables (terminal, Markdown, CSV) and plots."""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_adapt.errors import SamplingConfigError
from edge_adapt.files import atomic_write_text
from edge_adapt.search import BeamSearch, BestOfN, IASBeamSearch, IASBestOfN, Strategy
from edge_adapt.search.spec import parse_spec


@dataclass(frozen=True)
class StrategySummary:
    strategy: str
    questions: int
    accuracy: float
    tokens_per_question: float
    tokens_per_correct: float
    joules_per_question: float | None
    joules_per_correct: float | None
    energy_source: str | None
    latency_p50_s: float
    latency_p95_s: float
    samples_per_question: float
    samples_chosen: float | None  # the N IAS chose (or the fixed N), mean
    prm_calls_per_question: float
    prm_tokens_per_question: float = 0.0
    prm_share: float | None = None  # of the search's wall time, inside the PRM (None: records predate it)
    gave_up: int = 0  # questions adaptive search stopped on as not worth more samples, picked answer unlikely
    by_level: dict[int, dict[str, float]] = field(default_factory=dict)  # accuracy and samples per level


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    pos = (len(ordered) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarise(records: list[dict[str, Any]]) -> list[StrategySummary]:
    """One summary per strategy, in the order strategies first appear in the records."""
    by_strategy: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_strategy[r["strategy"]].append(r)
    out = []
    for name, rs in by_strategy.items():
        correct = sum(r["correct"] for r in rs)
        tokens = [r["cost"]["generated_tokens"] for r in rs]
        joules = [r["cost"].get("joules") for r in rs]
        has_j = all(j is not None for j in joules)
        sources = {r["cost"].get("energy_source") for r in rs} - {None}
        estimated = any(r["cost"].get("energy_estimated") for r in rs)
        chosen = [r["samples_chosen"] for r in rs if r.get("samples_chosen") is not None]
        levels: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for r in rs:
            if r.get("level") is not None:
                levels[r["level"]].append(r)
        out.append(StrategySummary(
            strategy=name,
            questions=len(rs),
            accuracy=correct / len(rs),
            tokens_per_question=statistics.mean(tokens),
            tokens_per_correct=sum(tokens) / correct if correct else math.inf,
            joules_per_question=statistics.mean(joules) if has_j else None,  # type: ignore[arg-type]
            joules_per_correct=(sum(joules) / correct if correct else math.inf) if has_j else None,  # type: ignore[arg-type]
            energy_source=(", ".join(sorted(sources)) + (" (estimated)" if estimated else "")) if sources else None,
            latency_p50_s=_percentile([r["cost"]["wall_s"] for r in rs], 0.5),
            latency_p95_s=_percentile([r["cost"]["wall_s"] for r in rs], 0.95),
            samples_per_question=statistics.mean(r["cost"]["samples"] for r in rs),
            samples_chosen=statistics.mean(chosen) if chosen else None,
            prm_calls_per_question=statistics.mean(r["cost"]["prm_calls"] for r in rs),
            prm_tokens_per_question=statistics.mean(r["cost"]["prm_tokens"] for r in rs),
            prm_share=(sum(r["cost"]["prm_s"] for r in rs) / wall if (wall := sum(r["cost"]["wall_s"] for r in rs))
                       and all("prm_s" in r["cost"] for r in rs) else None),
            gave_up=sum(any(d["kind"] == "value_sampling" and d["detail"].get("gave_up") for d in r["decisions"]) for r in rs),
            by_level={lv: {"accuracy": sum(r["correct"] for r in v) / len(v),
                           "samples": statistics.mean(r["cost"]["samples"] for r in v), "questions": len(v)}
                      for lv, v in sorted(levels.items())},
        ))
    return out


COLUMNS = ("strategy", "questions", "accuracy", "tokens/q", "PRM tokens/q", "J/q", "J/correct",
           "latency p50 s", "latency p95 s", "PRM share", "samples/q", "N chosen", "PRM calls/q")


def table_rows(summaries: list[StrategySummary]) -> list[list[str]]:
    def num(x: float | None, fmt: str) -> str:
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else ("inf" if x == math.inf else format(x, fmt))

    return [[s.strategy, str(s.questions), f"{s.accuracy:.1%}", num(s.tokens_per_question, ".0f"),
             num(s.prm_tokens_per_question, ".0f"),
             num(s.joules_per_question, ".2f"), num(s.joules_per_correct, ".2f"), num(s.latency_p50_s, ".2f"),
             num(s.latency_p95_s, ".2f"), num(s.prm_share, ".0%"), num(s.samples_per_question,
                                                                       ".1f"), num(s.samples_chosen, ".1f"),
             num(s.prm_calls_per_question, ".1f")] for s in summaries]


def is_fixed(strategy: str) -> bool:
    """A fixed-budget strategy: best-of-N (any selector) or beam search, without early stopping."""
    return strategy.split(":")[0] in ("best_of_n", "majority", "weighted", "cisc", "deepconf", "beam") and "+es" not in strategy


def dominated_by(s: StrategySummary, others: list[StrategySummary], cost: str, points: float = 1.0) -> str | None:
    """A fixed strategy that costs no more than ``s`` (by ``cost``, an attribute) and is more than
    ``points`` accuracy points better; the best such one, or None."""
    mine = getattr(s, cost)
    if mine is None:
        return None
    better = [o for o in others if o is not s and is_fixed(o.strategy) and getattr(o, cost) is not None
              and getattr(o, cost) <= mine and 100 * (o.accuracy - s.accuracy) > points]
    return max(better, key=lambda o: o.accuracy).strategy if better else None


def pareto_lines(summaries: list[StrategySummary], points: float = 1.0) -> list[str]:
    """Every adaptive strategy placed against the whole fixed frontier of the run: the best fixed
    strategy, the share of its tokens and joules spent to come within ``points`` of it, and any
    fixed strategy that is both cheaper and more than ``points`` more accurate."""
    fixed = [s for s in summaries if is_fixed(s.strategy)]
    if not fixed:
        return []
    best = max(fixed, key=lambda s: (s.accuracy, -s.tokens_per_question))
    lines = [f"best fixed strategy: {best.strategy}, {best.accuracy:.1%} at {best.tokens_per_question:.0f} tokens"
             + (f" and {best.joules_per_question:.2f} J" if best.joules_per_question is not None else "") + " per question"]
    for s in summaries:
        if is_fixed(s.strategy):
            continue
        tokens = s.tokens_per_question / best.tokens_per_question if best.tokens_per_question else math.nan
        joules = (s.joules_per_question / best.joules_per_question
                  if s.joules_per_question is not None and best.joules_per_question else None)
        within = 100 * (best.accuracy - s.accuracy) <= points
        parts = [f"{s.strategy}: {s.accuracy:.1%} ({100 * (s.accuracy - best.accuracy):+.1f} points vs the best fixed, "
                 f"{'within' if within else 'not within'} {points:g}), {tokens:.0%} of its tokens"
                 + (f", {joules:.0%} of its joules" if joules is not None else "")]
        for cost, label in (("tokens_per_question", "tokens"), ("joules_per_question", "joules")):
            dom = dominated_by(s, summaries, cost, points)
            parts.append(f"dominated on {label} by {dom}" if dom else f"no fixed strategy is cheaper in {label} and {points:g}+ "
                                                                      f"points better")
        lines.append("; ".join(parts))
    return lines


def savings(summaries: list[StrategySummary]) -> list[str]:
    """Each IAS strategy against every fixed strategy of the same kind, with the same early
    stopping, largest budget first (IAS with N_max 32 against best-of-32, then best-of-16)."""
    parsed = {s.strategy: _parsed(s.strategy) for s in summaries}
    lines = []
    for s in summaries:
        ias = parsed[s.strategy]
        if not isinstance(ias, (IASBestOfN, IASBeamSearch)):
            continue
        fixed = [f for f in summaries if _fixed_of_kind(ias, parsed[f.strategy])]
        for ref in sorted(fixed, key=lambda f: -f.tokens_per_question):
            ratio = s.tokens_per_question / ref.tokens_per_question if ref.tokens_per_question else math.nan
            lines.append(f"{s.strategy} vs {ref.strategy}: {ratio:.0%} of the generated tokens, "
                         f"accuracy {100 * (s.accuracy - ref.accuracy):+.1f} points")
    return lines


def _parsed(spec: str) -> Strategy | None:
    try:
        return parse_spec(spec)
    except SamplingConfigError:  # a record of a strategy this version does not know
        return None


def _fixed_of_kind(ias: IASBestOfN | IASBeamSearch, other: Strategy | None) -> bool:
    """A fixed-budget strategy of the IAS strategy's kind: best-of-N with the same pick and early
    stopping (or none), or beam search."""
    if isinstance(ias, IASBestOfN):
        return (isinstance(other, BestOfN) and other.select == ias.select
                and (other.early_stop is None) == (ias.early_stop is None))
    return isinstance(other, BeamSearch)


def markdown(summaries: list[StrategySummary], title: str) -> str:
    rows = table_rows(summaries)
    out = io.StringIO()
    out.write(f"# {title}\n\n| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n")
    for row in rows:
        out.write("| " + " | ".join(row) + " |\n")
    sources = {s.energy_source for s in summaries if s.energy_source}
    if sources:
        out.write(f"\nEnergy source: {', '.join(sorted(sources))}.\n")
    lines = pareto_lines(summaries)
    if lines:
        out.write("\n## Against the fixed frontier\n\n" + "\n".join(f"- {line}" for line in lines) + "\n")
    lines = savings(summaries)
    if lines:
        out.write("\n## IAS against fixed budgets of its kind\n\n" + "\n".join(f"- {line}" for line in lines) + "\n")
    levels = sorted({lv for s in summaries for lv in s.by_level})
    if levels:
        out.write("\n## Accuracy / samples per difficulty level\n\n| strategy | " + " | "
                                                                                    "".join(f"L{lv}" for lv in levels) + " |\n|"
                  + "---|" * (len(levels) + 1) + "\n")
        for s in summaries:
            cells = [f"{s.by_level[lv]['accuracy']:.0%} / "
                     f"{s.by_level[lv]['samples']:.1f}" if lv in s.by_level else "-" for lv in levels]
            out.write(f"| {s.strategy} | " + " | ".join(cells) + " |\n")
    gave_up = [s for s in summaries if s.gave_up]
    if gave_up:
        out.write("\nGave up (adaptive search stopped as more samples were not worth their cost, its pick unlikely right): "
                  + "; ".join(f"{s.strategy} on {s.gave_up} of {s.questions} questions" for s in gave_up) + ".\n")
    return out.getvalue()


def write_summary(folder: Path, summaries: list[StrategySummary], title: str) -> list[Path]:
    """summary.md, summary.csv and summary.json (all written atomically)."""
    atomic_write_text(folder / "summary.md", markdown(summaries, title))
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(COLUMNS)
    writer.writerows(table_rows(summaries))
    atomic_write_text(folder / "summary.csv", buf.getvalue())
    import json

    atomic_write_text(folder / "summary.json", json.dumps([asdict(s) for s in summaries], indent=2, default=str) + "\n")
    return [folder / "summary.md", folder / "summary.csv", folder / "summary.json"]
