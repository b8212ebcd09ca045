"""Running a benchmark: strategies x questions, one record each, appended as it goes, resumable.

Each (question, strategy) pair runs with its own seed derived from the run's seed and the
question's position, so a resumed run produces exactly the records an uninterrupted one would
(with no budget policy attached: the policy's cost estimates are learnt as the run goes, so
budgeted decisions depend on what ran before).
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_adapt.assembly import StackSettings, open_stack
from edge_adapt.bench.records import RunFolder, RunFolderError
from edge_adapt.decisions import SampleSize
from edge_adapt.generator import Generator, SamplingParams
from edge_adapt.generator.config import default_threads
from edge_adapt.guard import Budget
from edge_adapt.models import sha256_of
from edge_adapt.prm import QuantilePRM
from edge_adapt.prm.bundle import CONFIG_FILE as PRM_CONFIG
from edge_adapt.search import SearchResult
from edge_adapt.search.spec import parse_spec
from edge_adapt.tasks import Problem, Task, get_task

log = logging.getLogger(__name__)

# The fixed-budget frontier (best-of-N by the PRM and majority votes at N = 1..32), the paper's
# IAS variants, and value-aware sampling at several prices: every point placed on the fixed curve.
# without a PRM: plain sampling and majority votes (the fixed ladder a PRM has to beat)
NO_PRM_STRATEGIES = ("majority:n=1", "majority:n=2", "majority:n=4", "majority:n=8", "majority:n=16")
DEFAULT_STRATEGIES = (
    "best_of_n:n=1", "best_of_n:n=2", "best_of_n:n=4", "best_of_n:n=8", "best_of_n:n=16", "best_of_n:n=32",
    "majority:n=2", "majority:n=4", "majority:n=8", "majority:n=16", "majority:n=32",
    "ias_best_of_n:n_max=32",
    "ias_majority:n_max=16",
    "ias_best_of_n:n_max=32+es",
    "ias_beam:k_max=4,m_max=4",
    "adaptive:price=4", "adaptive:price=8", "adaptive:price=16", "adaptive:price=32", "adaptive:price=64",
)


@dataclass(frozen=True)
class BenchConfig:
    """Everything that defines a run; stored in config.json and checked when resuming."""

    generator: str
    prm: str | None  # None: no PRM (majority votes only)
    task: str = "default"
    data: str | None = None
    strategies: tuple[str, ...] = DEFAULT_STRATEGIES
    limit: int | None = None
    seed: int = 0
    temperature: float = 0.7
    max_steps: int = 32
    budget: dict[str, float] = field(default_factory=dict)  # Budget fields; empty: unlimited
    meter: str | None = None  # a meter kind, or None for the best available
    cost_model: str | None = None  # a fitted cost-model JSON for the estimate
    threads: int | None = None
    gpu_layers: int = 0
    chat: bool | None = None  # the generator's chat template around prompts; None: when the GGUF has one
    system: str | None = None
    prompt_template: str | None = None  # file tasks: the prompt around {question}; None: the task's
    step_delimiter: str | None = None  # None: the task's
    max_new_tokens: int | None = None  # None: the task's

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["strategies"] = list(self.strategies)
        data.pop("threads")  # how fast, not what: a resume may use other threads
        return data


def model_fingerprints(config: BenchConfig) -> dict[str, str]:
    """sha256 of the generator file and of the PRM's prm_config.json (its metrics and fitted
    numbers change with every rebuild): the paths alone would let a resume after the models were
    rebuilt mix two models' records in one run."""
    prm = sha256_of(Path(config.prm) / PRM_CONFIG) if config.prm else None
    return {"generator": sha256_of(config.generator), "prm_config": prm}


def load_problems(config: BenchConfig, task: Task) -> list[Problem]:
    """The questions of a run: the default task's 500-problem test split (the one the model card
    reports; ``--seed`` changes sampling, not the questions), or every problem of a JSONL file."""
    problems = task.benchmark_problems()
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


