"""Running a benchmark: strategies x questions, one record each, appended as it goes, resumable.

Each (question, strategy) pair runs with its own seed derived from the run's seed and the
question's position, so a resumed run produces exactly the records an uninterrupted one would
(with no budget policy attached: the policy's cost estimates are learnt as the run goes, so
budgeted decisions depend on what ran before).
"""

from __future__ import annotations

import contextlib
import logging
import platform
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_adapt.assembly import Stack, StackSettings, open_stack
from edge_adapt.bench.records import RunFolder, RunFolderError
from edge_adapt.bench.result_record import to_record
from edge_adapt.cluster import ClusterSettings, FileCheck
from edge_adapt.defaults import DEFAULT_STRATEGIES
from edge_adapt.errors import EdgeAdaptError
from edge_adapt.execution import executor_for
from edge_adapt.generator.config import default_parallel
from edge_adapt.models import prm_fingerprint, sha256_of
from edge_adapt.search.context import RunHooks
from edge_adapt.search.spec import parse_spec
from edge_adapt.search.strategy import Strategy
from edge_adapt.settings import RunSettings, run_settings
from edge_adapt.tasks import Problem, Task, get_task

log = logging.getLogger(__name__)


class RunInterrupted(EdgeAdaptError):
    """A benchmark was stopped while this question's searches ran: nothing of it is written."""

@dataclass(frozen=True)
class BenchConfig:
    """Everything that defines a run; stored in config.json and checked when resuming: the run's
    settings (:class:`~edge_adapt.settings.RunSettings`; models alone stand for a run with every
    other default), and which questions and strategies."""

    run: RunSettings
    task: str = "default"
    data: str | None = None
    strategies: tuple[str, ...] = DEFAULT_STRATEGIES
    limit: int | None = None
    seed: int = 0
    split: str = "test"  # the default task's split (calibration: where settings are chosen)
    question_seed: int = 0  # the default task: another draw of the split's questions

    def __post_init__(self) -> None:
        object.__setattr__(self, "run", run_settings(self.run))

    def to_json(self) -> dict[str, Any]:
        """config.json: the settings tree written flat by field name (what a resume compares)."""
        data: dict[str, Any] = {**self.run.as_record(), "task": self.task, "data": self.data,
                                "strategies": list(self.strategies), "limit": self.limit, "seed": self.seed}
        for key in ("split", "question_seed"):  # written when set, so runs from before they existed resume
            if getattr(self, key) != BenchConfig.__dataclass_fields__[key].default:
                data[key] = getattr(self, key)
        return data


def model_fingerprints(config: BenchConfig) -> dict[str, str]:
    """sha256 of the generator file and of the PRM's prm_config.json (its metrics and fitted
    numbers change with every rebuild): the paths alone would let a resume after the models were
    rebuilt mix two models' records in one run. The generator's vote model too, where the run reads
    one (adaptive_vote decides by it)."""
    models = config.run.models
    prm = prm_fingerprint(models.prm) if models.prm else None
    found = {"generator": sha256_of(models.generator), "prm_config": prm}
    calibration = models.calibration_file
    if config.run.vote_model and calibration.is_file():
        found["vote_model"] = sha256_of(calibration)
    return found


def load_problems(config: BenchConfig, task: Task) -> list[Problem]:
    """The questions of a run: the default task's 500-problem test split (the one the model card
    reports; ``--seed`` changes sampling, not the questions; ``question_seed`` draws another set,
    ``split`` another split), or every problem of a JSONL file."""
    problems = task.benchmark_problems(config.split, config.question_seed)
    if config.limit is not None:
        problems = spread(problems, config.limit)
    return problems


