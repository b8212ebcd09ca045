"""The composition root: the one place that builds a search stack from settings.

A stack is the generator (its context sized from what the strategies need), the PRM, the energy
meter, the policy (budgets, and joules whether or not a budget is set) and the searcher that
receives all of them through its constructor. The meter and the policy read the work done from
the generator and the PRM directly, so nothing is attached after construction. The CLI, the
benchmarks, the server and the cluster workers open stacks here rather than wiring the parts
themselves. A generator's vote model (``GENERATOR.calibration.json``, from ``edge-adapt calibrate``)
is found beside it and checked against it here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from edge_adapt.budget.policy import EnergyPolicy
from edge_adapt.cores import ThreadChoice, choose_threads
from edge_adapt.defaults import give_up_after, read_calibration
from edge_adapt.energy import CostModel, Meter, Usage, open_meter
from edge_adapt.errors import ModelLoadError, SamplingConfigError
from edge_adapt.generator import Generator, GeneratorConfig, SamplingParams, StepRules
from edge_adapt.generator.config import MAX_SEQUENCES, batch_rows_for
from edge_adapt.models import sha256_of
from edge_adapt.prm import PRM, QuantilePRM
from edge_adapt.prm.absent import NO_PRM_HINT, NoPRM
from edge_adapt.search import Searcher, SearchSettings, Strategy, sequences_needed
from edge_adapt.search.calibration.answer_model import AnswerModel
from edge_adapt.search.calibration.vote_model import VoteModel
from edge_adapt.search.searcher import work_done
from edge_adapt.search.strategy import MIN_KV_CELLS, kv_cells_per_search
from edge_adapt.settings import PromptSettings, RunSettings, run_settings
from edge_adapt.tasks import Task

log = logging.getLogger(__name__)

MAX_PARALLEL = 64  # searches at once; past the sequences llama.cpp holds (256) more only wait


@dataclass(frozen=True)
class StackSettings:
    """What a stack is built from: the run's settings (models, prompt, sampling, step cap, budget,
    meter, calibration: :class:`~edge_adapt.settings.RunSettings`; models alone stand for a run with
    every other default), the task and the strategies it will run, and the engine's knobs."""

    run: RunSettings
    task: Task
    strategies: tuple[Strategy, ...]  # every strategy the stack will run: they size the generator's context
    # given: the generator is loaded with exactly this (benchmarks of layouts and threads); None:
    # sized from the strategies with the models' threads and GPU layers
    generator_config: GeneratorConfig | None = None
    prm_threads: int | None = None  # None: the models' threads
    prm_spin: bool = False  # ONNX Runtime's intra-op threads spin between calls
    # a PRM calibrated for another generator: "refuse" (its scores describe that generator), or
    # "warn" (benchmarks of speed that only need some scores)
    other_generator: Literal["refuse", "warn"] = "refuse"
    context: int | None = None  # the KV pool holds at least this many cells (a server's --ctx); None: sized from the strategies
    context_from_model: int = 0  # > 0: the pool grows to the model's training context, up to this many cells
    prompt_cache: bool = False  # keep the last prompt's cells for the next prompt that starts the same way
    # searches run at once (threads over one generator, batched into each decode): the KV pool and
    # the sequences are sized for this many of the most demanding strategy
    parallel: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "run", run_settings(self.run))
        given = self.run.prompt.prompt_template
        if isinstance(self.parallel, bool) or not isinstance(self.parallel, int) or not 1 <= self.parallel <= MAX_PARALLEL:
            raise SamplingConfigError(f"parallel must be an integer in 1..{MAX_PARALLEL} (searches at once), got "
                                      f"{self.parallel!r}")
        if given is not None and getattr(self.task, "prompt_template", None) != given:
            raise SamplingConfigError(f"the prompt template {given!r} is not the task's: build the task with it "
                                      "(get_task(name, data, prompt_template)), the stack prompts as its task says")

    @property
    def step_rules(self) -> StepRules:
        """The task's step rules with this stack's overrides."""
        return self.run.prompt.rules(self.task)


