"""Options several commands share: which models, which budgets, which meter, how questions are
put. Each group reaches the command as one object of the settings tree (:mod:`edge_adapt.settings`)."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edge_adapt.budget.guard import Budget
from edge_adapt.energy import METER_KINDS
from edge_adapt.errors import EdgeAdaptError
from edge_adapt.models import load_default_models
from edge_adapt.settings import MeterSettings, ModelSettings, PromptSettings


def model_options(f: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed([
        click.option("-m", "--generator", "generator_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="GGUF generator (default: the shipped one)."),
        click.option("--prm", "prm_path", type=click.Path(exists=True, file_okay=False, path_type=Path),
                     help="Exported PRM folder (default: the shipped one)."),
        click.option("--models", type=click.Path(exists=True, file_okay=False, path_type=Path),
                     help="Folder of default models (default: models/ or $EDGE_ADAPT_MODELS)."),
        click.option("--threads", type=click.IntRange(min=1), help="CPU threads (default: the whole cores free at start)."),
        click.option("--gpu-layers", type=int, default=0, show_default=True,
                     help="Generator layers to offload to a GPU (-1: all)."),
    ]):
        f = option(f)
    return f


calibration_option = click.option(
    "--calibration", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The generator's calibration file, where `edge-adapt calibrate -o` wrote it (default: GENERATOR.calibration.json "
         "beside the GGUF, when there is one).")


def resolve_models(generator_path: Path | None, prm_path: Path | None, models: Path | None, no_prm: bool = False, *,
                   threads: int | None = None, gpu_layers: int = 0, calibration: Path | None = None) -> ModelSettings:
    """The models :func:`model_options` asked for: given ones, else the shipped defaults (no PRM
    with ``no_prm``)."""
    if no_prm and prm_path is not None:
        raise click.UsageError("--no-prm and --prm contradict each other; give one")
    if generator_path is None or (prm_path is None and not no_prm):
        defaults = load_default_models(models)
        generator_path = generator_path or defaults.generator
        prm_path = None if no_prm else prm_path or defaults.prm
    return ModelSettings(generator_path, prm_path, threads, gpu_layers, calibration)


no_prm_option = click.option(
    "--no-prm", is_flag=True,
    help="Run without a PRM: strategies that read no score (votes, adaptive_vote, consistency, esc, cisc, deepconf), "
         "labelled as such.")


def budget_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The budget's and the meter's options, handed to the command as ``budget: Budget`` and
    ``meter: MeterSettings``."""

    @functools.wraps(f)
    def with_budget(*args: Any, **kwargs: Any) -> Any:
        limits = {name: kwargs.pop(name) for name in ("energy_j", "latency_s", "tokens", "power_w")}
        try:
            kwargs["budget"] = Budget(**limits)
        except EdgeAdaptError as exc:
            raise click.UsageError(str(exc)) from None
        kwargs["meter"] = MeterSettings(kwargs.pop("meter"), cost_model=kwargs.pop("cost_model"))
        return f(*args, **kwargs)

    command: Callable[..., Any] = with_budget
    for option in reversed([
        click.option("--energy", "energy_j", type=FiniteFloat(min=0, min_open=True), help="Energy budget per question (J)."),
        click.option("--latency", "latency_s", type=FiniteFloat(min=0, min_open=True), help="Latency budget per question (s)."),
        click.option("--tokens", "tokens", type=click.IntRange(min=1), help="Generated-token budget per question."),
        click.option("--power", "power_w", type=FiniteFloat(min=0, min_open=True),
                     help="Power cap (W, average over a 2 s window), enforced by pacing."),
        click.option("--meter", type=click.Choice(METER_KINDS), help="Energy meter (default: the best this machine has)."),
        click.option("--cost-model", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="Fitted cost model for the estimate (from `edge-adapt energy fit`)."),
    ]):
        command = option(command)
    return command


class FiniteFloat(click.FloatRange):
    """A float option in a range that also refuses nan and inf (which compare false with any bound)."""

    name = "finite float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)


def prompt_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The prompt settings' options, handed to the command as one ``prompt: PromptSettings``."""

    @functools.wraps(f)
    def with_prompt(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name in PROMPT_FIELDS}
        try:
            kwargs["prompt"] = PromptSettings(**values)
        except EdgeAdaptError as exc:
            raise click.UsageError(str(exc)) from None
        return f(*args, **kwargs)

    command: Callable[..., Any] = with_prompt
    for option in reversed([
        click.option("--chat/--no-chat", default=None,
                     help="Wrap prompts in the generator's chat template (default: when the GGUF has one)."),
        click.option("--system", help="A system message before the question (with --chat)."),
        click.option("--prompt-template", callback=lambda ctx, param, value: unescape(value) if value else None,
                     help="The prompt around {question} for --task gsm8k/math (default: the task's, asking for "
                          "'The answer is N.' or \\boxed{})."),
        click.option("--step-delimiter", callback=lambda ctx, param, value: unescape(value) if value else None,
                     help="Where a step ends, instead of the task's ('\\n\\n': a blank line; '\\n': every line)."),
        click.option("--max-new-tokens", type=click.IntRange(min=1, max=32768),
                     help="One solution's token cap, instead of the task's."),
    ]):
        command = option(command)
    return command


PROMPT_FIELDS = tuple(f.name for f in dataclasses.fields(PromptSettings))


def unescape(text: str) -> str:
    """Let shell users write '\\n' and '\\t' for newline and tab."""
    return text.replace("\\n", "\n").replace("\\t", "\t")


def parallel_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--parallel K``: questions searched at once in this process, their decodes batched together."""
    return click.option("--parallel", type=click.IntRange(1, 64),
                        help="Questions searched at once, their decodes and PRM runs batched together "
                             "[default: 16 with GPU offload, 8 on a CPU; recorded in environment.json].")(f)


def cluster_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--ray`` and its settings (turned into ClusterSettings by :func:`cluster_settings`)."""
    for option in reversed([
        click.option("--ray", "ray", is_flag=True,
                     help="Fan the questions out over a Ray cluster ($RAY_ADDRESS or --ray-address; else a local instance)."),
        click.option("--ray-address", help="The cluster to join (default: $RAY_ADDRESS, else start a local one)."),
        click.option("--ray-workers", type=click.IntRange(min=1), help="Workers (default: the cluster's CPUs / per worker)."),
        click.option("--ray-cpus-per-worker", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Cores each worker holds (and runs its threads on)."),
        click.option("--ray-gpus-per-worker", type=FiniteFloat(min=0), default=0.0, show_default=True,
                     help="GPUs each worker holds (1: one worker per GPU; with --gpu-layers -1)."),
    ]):
        f = option(f)
    return f


def cluster_settings(ray: bool, address: str | None, workers: int | None, cpus: int, gpus: float) -> Any:
    """ClusterSettings for ``--ray`` (None without it); says which extra to install when Ray is missing."""
    if not ray:
        if address or workers:
            raise click.UsageError("--ray-address and --ray-workers need --ray")
        return None
    from edge_adapt.cluster import ClusterSettings, require_ray

    require_ray()
    return ClusterSettings(address=address, workers=workers, cpus_per_worker=cpus, gpus_per_worker=gpus)
