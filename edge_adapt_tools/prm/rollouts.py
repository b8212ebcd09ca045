"""Monte-Carlo rollouts: how often does *this generator* succeed from each reasoning prefix?

Per question (the paper's recipe, on the project's own branching runtime):

1. sample N full solutions from the question (one shared prefill, all N decoded together);
2. split each at its steps into prefixes, keeping every prefix node's KV cache live;
3. continue each distinct partial prefix M times (batched, from the live node: the prefix is
   never re-evaluated) and grade every continuation with the task's checker.

The empty prefix's rate comes from the N solutions themselves, which are exactly N samples from
the question. With ``record_continuations`` every distinct graded continuation is kept too, as a
complete record of origin "continuation": its label is exact (a whole solution is right or
wrong), and it is the generator's own kind of mistake, which the PRM must learn to rank.
Records go to a :class:`~edge_adapt_tools.prm.calibration_data.CalibrationWriter`, one question at a time,
so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_adapt.assembly import open_generator
from edge_adapt.cluster import ClusterSettings, FileCheck
from edge_adapt.execution import executor_for
from edge_adapt.files import atomic_write_text
from edge_adapt.generator import GenerationStats, Generator, GeneratorConfig, Node, SamplingParams, StepEnd, StepRules
from edge_adapt.models import sha256_of
from edge_adapt.settings import PromptSettings
from edge_adapt.tasks import Problem, Task
from edge_adapt_tools.prm.calibration_data import CalibrationRecord, CalibrationWriter, recorded_questions, writing_lock

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RolloutSettings:
    n_solutions: int = 8  # N: full solutions sampled per question
    n_continuations: int = 8  # M: continuations per partial prefix
    sampling: SamplingParams = field(default_factory=SamplingParams)  # its own default temperature, 0.7
    seed: int = 0
    max_steps: int = 32
    # also keep every distinct graded continuation as a complete record of its own (origin
    # "continuation"): free, exact labels of the kind best-of-N ranks. Off by default: on the
    # default task they are nearly all wrong (a right solution is one canonical text, already
    # sampled) and bought one question in a hundred at best-of-16 (models/README.md)
    record_continuations: bool = False
    # how the generator is prompted, as search will prompt it; recorded with the calibration, so the
    # PRM knows (the chat choice always, step rules and template where they differ from the task's)
    prompt: PromptSettings = PromptSettings()


@dataclass
class RolloutReport:
    questions: int = 0  # rolled out in this run
    resumed: int = 0  # already in the file, skipped
    records: int = 0
    generated_tokens: int = 0
    prompt_tokens: int = 0
    cut_by_context: int = 0  # continuations that ran out of KV cells (graded as they stood)
    wall_s: float = 0.0
    cluster: dict[str, Any] | None = None  # with --ray: per-worker throughput and retries


def question_seed(seed: int, question_id: str) -> int:
    """A per-question seed that does not depend on the order questions are run in (or resumed)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{question_id}".encode()).digest()[:4], "big")