@dataclass(frozen=True)
class Stack:
    generator: Generator
    prm: PRM
    meter: Meter
    policy: EnergyPolicy
    searcher: Searcher
    threads: ThreadChoice  # llama.cpp's and ONNX Runtime's threads, and why


def generator_config(strategies: Sequence[Strategy], rules: StepRules, threads: int | None = None,
                     gpu_layers: int = 0, parallel: int = 1) -> GeneratorConfig:
    """Sequences and KV cells for ``parallel`` searches of the most demanding of ``strategies``
    under ``rules`` (sequences at most llama.cpp's 256: beyond, searches wait for room)."""
    return GeneratorConfig(n_ctx=max(MIN_KV_CELLS, parallel * max(kv_cells_per_search(s, rules) for s in strategies)),
                           n_seq_max=min(MAX_SEQUENCES, parallel * max(sequences_needed(s) for s in strategies)),
                           n_threads=threads, n_gpu_layers=gpu_layers)


@contextmanager
def open_stack(settings: StackSettings) -> Iterator[Stack]:
    """Build the stack; the generator and the meter are closed when the block ends."""
    run, rules = settings.run, settings.step_rules
    threads = _threads(settings)
    config = settings.generator_config or generator_config(settings.strategies, rules, threads.threads,
                                                           run.models.gpu_layers, settings.parallel)
    if settings.generator_config is None and settings.parallel > 1:
        config = replace(config, max_batch_rows=batch_rows_for(run.models.gpu_layers))
    if settings.generator_config is None:
        config = replace(config, n_ctx=max(config.n_ctx, settings.context or 0),
                         grow_to_training_context=settings.context_from_model, prompt_cache=settings.prompt_cache)

    with Generator(run.models.generator, config) as gen:
        prm = _open_prm(settings, threads.threads)

        def usage() -> Usage:
            return work_done(gen, prm)

        metering = run.meter
        cost_model = CostModel.load(metering.cost_model) if metering.cost_model else None
        with open_meter(metering.kind, usage=usage, cost_model=cost_model, measured_only=metering.measured_only) as meter:
            policy = EnergyPolicy(meter, run.budget, usage)
            chat = bool(run.prompt.with_chat(gen.vocab.has_chat_template).chat)
            if chat and not gen.vocab.has_chat_template:
                raise ModelLoadError(f"{run.models.generator} has no chat template; run it with plain prompts (--no-chat)")
            calibrated_chat = prm.available and bool(prm.bundle.generator.get("chat"))
            if prm.available and calibrated_chat != chat:
                log.warning("the PRM in %s was calibrated on %s prompts and search prompts are %s: its scores hold for "
                            "the prompts it was calibrated on (pass --%s)", prm.bundle.path,
                            "chat" if calibrated_chat else "plain", "chat" if chat else "plain",
                            "chat" if calibrated_chat else "no-chat")
            vote_model = _open_vote_model(settings, chat)
            search = SearchSettings(sampling=run.sampling, max_steps=run.max_steps, chat=chat, system=run.prompt.system,
                                    rules=rules, give_up_after=give_up_after(vote_model, settings.task.name))
            answer_model = _open_answer_model(prm, run.sampling) if prm.available else None
            searcher = Searcher(gen, prm, settings.task, search, policy=policy, answer_model=answer_model, vote_model=vote_model)
            yield Stack(gen, prm, meter, policy, searcher, threads)


@contextmanager
def open_generator(path: Path | str, config: GeneratorConfig) -> Iterator[Generator]:
    """A generator alone, as given (rollouts, layout and speed benchmarks); closed when the block ends."""
    with Generator(path, config) as gen:
        yield gen


def open_prm(path: Path | str, **options: Any) -> QuantilePRM:
    """A PRM alone, with QuantilePRM's options (its metrics, selector fits and benchmarks): no
    generator check, the caller scores what it brings."""
    return QuantilePRM(path, **options)


