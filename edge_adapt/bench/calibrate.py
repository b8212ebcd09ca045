"""``edge-adapt calibrate``: a generator's vote model, fitted on the user's own questions, on the device.

Sampling is a benchmark run of one fixed vote (``majority:n=N``) over the questions, so it shares
the run folder's resume, fsynced records and ``--ray`` fan-out; every record carries each sample's
answer, grade, length and token confidence (and PRM median, with a PRM). The fit reads those
records alone: a slice of the questions (by a hash of their ids) is held out, the vote model is
fitted on the rest (:func:`edge_adapt.search.calibration.vote_fit.fit_vote_model`), and judged on the
held-out slice (:func:`~edge_adapt.search.calibration.vote_fit.judge`). The model is written beside the
generator with its provenance (generator sha256, prompt and sampling settings, questions).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edge_adapt.assembly import prompt_provenance
from edge_adapt.bench.records import RunFolder
from edge_adapt.bench.runner import BenchConfig, run_bench, stack_settings
from edge_adapt.cluster import ClusterSettings
from edge_adapt.errors import EdgeAdaptError
from edge_adapt.generator import SamplingParams
from edge_adapt.models import prm_fingerprint, sha256_of
from edge_adapt.search.calibration.vote_fit import fit_vote_model
from edge_adapt.search.calibration.vote_model import VoteModel
from edge_adapt.search.calibration.vote_replay import CalibrationSample, Judgement, VoteQuestion, judge
from edge_adapt.search.voting import group_indices
from edge_adapt.settings import ModelSettings, PromptSettings, RunSettings
from edge_adapt.tasks import Task, get_task
from edge_adapt.tasks.grading import answers_equal

log = logging.getLogger(__name__)


def sampling_config(models: ModelSettings, task: str, data: Path | None, *, samples: int = 16, limit: int | None = None,
                    question_seed: int = 0, temperature: float = 0.7, seed: int = 0,
                    prompt: PromptSettings = PromptSettings()) -> BenchConfig:
    """The benchmark run that draws the calibration samples: one fixed vote of ``samples`` (a
    PRM-weighted one with a PRM, so that every sample is scored too). The default task is sampled
    on its calibration split: its test split is where results are reported."""
    spec = f"{'weighted' if models.prm else 'majority'}:n={samples}"
    split = "calibration" if task in ("default", "arithmetic") else "test"
    run = RunSettings(models, prompt, SamplingParams(temperature=temperature), vote_model=False)
    return BenchConfig(run, task=task, data=str(data) if data else None, strategies=(spec,), limit=limit, seed=seed,
                       split=split, question_seed=question_seed)


def draw_samples(config: BenchConfig, work: Path, progress: Callable[[int, int, dict[str, Any] | None], None],
                 cluster: ClusterSettings | None = None, parallel: int | None = None) -> RunFolder:
    """Draw (or resume drawing) the samples into the run folder ``work``, ``parallel`` questions at once."""
    return run_bench(config, work, progress, cluster=cluster, parallel=parallel)


def questions_from_records(records: Sequence[dict[str, Any]]) -> list[VoteQuestion]:
    """Each record's samples as a calibration question: answers grouped as the task compares them,
    each group labelled by its position ("a0", "a1", ...)."""
    questions = []
    for record in records:
        rows = record.get("samples") or ()
        labels: dict[int, str] = {i: f"a{g}" for g,
                                  members in enumerate(group_indices([s["answer"] for s in rows], answers_equal))
                                  for i in members}
        samples = tuple(CalibrationSample(labels.get(i), bool(s["correct"]), int(s["tokens"]),
                                          {**{f: s["confidence"][f] for f in ("mean", "lowest", "tail")},
                                           "prm": s.get("prm_median")})
                        for i, s in enumerate(rows))
        questions.append(VoteQuestion(str(record["question_id"]), samples, record.get("level")))
    return questions


def is_held_out(question_id: str, fraction: float) -> bool:
    """A fixed slice of the questions by a hash of the id: the same on every rerun and resume."""
    digest = int(hashlib.sha256(question_id.encode("utf-8")).hexdigest()[:8], 16)
    return digest / 0xFFFFFFFF < fraction


@dataclass(frozen=True)
class Calibration:
    model: VoteModel
    judgement: Judgement
    path: Path
    fitted_on: int
    held_out: int


def fit_and_judge(folder: RunFolder, config: BenchConfig, out: Path, *, held_out: float = 0.2, seed: int = 0,
                  task: Task | None = None) -> Calibration:
    """Fit the vote model on the folder's records (less the held-out slice), judge it on that
    slice, and write it to ``out`` with its provenance."""
    # in question order, as a local run writes them: Ray workers append in arrival order, and the
    # fit's seeded replays must not depend on which worker finished first
    records = sorted(folder.records(), key=lambda r: r["index"])
    if not records:
        raise EdgeAdaptError(f"{folder.path}: no samples yet; rerun the command to draw them")
    questions = questions_from_records(records)
    held = [q for q in questions if is_held_out(q.id, held_out)]
    fit = [q for q in questions if not is_held_out(q.id, held_out)]
    if len(held) < 10:
        raise EdgeAdaptError(f"only {len(held)} of {len(questions)} questions fall in the held-out slice; give more "
                             "questions (a few hundred) or a larger --held-out fraction")
    task = task or get_task(config.task, config.data, config.run.prompt.prompt_template)
    settings = stack_settings(config, task)
    recorded = folder.config()
    provenance = {
        "generator": config.run.models.generator.name, "generator_sha256": sha256_of(config.run.models.generator),
        **prompt_provenance(settings, bool(recorded.get("chat_template"))),
        "prm": str(config.run.models.prm) if config.run.models.prm else None,
        "prm_sha256": prm_fingerprint(config.run.models.prm) if config.run.models.prm else None, "data": config.data,
        "data_sha256": recorded.get("data_sha256"), "split": config.split,
        "question_seed": config.question_seed, "samples_run": str(folder.path),
        "held_out_fraction": held_out, "held_out_questions": len(held),
    }
    cost = prm_cost(records)
    prm_work = cost["generated_token_equivalents"]
    model = fit_vote_model(fit, seed=seed, provenance=provenance, prm_work=prm_work)
    judgement = judge(model, held, prm_work=prm_work)
    # replace, not rebuild: the generator-only table a PRM-reading model keeps must survive
    report = {**model.report, "held_out": judgement_record(judgement, model.price)}
    if config.run.models.prm is not None:
        report["prm_cost"] = cost
    model = replace(model, report=report)
    path = model.save(out)
    return Calibration(model, judgement, path, len(fit), len(held))


def prm_cost(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """What scoring every sample with the PRM cost while sampling (what a stack that reads the PRM
    pays on top of generating): PRM tokens per sample, the PRM's share of the wall time, and that
    time in generated-token equivalents per sample (at the run's own generation speed)."""
    keys = ("prm_tokens", "samples", "prm_s", "wall_s", "generated_tokens")
    total = {k: sum(float(r["cost"].get(k) or 0) for r in records) for k in keys}
    samples, generating_s = max(total["samples"], 1.0), total["wall_s"] - total["prm_s"]
    equivalents = total["prm_s"] * total["generated_tokens"] / generating_s / samples if generating_s > 0 else 0.0
    return {"prm_tokens_per_sample": round(total["prm_tokens"] / samples, 1),
            "prm_share_of_wall": round(total["prm_s"] / total["wall_s"], 3) if total["wall_s"] > 0 else 0.0,
            "generated_token_equivalents": round(equivalents, 1)}


def judgement_record(j: Judgement, price: float) -> dict[str, Any]:
    chosen = j.adaptive[price]
    return {
        "fixed": {str(n): {"accuracy": round(r.accuracy, 2), "tokens": round(r.tokens, 1)} for n, r in j.fixed.items()},
        "adaptive": {f"{p:g}": {"accuracy": round(r.accuracy, 2), "tokens": round(r.tokens, 1), "samples": round(r.samples, 2)}
                     for p, r in j.adaptive.items()},
        "per_level_at_price": {lv: {"accuracy": round(a, 2), "tokens": round(t, 1), "samples": round(s, 2)}
                               for lv, (a, t, s) in chosen.per_level.items()},
        "reliability": [{"bin": b, "stops": n, "promised": round(p, 1), "measured": round(m, 1)} for b, n, p, m in j.reliability],
        "questions_behind_stops": list(j.questions_behind),
    }
