"""Calibrate adaptive search's answer model for an exported PRM from its calibration file.

The calibration file's complete sampled solutions (graded, with how many samples produced each)
are scored by the exported PRM itself, on the device runtime, as search will score them; the fit
(:mod:`edge_adapt.search.calibration.selector`) is written beside the PRM as
``selector_model.json``. Only questions the PRM's head never trained on are used when the PRM
records its split (held-out and likelihood-fit questions): on its own training questions the
PRM's scores are over-confident, and a model fitted on them would stop searching too early.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from edge_adapt.assembly import StackSettings, open_prm, open_stack
from edge_adapt.errors import EdgeAdaptError
from edge_adapt.generator import SamplingParams
from edge_adapt.prm import QuantilePRM
from edge_adapt.search import BestOfN
from edge_adapt.search.calibration.answer_model import AnswerModel
from edge_adapt.search.calibration.selector import CalibrationQuestion, ScoredSolution, fit_answer_model
from edge_adapt.settings import ModelSettings, RunSettings
from edge_adapt.tasks import Problem, Task
from edge_adapt.tasks.arithmetic import ArithmeticTask
from edge_adapt.tasks.grading import answers_equal, extract_answer
from edge_adapt_tools.prm.calibration_data import CalibrationRecord, read_records
from edge_adapt_tools.prm.data import split_questions

log = logging.getLogger(__name__)

# bumped when the fit changes, so the recipe refits a shipped PRM's answer model
SELECTOR_FORM = 1
DEFAULT_LIKELIHOOD_FIT_SHARE = 0.2  # PRMBuildSettings' default, for bundles that predate recording it


def untrained_questions(records: list[CalibrationRecord], prm: QuantilePRM) -> tuple[set[str], str]:
    """Question ids the PRM's head never trained on, and how they were found."""
    split = prm.bundle.metrics.get("split") or {}
    if "holdout" not in split:
        return {r.question_id for r in records}, "all questions (the PRM records no split)"
    train, held = split_questions(records, float(split["holdout"]), int(split.get("seed", 0)))
    counts = prm.bundle.metrics.get("counts") or {}
    n_fit = int(counts.get("likelihood_fit_questions", 0))
    if n_fit:
        share = float(split.get("likelihood_fit_share", DEFAULT_LIKELIHOOD_FIT_SHARE))
        _, fit = split_questions([r for r in records if r.question_id in train], share, int(split.get("seed", 0)),
                                 salt="likelihood-fit:")
        if len(fit) == n_fit:
            return held | fit, f"{len(held)} held-out and {len(fit)} likelihood-fit questions"
        log.warning("the likelihood-fit split does not reproduce (%d questions, the PRM says %d); using held-out only",
                    len(fit), n_fit)
    return held, f"{len(held)} held-out questions"


def _task_of(records: list[CalibrationRecord]) -> Task | None:
    """The task the records name, where it needs no data file (the default task); else None."""
    name = (records[0].generator.get("task") if records else None) or "arithmetic"
    return ArithmeticTask() if name in ("arithmetic", "default") else None


def fresh_problems(task: Task, exclude: set[str], per_level: int) -> list[Problem]:
    """Problems the calibration file does not hold: ``per_level`` more of each level of the default
    task's calibration split, or of a file task's problems (``per_level`` in all)."""
    if isinstance(task, ArithmeticTask):
        want = per_level
        while True:  # the split's first problems of each level may be in the file: ask for more until enough are new
            pool = [p for p in task.problems("calibration", want) if p.question not in exclude]
            by_level: dict[int | None, list[Problem]] = defaultdict(list)
            for p in pool:
                by_level[p.level].append(p)
            if all(len(v) >= per_level for v in by_level.values()) and len(by_level) == len(task.levels):
                return [p for v in by_level.values() for p in v[:per_level]]
            want += per_level
    return [p for p in task.problems() if p.question not in exclude][:per_level]  # type: ignore[attr-defined]