def rollout_question(
    gen: Generator, task: Task, problem: Problem, settings: RolloutSettings, provenance: dict
) -> tuple[list[CalibrationRecord], GenerationStats, int]:
    """The records of one question, what they cost, and how many continuations hit the context cap."""
    before = gen.usage
    rules = settings.prompt.rules(task)
    sampling = settings.sampling
    chat = bool(settings.prompt.with_chat(gen.vocab.has_chat_template).chat)
    prompt = gen.vocab.prompt_tokens(task.prompt(problem), chat=chat, system=settings.prompt.system)
    root = gen.prefill(prompt, seed=question_seed(settings.seed, problem.id))
    kept: list[Node] = [root]
    try:
        leaves = _full_solutions(gen, root, settings, rules, kept)  # 1.

        def record(prefix: tuple[str, ...], n: int, k: int, complete: bool, origin: str = "sample") -> CalibrationRecord:
            return CalibrationRecord(problem.id, problem.question, problem.answer, prefix, n, k, complete, problem.level,
                                     provenance, origin=origin)

        correct = {id(leaf): task.is_correct(leaf.solution_text(), problem) for leaf in leaves}
        records = [record((), len(leaves), sum(correct.values()), False)]

        complete, partial = _distinct(leaves, correct)  # 2.
        records += [record(texts, len(flags), sum(flags), True) for texts, flags in complete.items()]

        # 3. M continuations from every distinct partial prefix, as many prefixes at a time as fit
        cut = 0
        continued: dict[tuple[str, ...], list[bool]] = defaultdict(list)  # distinct continuations, graded
        items = list(partial.items())
        expected = max((sum(len(s.tokens) for s in leaf.steps()) for leaf in leaves), default=32)
        while items:
            m = settings.n_continuations
            fit_seqs = max(1, gen.free_sequences // m)
            fit_cells = max(1, gen.kv_cells_free // (m * 2 * max(expected, 1)))
            chunk, items = items[: min(fit_seqs, fit_cells)], items[min(fit_seqs, fit_cells) :]
            nodes = [node for _, node in chunk]
            ends, _ = gen.complete(nodes, m, sampling=sampling, rules=rules, max_steps=settings.max_steps)
            outcome: dict[int, list[bool]] = defaultdict(list)
            starts = {id(node) for node in nodes}
            for end in ends:
                start = next(n for n in reversed(end.path()) if id(n) in starts)  # nearest start above
                right = task.is_correct(end.solution_text(), problem)
                outcome[id(start)].append(right)
                cut += end.end is StepEnd.CONTEXT
                if settings.record_continuations:
                    texts = tuple(s.text for s in end.steps())
                    if texts not in complete:  # a sampled one is recorded already
                        continued[texts].append(right)
            records += [record(texts, len(outcome[id(node)]), sum(outcome[id(node)]), False) for texts, node in chunk]
        records += [record(texts, len(flags), sum(flags), True, "continuation") for texts, flags in continued.items()]
    finally:
        gen.release(*kept)
    return records, gen.usage - before, cut


def _full_solutions(gen: Generator, root: Node, settings: RolloutSettings, rules: StepRules, kept: list[Node]) -> list[Node]:
    """1. N full solutions from ``root``. The nodes they pass through stay live (added to ``kept``)
    as rollout starting points; a solution still going at ``max_steps`` is graded as it stands."""
    frontier = gen.expand([root], settings.n_solutions, sampling=settings.sampling, rules=rules).children
    leaves = [n for n in frontier if n.ends_solution]
    n_steps = 1
    while n_steps < settings.max_steps and (open_nodes := [n for n in frontier if not n.ends_solution]):
        kept += open_nodes
        frontier = gen.expand(open_nodes, 1, sampling=settings.sampling, rules=rules).children
        leaves += [n for n in frontier if n.ends_solution]
        n_steps += 1
    cut_short = [n for n in frontier if not n.ends_solution]
    kept += cut_short
    return leaves + cut_short


def _distinct(leaves: list[Node], correct: dict[int, bool]
              ) -> tuple[dict[tuple[str, ...], list[bool]], dict[tuple[str, ...], Node]]:
    """2. The distinct complete solutions (with their grades) and the distinct partial prefixes
    (with a live node ending each)."""
    complete: dict[tuple[str, ...], list[bool]] = defaultdict(list)
    partial: dict[tuple[str, ...], Node] = {}
    for leaf in leaves:
        steps_ = leaf.steps()
        texts = tuple(s.text for s in steps_)
        complete[texts].append(correct[id(leaf)])
        for j, node in enumerate(steps_[:-1], start=1):
            if node.is_live:
                partial.setdefault(texts[:j], node)
    return complete, partial


def build_calibration_set(
    generator_path: str | os.PathLike[str],
    task: Task,
    problems: Sequence[Problem],
    out_path: str | os.PathLike[str],
    settings: RolloutSettings | None = None,
    config: GeneratorConfig | None = None,
    progress: Callable[[Problem, int, int], None] = lambda problem, done, total: None,
    *,
    cluster: ClusterSettings | None = None,
) -> RolloutReport:
    """Roll out every problem not already in ``out_path`` and append its records; ``cluster``
    fans the questions out over Ray workers (this process stays the file's only writer)."""
    settings = settings or RolloutSettings()
    config = config or GeneratorConfig(n_ctx=8192, n_seq_max=256)
    report = RolloutReport()
    started = time.perf_counter()
    with writing_lock(out_path):
        _run(generator_path, task, problems, out_path, settings, config, progress, cluster, report)
    report.wall_s = time.perf_counter() - started
    if report.cut_by_context:
        log.warning("%d continuations ran out of context and were graded as they stood; raise n_ctx", report.cut_by_context)
    return report


def _provenance(generator_path: str | os.PathLike[str], gen: Generator, task: Task,
                settings: RolloutSettings) -> tuple[dict[str, Any], RolloutSettings]:
    """What the calibration records say about how they were made (the PRM keeps it), and the
    settings with the chat choice resolved for this generator."""
    provenance: dict[str, Any] = {
        "file": Path(generator_path).name,
        "sha256": sha256_of(generator_path),
        "temperature": settings.sampling.temperature,
        "top_p": settings.sampling.top_p,
        "top_k": settings.sampling.top_k,
        "min_p": settings.sampling.min_p,
        "seed": settings.seed,
        "n_solutions": settings.n_solutions,
        "n_continuations": settings.n_continuations,
        "record_continuations": settings.record_continuations,
        "task": task.name,
    }
    prompt = settings.prompt.with_chat(gen.vocab.has_chat_template)
    if prompt.chat:  # how the generator was prompted (absent: plain prompts)
        provenance.update(chat=True, system=prompt.system)
    if getattr(task, "prompt_template", None) not in (None, getattr(task, "default_prompt", None)):
        provenance.update(prompt_template=task.prompt_template)
    if prompt.step_delimiter is not None or prompt.max_new_tokens is not None:
        rules = prompt.rules(task)
        provenance.update(step_delimiter=rules.delimiter, max_new_tokens=rules.max_new_tokens)
    return provenance, dataclasses.replace(settings, prompt=prompt)


def _add(report: RolloutReport, writer: CalibrationWriter, records: list[CalibrationRecord], stats: GenerationStats,
         cut: int) -> None:
    writer.write_question(records)
    report.questions += 1
    report.records += len(records)
    report.generated_tokens += stats.generated_tokens
    report.prompt_tokens += stats.prompt_tokens
    report.cut_by_context += cut


@dataclass(frozen=True)
class _RolloutWorker:
    """What runs the questions, here or on a Ray worker: the generator, then one question's records per call."""

    generator_path: str
    task: Task
    settings: RolloutSettings
    config: GeneratorConfig

    def __call__(self, exit_stack: contextlib.ExitStack) -> tuple[Callable[[Problem], Any], dict[str, Any]]:
        gen = exit_stack.enter_context(open_generator(self.generator_path, self.config))
        provenance, settings = _provenance(self.generator_path, gen, self.task, self.settings)
        return (lambda problem: rollout_question(gen, self.task, problem, settings, provenance)), provenance


def _run(generator_path: str | os.PathLike[str], task: Task, problems: Sequence[Problem], out_path: str | os.PathLike[str],
         settings: RolloutSettings, config: GeneratorConfig, progress: Callable[[Problem, int, int], None],
         cluster: ClusterSettings | None, report: RolloutReport) -> None:
    """The questions not yet in the file, here or on Ray workers; this process appends every record."""
    recorded = recorded_questions(out_path)
    todo = [p for p in problems if p.id not in recorded]
    report.resumed = len(problems) - len(todo)
    by_id = {p.id: p for p in todo}
    writer: list[CalibrationWriter] = []
    if not todo:  # nothing left: still refuse a file made with other settings
        with open_generator(generator_path, config) as gen:
            CalibrationWriter(out_path, _provenance(generator_path, gen, task, settings)[0])
        return

    def ready(provenance: dict[str, Any]) -> None:  # the runner's view of the generator (its chat template)
        writer.append(CalibrationWriter(out_path, provenance))

    def write(key: str, result: tuple[list[CalibrationRecord], GenerationStats, int]) -> None:
        _add(report, writer[0], *result)
        progress(by_id[key], report.resumed + report.questions, len(problems))

    cluster_report = executor_for(cluster)([FileCheck.of(generator_path)],
                                           _RolloutWorker(str(generator_path), task, settings, config),
                                           [(p.id, p) for p in todo], ready, write)
    if cluster_report is not None:
        report.cluster = cluster_report.as_record()
        # the run's environment record: per-worker throughput and retries, beside the calibration file
        out = Path(out_path)
        atomic_write_text(out.with_name(out.name + ".cluster.json"), json.dumps(report.cluster, indent=2) + "\n")