def prompt_provenance(settings: StackSettings, chat: bool) -> dict[str, Any]:
    """What a calibration depends on besides the generator: how it was prompted and sampled."""
    rules = settings.step_rules
    prompt = PromptSettings(chat=chat, system=settings.run.prompt.system,
                            prompt_template=getattr(settings.task, "prompt_template", None),
                            step_delimiter=rules.delimiter, max_new_tokens=rules.max_new_tokens)
    return {"task": settings.task.name, **prompt.as_record(), "temperature": settings.run.sampling.temperature}


def _open_vote_model(settings: StackSettings, chat: bool) -> VoteModel | None:
    """The generator's vote model (:func:`~edge_adapt.defaults.read_calibration`: refused for
    another generator); one fitted under other prompt or sampling settings is used with a warning
    (its promises hold for those)."""
    if not settings.run.vote_model:
        return None
    model = read_calibration(settings.run.models)
    if model is None:
        return None
    path = settings.run.models.calibration_file
    ours = prompt_provenance(settings, chat)
    differ = [f"{k}={model.provenance.get(k)!r} (now {v!r})" for k, v in ours.items() if model.provenance.get(k, v) != v]
    if differ:
        log.warning("%s was calibrated with %s: its promises hold for those settings (recalibrate to change them)",
                    path, ", ".join(differ))
    log.info("adaptive_vote reads %s (%s, default price %g)", path, model.feature, model.price)
    return model


def _open_answer_model(prm: PRM, sampling: SamplingParams) -> AnswerModel:
    """The answer model calibrated beside the PRM (selector_model.json; adaptive search reads it),
    or the documented fallback; one fitted at another temperature is used with a warning."""
    model = AnswerModel.for_prm(prm.bundle.path)
    fitted_at = model.provenance.get("temperature")
    if fitted_at is not None and abs(float(fitted_at) - sampling.temperature) > 1e-6:
        log.warning("the answer model in %s was fitted on samples at temperature %g, search samples at %g: its gains "
                    "and stopping rule hold for %g (refit it with `edge-adapt export selector ... --temperature %g`)",
                    prm.bundle.path, float(fitted_at), sampling.temperature, float(fitted_at), sampling.temperature)
    return model


def _threads(settings: StackSettings) -> ThreadChoice:
    """The user's threads, a given generator config's, or those that fit the free cores now."""
    given = settings.run.models.threads or (settings.generator_config.n_threads if settings.generator_config else None)
    return choose_threads(given, gpu_layers=settings.run.models.gpu_layers)


def _open_prm(settings: StackSettings, threads: int) -> PRM:
    """The PRM, or the no-PRM stand-in when none is given (then only strategies that read no
    score may run); a PRM calibrated for another generator is refused (or warned about)."""
    models = settings.run.models
    if models.prm is None:
        needing = [s.name for s in settings.strategies if s.needs_prm]
        if needing:
            raise SamplingConfigError(f"{', '.join(needing)} read PRM scores; {NO_PRM_HINT}")
        return NoPRM()
    prm = QuantilePRM(models.prm, threads=settings.prm_threads or threads, spin=settings.prm_spin)
    calibrated_for = str(prm.bundle.generator.get("sha256") or "")
    if not re.fullmatch(r"[0-9a-f]{64}", calibrated_for):
        log.warning("the PRM in %s does not record the sha256 of the generator it was calibrated for; it cannot be "
                    "checked against %s", prm.bundle.path, models.generator)
    elif sha256_of(models.generator) != calibrated_for:
        # its quantiles say how likely *that* generator is to succeed; they would size the search
        # and pick the answers for one it knows nothing about
        message = (f"the PRM in {prm.bundle.path} was calibrated for another generator "
                   f"({prm.bundle.generator.get('file', '?')}, sha256 {calibrated_for[:12]}...), not {models.generator}: "
                   "calibrate one for this generator (`edge-adapt export rollouts GGUF -o calib.jsonl`, then "
                   "`edge-adapt export prm BASE -c calib.jsonl -o prm`), or run without a PRM (--no-prm: majority vote)")
        if settings.other_generator == "refuse":
            raise ModelLoadError(message)
        log.warning("%s", message)
    return prm