def sample_questions(generator: str | os.PathLike[str], prm: QuantilePRM, task: Task, problems: list[Problem], n: int, *,
                     seed: int = 0, temperature: float = 0.7, threads: int | None = None,
                     progress: Callable[[int, int], None] = lambda done, total: None) -> list[CalibrationQuestion]:
    """Sample ``n`` solutions of each problem with the generator, as search samples them, graded and
    scored by the PRM: calibration data on questions the PRM never saw."""
    out = []
    run = RunSettings(ModelSettings(Path(generator), prm.bundle.path, threads), sampling=SamplingParams(temperature=temperature))
    settings = StackSettings(run, task, (BestOfN(n=n),))
    with open_stack(settings) as stack:
        searcher, prm = stack.searcher, stack.prm
        for i, problem in enumerate(problems):
            result = searcher.run(BestOfN(n=n), problem, seed=seed * 1_000_003 + i)
            q = prm.score_question(problem.question)
            out.append(CalibrationQuestion(q.median, tuple(
                ScoredSolution(c.answer, task.is_correct(c.text, problem),
                               c.final.median if c.final else None) for c in result.candidates)))
            progress(i + 1, len(problems))
    return out


def calibrate_selector(prm_folder: str | os.PathLike[str], calibration: str | os.PathLike[str], task: Task | None = None, *,
                       threads: int | None = None, all_questions: bool = False, generator: str | os.PathLike[str] | None = None,
                       fresh_per_level: int = 0, samples: int = 16, seed: int = 0, temperature: float | None = None,
                       progress: Callable[[int, int], None] = lambda done, total: None) -> AnswerModel:
    """Fit the answer model for the PRM in ``prm_folder`` and save it there; returns it.

    With ``generator`` and ``fresh_per_level``, ``samples`` solutions of that many fresh questions
    per level are drawn too: the calibration file's questions the PRM never trained on are few
    (a fifth of them, or two fifths with a likelihood term), and the gain curves and the score
    evidence per question bin need more. They are sampled at the file's temperature, or at
    ``temperature``: the answer model holds for the temperature search samples at, so with a
    different one only the fresh questions are used."""
    records = [r for r in read_records(calibration) if r.origin == "sample"]
    file_temperature = float(records[0].generator.get("temperature", 0.7)) if records else 0.7
    temperature = file_temperature if temperature is None else float(temperature)
    if temperature != file_temperature and not (generator is not None and fresh_per_level > 0):
        raise EdgeAdaptError(f"{calibration} was sampled at temperature {file_temperature:g}; an answer model for "
                             f"{temperature:g} "
                             "is fitted on fresh questions only: pass --generator and --fresh-per-level too")
    task = task or _task_of(records)
    extract = task.extract_answer if task is not None else extract_answer
    prm = open_prm(prm_folder, threads=threads)
    ids, how = ({r.question_id for r in records},
                "all questions (asked for)") if all_questions else untrained_questions(records, prm)
    by_question: dict[str, list[CalibrationRecord]] = defaultdict(list)
    for r in records:
        if r.question_id in ids:
            by_question[r.question_id].append(r)
    if temperature != file_temperature:
        by_question.clear()
        how = f"no file questions (sampled at temperature {file_temperature:g}, not {temperature:g})"
    questions = []
    for done, rs in enumerate(by_question.values(), start=1):
        complete = [r for r in rs if r.complete]
        if not complete:
            continue
        question = rs[0].question
        q = prm.score_question(question)
        scores = prm.score(question, [list(r.prefix) for r in complete])
        solutions = []
        for r, score in zip(complete, scores, strict=True):
            answer = extract("".join(r.prefix))
            solutions += [ScoredSolution(answer, r.n_correct > 0, score.final.median)] * r.n_rollouts
        questions.append(CalibrationQuestion(q.median, tuple(solutions)))
        progress(done, len(by_question))
    if generator is not None and fresh_per_level > 0:
        if task is None:
            raise EdgeAdaptError(f"{calibration}: fresh questions for a file task come from your file: pass the task with its "
                                 f"--data")
        problems = fresh_problems(task, {r.question for r in records}, fresh_per_level)
        questions += sample_questions(generator, prm, task, problems, samples, seed=seed, threads=threads, progress=progress,
                                      temperature=temperature)
        how += f", and {len(problems)} fresh questions x {samples} samples"
    if len(questions) < 2:
        raise EdgeAdaptError(f"{calibration}: only {len(questions)} usable questions ({how}); need more calibration questions.")
    model = fit_answer_model(questions, answers_equal, provenance={
        "calibration": Path(calibration).name, "used": how, "prm_variant": prm.variant, "temperature": temperature})
    model.save(prm_folder)
    log.info("selector model for %s: %d questions, alpha %.3g", prm_folder, len(questions), model.concentration)
    return model