def environment(prm: QuantilePRM, meter_source: str, gen: Generator) -> dict[str, Any]:
    """Where the run ran: versions, CPU, GPU offload, PRM provider, thread and KV settings and the meter."""
    from edge_adapt import __version__
    from edge_adapt.info import environment_report

    env = environment_report()
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
        "threads": {"generator": gen.config.n_threads or default_threads(), "prm": prm.threads or "onnxruntime default (all cores)",
                    "prm_spin": prm.spin},
        "kv_cache": {"n_ctx": gen.n_ctx, "n_seq_max": gen.ctx.n_seq_max, "unified": gen.config.kv_unified, "type": gen.config.kv_type},
        "meter": meter_source,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def to_record(problem: Problem, index: int, result: SearchResult, task: Task, question_q: Any) -> dict[str, Any]:
    chosen = result.chosen
    sized = next((d for d in result.decisions if isinstance(d, SampleSize)), None)
    return {
        "question_id": problem.id,
        "index": index,
        "level": problem.level,
        "strategy": result.strategy,
        "answer": result.answer,
        "gold": problem.answer,
        "correct": bool(chosen is not None and task.is_correct(chosen.text, problem)),
        "candidates": len(result.candidates),
        "candidates_correct": sum(task.is_correct(c.text, problem) for c in result.candidates),
        "candidates_unfinished": sum(not c.end.finished for c in result.candidates),  # cut off: no answer, no vote
        "samples_chosen": sized.samples if sized is not None else None,
        "question_quantiles": [question_q.low, question_q.median, question_q.high] if question_q is not None else None,
        "chosen_final_median": chosen.final.median if chosen is not None and chosen.final is not None else None,
        "cost": dataclasses.asdict(result.cost),
        "decisions": [d.as_record() for d in result.decisions],
    }


def run_bench(
    config: BenchConfig,
    out: str | Path,
    progress: Callable[[int, int, dict[str, Any] | None], None] = lambda done, total, record: None,
    *,
    task: Task | None = None,
    problems: list[Problem] | None = None,
) -> RunFolder:
    """Run (or resume) a benchmark into ``out``; returns the run folder.

    ``task`` and ``problems`` override what ``config.task`` names (library use with a task of
    your own; ``config.task`` should then name it, for the records)."""
    folder = RunFolder(out)
    task = task or get_task(config.task, config.data, config.prompt_template)
    problems = problems if problems is not None else load_problems(config, task)
    repeated = sorted(i for i, n in Counter(p.id for p in problems).items() if n > 1)
    if repeated:
        raise RunFolderError(f"problem ids {', '.join(repeated[:5])} appear more than once; every question of a run needs its own id")
    strategies = [parse_spec(s) for s in config.strategies]
    budget = Budget(**config.budget) if config.budget else None
    settings = StackSettings(Path(config.generator), Path(config.prm) if config.prm else None, task, tuple(strategies),
                             SamplingParams(temperature=config.temperature), config.max_steps, threads=config.threads,
                             gpu_layers=config.gpu_layers, meter=config.meter,
                             cost_model=Path(config.cost_model) if config.cost_model else None, budget=budget or Budget(),
                             chat=config.chat, system=config.system, step_delimiter=config.step_delimiter,
                             max_new_tokens=config.max_new_tokens)
    fingerprint = {"models_sha256": model_fingerprints(config), "data_sha256": sha256_of(config.data) if config.data else None}
    with open_stack(settings) as stack, folder:
        prm, searcher = stack.prm, stack.searcher
        # the meter that measures, not only the one asked for: a resume on another meter would mix
        # measured and estimated joules in one summary
        done = folder.open({**config.to_json(), **fingerprint, "meter_source": stack.meter.source,
                            "chat_template": searcher.settings.chat},
                           environment(prm, stack.meter.source, stack.generator))
        if budget is not None and problems:
            # measure the device first, so the first budgeted question is sized on measurements
            searcher.warm_up(task.warm_up_problem(), seed=config.seed)
        total = len(problems) * len(strategies)
        progress(len(done), total, None)
        for index, problem in enumerate(problems):
            pending = [s for s in strategies if (problem.id, s.name) not in done]
            if not pending:
                continue
            # the question's score is recorded for analysis (tables by difficulty); a strategy that
            # does not read it is not charged for it
            question_q = prm.score_question(problem.question) if prm.available else None
            for strategy in pending:
                result = searcher.run(strategy, problem, seed=config.seed * 1_000_003 + index)
                record = to_record(problem, index, result, task, question_q)
                folder.append(record)
                done.add((problem.id, strategy.name))
                progress(len(done), total, record)
    return folder


