"""One battery over a whole set of questions: adaptive search with its price paced to spend it.

`edge-adapt battery -o RUN --joules J` runs the default adaptive search down the questions (with a
PRM value-aware sampling, without one the calibrated adaptive vote), its price set before each
question by :class:`~edge_adapt.budget.allocation.BatteryPacer`: dearer when spending runs ahead of
an even pace, cheaper when behind, so each question is sized by its own samples and the battery
lasts to the last one. Each question is
also capped by its share of what is left, so the total is never overspent; a question the rest can
no longer buy an answer for is recorded as cut (its share is a hard cap: no sample is granted
beyond the estimate, with the guard's safety margin). ``--parallel`` questions run at once, sharing the
battery's remainder.

The run folder is a benchmark's: ``RUN/paced`` holds one fsynced record per question (the price it
ran at included), a rerun resumes it and rebuilds the pacer from the records. Beside it,
``RUN/even`` is what even spending buys: every question the same fixed vote (majority of k, the
largest k the battery affords at the paced run's own joules per sample). ``RUN/battery.json``
compares the two.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edge_adapt.assembly import open_stack
from edge_adapt.bench.records import RunFolder, RunFolderError
from edge_adapt.bench.result_record import to_record
from edge_adapt.bench.runner import (
    BenchConfig,
    choose_parallel,
    environment,
    load_problems,
    model_fingerprints,
    run_bench,
    stack_settings,
)
from edge_adapt.budget.allocation import BatteryPacer
from edge_adapt.budget.guard import Budget
from edge_adapt.defaults import read_calibration, search_default
from edge_adapt.errors import BudgetError, SamplingConfigError
from edge_adapt.execution import executor_for
from edge_adapt.files import atomic_write_text
from edge_adapt.search.spec import parse_spec
from edge_adapt.tasks import Problem, Task, get_task

PACED = "battery"  # the paced run's strategy name in its records


@dataclass(frozen=True)
class BatteryReport:
    """The paced run against even spending, on the same questions and battery."""

    questions: int
    total_joules: float
    strategy: str  # the paced strategy's kind (its price moved)
    spent_joules: float
    correct: int
    cut: int  # questions the battery could no longer answer
    samples: int
    first_price: float
    last_price: float
    warm_up_joules: float  # measuring the device's costs before the first question (not charged to the battery)
    energy_source: str
    even_samples: int  # k of the even majority vote (0: the battery affords less than one sample each)
    even_correct: int | None
    even_joules: float | None

    def as_record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _Pacing:
    """The pacer, shared by the questions in flight. Each question takes the current price and a
    cap: its share of what is left and not already promised to the others in flight (so that
    the caps together never exceed the battery); each finished question gives its cap back and
    is recorded at what it spent (on the writer's thread)."""

    def __init__(self, pacer: BatteryPacer, parallel: int) -> None:
        self.pacer = pacer
        self.parallel = parallel
        self._lock = threading.Lock()
        self._promised: dict[int, float] = {}
        self._started = pacer.done

    def take(self, index: int) -> tuple[float, float]:
        with self._lock:
            free = max(self.pacer.left - sum(self._promised.values()), 0.0)
            unstarted = self.pacer.questions - self._started
            cap = free / max(1, min(self.parallel, unstarted))
            self._promised[index] = cap
            self._started += 1
            return self.pacer.price, cap

    def done(self, index: int, joules: float) -> None:
        with self._lock:
            self._promised.pop(index, None)
            self.pacer.record(joules)


def paced_kind(config: BenchConfig) -> str:
    """The adaptive strategy whose price the pacer moves: the default search's, if it has one."""
    vote_model = read_calibration(config.run.models) if config.run.vote_model else None
    spec, _ = search_default(config.run.models, vote_model)
    kind = spec.split(":")[0]
    if kind not in ("adaptive", "adaptive_vote"):
        raise SamplingConfigError(f"a battery run paces adaptive search's price, and the default search here is {spec}: "
                                  "give a PRM (--prm), or calibrate the generator first (`edge-adapt calibrate`)")
    return kind


def run_battery(config: BenchConfig, total_joules: float, out: str | Path, *, parallel: int | None = None,
                even: bool = True, start_price: float = 8.0,
                progress: Callable[[int, int], None] = lambda done, total: None) -> BatteryReport:
    """Run (or resume) the paced run and, with ``even``, the even vote beside it; returns the comparison."""
    out = Path(out)
    config = replace(config, strategies=(f"{paced_kind(config)}:price={start_price:g}",))  # what sizes the stack
    task = get_task(config.task, config.data, config.run.prompt.prompt_template)
    problems = load_problems(config, task)
    if not problems:
        raise RunFolderError("no questions to run: the data file (or the split) holds none")
    paced = _run_paced(config, task, problems, total_joules, out / "paced", parallel, start_price, progress)
    records = RunFolder(out / "paced").records()
    samples = sum(r["cost"]["samples"] for r in records)
    per_sample = sum(r["cost"]["joules"] or 0.0 for r in records) / samples if samples else 0.0
    k = int(total_joules / len(problems) / per_sample) if per_sample > 0 else 0
    even_correct = even_joules = None
    if even and k >= 1:
        run = run_bench(replace(config, strategies=(f"majority:n={k}",)), out / "even", parallel=parallel, problems=problems)
        even_records = run.records()
        even_correct = sum(bool(r["correct"]) for r in even_records)
        even_joules = sum(r["cost"]["joules"] or 0.0 for r in even_records)
    report = replace(paced, even_samples=k, even_correct=even_correct, even_joules=even_joules)
    atomic_write_text(out / "battery.json", json.dumps(report.as_record(), indent=2) + "\n")
    return report


def _run_paced(config: BenchConfig, task: Task, problems: list[Problem], total_joules: float, path: Path,
               parallel: int | None, start_price: float, progress: Callable[[int, int], None]) -> BatteryReport:
    folder = RunFolder(path)
    parallel, why = choose_parallel(config, parallel, None)
    with folder:
        done = folder.lock()
        pacing = _Pacing(BatteryPacer(total_joules, len(problems), price=start_price), parallel)
        for record in folder.records() if done else []:  # resume: the pacer as it stood
            pacing.pacer.record(record["cost"]["joules"] or 0.0)
        first_price = start_price
        items = [(p.id, (i, p)) for i, p in enumerate(problems) if (p.id, PACED) not in done]
        run_config = {**config.to_json(), "battery_joules": total_joules, "start_price": start_price,
                      "models_sha256": model_fingerprints(config)}
        source: dict[str, Any] = {}

        def setup(exit_stack: contextlib.ExitStack) -> tuple[Callable[[Any], Any], dict[str, Any]]:
            stack = exit_stack.enter_context(open_stack(stack_settings(config, task, parallel)))
            kind = config.strategies[0].split(":")[0]
            source["meter"] = stack.meter.source
            # the device's costs measured before the first question, so that its cap is read on
            # measurements (measured, reported, not charged to the battery)
            source["warm_up_joules"] = _warm_up(stack, task, config.seed)

            def handle(item: tuple[int, Problem]) -> dict[str, Any]:
                index, problem = item
                price, cap = pacing.take(index)
                try:
                    result = stack.searcher.run(parse_spec(f"{kind}:price={price:.4g}"), problem,
                                                seed=config.seed * 1_000_003 + index,
                                                budget=Budget(energy_j=max(cap, 1e-9), first_unit_floor=False))
                except BudgetError as exc:  # what is left cannot buy one answer: the battery is empty
                    return {**_cut_record(problem, index, price, str(exc)), "cap_joules": cap}
                return {**to_record(problem, index, result, task, None), "strategy": PACED, "price": price, "cap_joules": cap}

            env = {**environment(stack), "parallel": {"searches": parallel, "why": why}}
            return handle, {"environment": env, "run_config": {"meter_source": stack.meter.source}}

        def ready(info: dict[str, Any]) -> None:
            folder.open({**run_config, **info["run_config"]}, info["environment"])

        def write(key: str, record: dict[str, Any]) -> None:
            folder.append(record)
            pacing.done(record["index"], record["cost"]["joules"] or 0.0)
            progress(pacing.pacer.done, len(problems))

        if items:
            executor_for(None, parallel)([], setup, items, ready, write)
        else:  # nothing left: still check that the folder holds this run
            recorded = folder.config()
            folder.open({**run_config, "meter_source": recorded.get("meter_source")}, folder.environment())
        records = folder.records()
    return BatteryReport(
        questions=len(problems), total_joules=total_joules, strategy=config.strategies[0].split(":")[0],
        spent_joules=sum(r["cost"]["joules"] or 0.0 for r in records), correct=sum(bool(r["correct"]) for r in records),
        cut=sum(1 for r in records if r.get("cut")), samples=sum(r["cost"]["samples"] for r in records),
        first_price=first_price, last_price=pacing.pacer.price, warm_up_joules=float(source.get("warm_up_joules", 0.0)),
        energy_source=source.get("meter") or folder.config().get("meter_source", "?"),
        even_samples=0, even_correct=None, even_joules=None)


def _warm_up(stack: Any, task: Task, seed: int) -> float:
    before = stack.policy.read().joules
    stack.searcher.warm_up(task.warm_up_problem(), seed=seed)
    return stack.policy.read().joules - before


def _cut_record(problem: Problem, index: int, price: float, why: str) -> dict[str, Any]:
    cost = {"generated_tokens": 0, "prompt_tokens": 0, "prm_tokens": 0, "prm_calls": 0, "prm_prefixes": 0, "samples": 0,
            "wall_s": 0.0, "generation_s": 0.0, "prm_s": 0.0, "joules": 0.0, "energy_source": None, "energy_estimated": None}
    return {"question_id": problem.id, "index": index, "level": problem.level, "strategy": PACED, "answer": None,
            "gold": problem.answer, "correct": False, "candidates": 0, "candidates_correct": 0, "candidates_unfinished": 0,
            "samples_chosen": None, "question_quantiles": None, "chosen_final_median": None, "cost": cost, "decisions": [],
            "samples": [], "price": price, "cut": why}
