"""Settings that several faces share, declared once: the CLI's options, the server's flags, a
benchmark's config.json, the rollouts and a calibration's provenance all carry these objects.

The tree a stack and a benchmark run are built from: :class:`RunSettings`, made of
:class:`ModelSettings` (which models, on what), :class:`PromptSettings` (how a question is put),
:class:`~edge_adapt.generator.SamplingParams` (how tokens are drawn), the step cap,
:class:`~edge_adapt.budget.guard.Budget` (what a question may cost), :class:`MeterSettings` (how
joules are read) and whether the generator's calibration is read. A stack
(:class:`~edge_adapt.assembly.StackSettings`) and a benchmark (:class:`~edge_adapt.bench.BenchConfig`)
each hold one and add only what is theirs. Records (config.json, provenance) are written flat by
field name, as runs have always recorded them, so older runs resume."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from edge_adapt.budget.guard import Budget
from edge_adapt.errors import EdgeAdaptError
from edge_adapt.generator import SamplingParams, StepRules
from edge_adapt.tasks import Task


@dataclass(frozen=True)
class PromptSettings:
    """How a question becomes the generator's prompt and where its solution's steps end. Each
    ``None`` means "as the model and the task say": the chat template when the GGUF has one, the
    task's prompt, step delimiter and token cap."""

    chat: bool | None = None  # the generator's chat template around the prompt
    system: str | None = None  # a system message before the question (chat only)
    prompt_template: str | None = None  # file tasks: the prompt around {question}
    step_delimiter: str | None = None  # where a step ends (e.g. "\n": one line a step)
    max_new_tokens: int | None = None  # one solution's token cap

    def __post_init__(self) -> None:
        if self.max_new_tokens is not None and (isinstance(self.max_new_tokens, bool) or self.max_new_tokens < 1):
            raise EdgeAdaptError(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        if self.step_delimiter == "":
            raise EdgeAdaptError("the step delimiter must be a non-empty string (leave it unset for the task's)")

    def rules(self, task: Task) -> StepRules:
        """The task's step rules with these overrides."""
        return task.step_rules.overridden(self.step_delimiter, self.max_new_tokens)

    def with_chat(self, has_template: bool) -> PromptSettings:
        """These settings with the chat choice made for a generator that has (or lacks) a template."""
        return self if self.chat is not None else replace(self, chat=has_template)

    def or_else(self, recorded: Mapping[str, Any]) -> PromptSettings:
        """Unset fields taken from a record of these settings (a calibration's provenance)."""
        kept = PromptSettings.from_record(recorded)
        return replace(self, **{f.name: getattr(kept, f.name) for f in fields(self) if getattr(self, f.name) is None})

    def as_record(self) -> dict[str, Any]:
        """The settings as config.json and provenance records write them (flat, by field name)."""
        return asdict(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> PromptSettings:
        """The settings a record (config.json, a provenance) holds among its other keys."""
        return cls(**{f.name: record.get(f.name) for f in fields(cls)})


def calibration_path(generator: str | os.PathLike[str]) -> Path:
    """Where ``calibrate`` writes, and stacks look for, a generator's vote model unless told."""
    path = Path(generator)
    return path.with_name(path.name + ".calibration.json")


@dataclass(frozen=True)
class ModelSettings:
    """Which models run, and on what: the GGUF generator, the PRM folder (``None``: none, votes only),
    the generator's calibration file (``None``: the one beside the GGUF, when there is one), CPU
    threads (``None``: all cores) and generator layers offloaded to a GPU (-1: all)."""

    generator: Path
    prm: Path | None = None
    threads: int | None = None
    gpu_layers: int = 0
    calibration: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "generator", Path(self.generator))
        for name in ("prm", "calibration"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))
        if self.threads is not None and (isinstance(self.threads, bool) or self.threads < 1):
            raise EdgeAdaptError(f"threads must be an integer >= 1 (leave it unset for all cores), got {self.threads!r}")

    @property
    def calibration_file(self) -> Path:
        """The calibration file a stack reads: the given one, else the one beside the generator."""
        return self.calibration or calibration_path(self.generator)

    def as_record(self) -> dict[str, Any]:
        """What a run depends on (threads say how fast, not what: a resume may use others). A given
        calibration file is written only when given, so runs from before it existed resume."""
        record: dict[str, Any] = {"generator": str(self.generator), "prm": str(self.prm) if self.prm else None,
                                  "gpu_layers": self.gpu_layers}
        if self.calibration is not None:
            record["calibration"] = str(self.calibration)
        return record


@dataclass(frozen=True)
class MeterSettings:
    """How a search's joules are read: a meter kind (``None``: the best this machine has), whether
    an estimate is refused (a real meter or a MeterError), and a fitted cost model for the estimate."""

    kind: str | None = None
    measured_only: bool = False
    cost_model: Path | None = None

    def __post_init__(self) -> None:
        if self.cost_model is not None:
            object.__setattr__(self, "cost_model", Path(self.cost_model))

    def as_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"meter": self.kind, "cost_model": str(self.cost_model) if self.cost_model else None}
        if self.measured_only:  # written only when set: a run folder without the field still resumes
            record["measured_only"] = True
        return record


SAMPLING_DEFAULTS = SamplingParams()


@dataclass(frozen=True)
class RunSettings:
    """What every search of a run is built with (see the module's docstring)."""

    models: ModelSettings  # models.prm None: only strategies that read no PRM score run
    prompt: PromptSettings = PromptSettings()  # its prompt_template is the task's to hold (get_task)
    sampling: SamplingParams = field(default_factory=SamplingParams)  # its own default temperature, 0.7
    max_steps: int = 32
    budget: Budget = field(default_factory=Budget)
    meter: MeterSettings = MeterSettings()
    vote_model: bool = True  # adaptive_vote reads the generator's calibration file when it has one; False: ignore it

    def as_record(self) -> dict[str, Any]:
        """Flat by field name, as config.json has always held them."""
        return {**self.models.as_record(), **sampling_record(self.sampling), "max_steps": self.max_steps,
                "budget": budget_record(self.budget), **self.meter.as_record(), **self.prompt.as_record(),
                "vote_model": self.vote_model}


def run_settings(run: RunSettings | ModelSettings) -> RunSettings:
    """A run's settings; models alone stand for a run with every other default."""
    return run if isinstance(run, RunSettings) else RunSettings(run)


def sampling_record(sampling: SamplingParams) -> dict[str, Any]:
    """The temperature always; the other knobs where they differ from the defaults."""
    record = asdict(sampling)
    return {k: v for k, v in record.items() if k == "temperature" or v != getattr(SAMPLING_DEFAULTS, k)}


def budget_record(budget: Budget) -> dict[str, float]:
    """The limits that are set (empty: unlimited), and the pacing knobs where not the defaults."""
    defaults = Budget()
    return {k: v for k, v in asdict(budget).items() if v is not None and v != getattr(defaults, k)}