def spread(problems: list[Problem], limit: int) -> list[Problem]:
    """``limit`` problems spread evenly over the levels (as equal a share each as they hold) and,
    within a level, evenly over its problems; in their original order. A quick run then samples
    every level alike, not the easiest head of a split ordered by level."""
    if limit >= len(problems):
        return list(problems)
    levels: dict[int | None, list[int]] = {}
    for i, p in enumerate(problems):
        levels.setdefault(p.level, []).append(i)
    quota = dict.fromkeys(levels, 0)
    left = limit
    while left > 0:  # one more for each level that still has problems, until the limit is reached
        for level, members in levels.items():
            if left and quota[level] < len(members):
                quota[level] += 1
                left -= 1
    chosen = [members[(j * len(members)) // quota[level]] for level, members in levels.items() for j in range(quota[level])]
    return [problems[i] for i in sorted(chosen)]


def environment(stack: Stack) -> dict[str, Any]:
    """Where the run ran: versions, CPU, GPU offload, PRM provider, thread and KV settings and the meter."""
    from edge_adapt import __version__
    from edge_adapt.info import environment_report

    env = environment_report()
    prm, gen = stack.prm, stack.generator
    return {
        "edge_adapt": __version__,
        "python": env.python,
        "platform": env.platform,
        "processor": platform.processor() or platform.machine(),
        "cpu_threads": env.cpu_threads,
        "packages": env.packages,
        "llama_gpu_offload": env.llama_gpu_offload,
        "prm_provider": prm.provider,
        "prm_variant": prm.variant,
        "threads": {"generator": gen.threads, "prm": prm.threads or "onnxruntime default (all cores)",
                    "prm_spin": prm.spin, "chosen": stack.threads.as_record()},
        "kv_cache": {"n_ctx": gen.n_ctx, "n_seq_max": gen.ctx.n_seq_max, "unified": gen.config.kv_unified,
                     "type": gen.config.kv_type},
        "meter": stack.meter.source,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def stack_settings(config: BenchConfig, task: Task, parallel: int = 1) -> StackSettings:
    """The stack a run's configuration asks for (built the same on the device and on a worker),
    sized for ``parallel`` searches at once."""
    return StackSettings(config.run, task, tuple(parse_spec(s) for s in config.strategies), parallel=parallel)


def choose_parallel(config: BenchConfig, parallel: int | None, cluster: ClusterSettings | None) -> tuple[int, str]:
    """Questions run at once in this process, and why: as asked, else the device's default."""
    if cluster is not None:
        return 1, "Ray workers take one question at a time each"
    if parallel is not None:
        return parallel, "--parallel"
    return default_parallel(config.run.models.gpu_layers)


def question_records(stack: Stack, task: Task, problem: Problem, index: int, strategies: Sequence[Strategy],
                     seed: int, hooks: RunHooks = RunHooks()) -> list[dict[str, Any]]:
    """One question's records for ``strategies``: each strategy with the question's own seed (from
    the run's seed and the question's position), so records never depend on what ran before."""
    # the question's score is recorded for analysis (tables by difficulty); a strategy that does not
    # read it is not charged for it
    question_q = stack.prm.score_question(problem.question) if stack.prm.available else None
    records = []
    for strategy in strategies:
        result = stack.searcher.run(strategy, problem, seed=seed * 1_000_003 + index, hooks=hooks)
        records.append(to_record(problem, index, result, task, question_q))
    return records


def run_bench(
    config: BenchConfig,
    out: str | Path,
    progress: Callable[[int, int, dict[str, Any] | None], None] = lambda done, total, record: None,
    *,
    task: Task | None = None,
    problems: list[Problem] | None = None,
    cluster: ClusterSettings | None = None,
    parallel: int | None = None,
) -> RunFolder:
    """Run (or resume) a benchmark into ``out``; returns the run folder.

    ``task`` and ``problems`` override what ``config.task`` names (library use with a task of
    your own; ``config.task`` should then name it, for the records). ``cluster`` fans the
    questions out over Ray workers; either way this process is the run's only writer. ``parallel``
    questions run at once here (None: the device's default), recorded in the run's environment,
    not its configuration: records depend on it only through batched arithmetic's last bits."""
    folder = RunFolder(out)
    task = task or get_task(config.task, config.data, config.run.prompt.prompt_template)
    problems = _checked(problems if problems is not None else load_problems(config, task))
    parallel, parallel_why = choose_parallel(config, parallel, cluster)
    settings = stack_settings(config, task, parallel)
    fingerprint = {"models_sha256": model_fingerprints(config), "data_sha256": sha256_of(config.data) if config.data else None}
    total = len(problems) * len(settings.strategies)
    checks = [FileCheck.of(config.run.models.generator)]
    if config.run.models.prm:
        checks += [FileCheck.of(f) for f in sorted(config.run.models.prm.iterdir()) if f.is_file()]
    with folder:
        done = folder.lock()  # held until the end
        items = []
        for index, problem in enumerate(problems):
            pending = [s.name for s in settings.strategies if (problem.id, s.name) not in done]
            if pending:
                items.append((problem.id, (index, problem, pending)))
        if not items:  # nothing left: check that the folder holds this run, and build no models
            folder.open({**config.to_json(), **fingerprint, **_recorded_run_config(folder)}, folder.environment())
            progress(len(done), total, None)
            return folder
        environment_record: dict[str, Any] = {}

        def ready(info: dict[str, Any]) -> None:  # the runner's meter and prompt settings complete the config
            environment_record.update(info["environment"], parallel={"searches": parallel, "why": parallel_why})
            folder.open({**config.to_json(), **fingerprint, **info["run_config"]}, environment_record)
            progress(len(done), total, None)

        def write(key: str, records: list[dict[str, Any]]) -> None:
            for record in records:
                folder.append(record)
                done.add((record["question_id"], record["strategy"]))
                progress(len(done), total, record)

        report = executor_for(cluster, parallel)(checks, _BenchWorker(config, task, settings), items, ready, write)
        if report is not None:
            folder.write_environment({**environment_record, "cluster": report.as_record()})
    return folder


def _checked(problems: list[Problem]) -> list[Problem]:
    """The run's questions: at least one, each with its own id (records are keyed by it)."""
    if not problems:
        raise RunFolderError("no questions to run: the data file (or the split) holds none")
    repeated = sorted(i for i, n in Counter(p.id for p in problems).items() if n > 1)
    if repeated:
        raise RunFolderError(f"problem ids {', '.join(repeated[:5])} appear more than once; every question of a run "
                             "needs its own id")
    return problems


@dataclass(frozen=True)
class _BenchWorker:
    """What runs the questions, here or on a Ray worker: the run's stack, then one question's
    records per call."""

    config: BenchConfig
    task: Task
    settings: StackSettings

    def __call__(self, exit_stack: contextlib.ExitStack) -> tuple[Callable[[Any], Any], dict[str, Any]]:
        stack = exit_stack.enter_context(open_stack(self.settings))
        if not self.settings.run.budget.unlimited:
            # measure the device first, so the first budgeted question is sized on measurements
            stack.searcher.warm_up(self.task.warm_up_problem(), seed=self.config.seed)
        handle = _QuestionHandler(stack, self.task, {s.name: s for s in self.settings.strategies}, self.config.seed)
        # the meter that measures, not only the one asked for: a resume on another meter would mix
        # measured and estimated joules in one summary
        info = {"run_config": {"meter_source": stack.meter.source, "chat_template": stack.searcher.settings.chat},
                "environment": environment(stack)}
        return handle, info


class _QuestionHandler:
    """One question's records per call; ``cancel`` stops the searches in flight (the run was interrupted)."""

    def __init__(self, stack: Stack, task: Task, strategies: dict[str, Strategy], seed: int) -> None:
        self.stack, self.task, self.strategies, self.seed = stack, task, strategies, seed
        self._cancelled = threading.Event()

    def __call__(self, item: tuple[int, Problem, list[str]]) -> list[dict[str, Any]]:
        index, problem, names = item
        return question_records(self.stack, self.task, problem, index, [self.strategies[n] for n in names], self.seed,
                                RunHooks(interrupt=self._check))

    def cancel(self) -> None:
        self._cancelled.set()

    def _check(self) -> None:
        if self._cancelled.is_set():
            raise RunInterrupted("the run was interrupted; this question is left for the resume")


def _recorded_run_config(folder: RunFolder) -> dict[str, Any]:
    recorded = folder.config()
    return {k: recorded[k] for k in ("meter_source", "chat_template") if k in recorded}
