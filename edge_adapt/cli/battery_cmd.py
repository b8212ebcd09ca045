"""`edge-adapt battery`: one energy budget for a whole set of questions, paced, resumable."""

from __future__ import annotations

from pathlib import Path

import click

from edge_adapt.bench import BenchConfig
from edge_adapt.bench.battery import run_battery
from edge_adapt.cli.console import console, err_console
from edge_adapt.cli.options import (
    FiniteFloat,
    calibration_option,
    model_options,
    no_prm_option,
    parallel_option,
    prompt_options,
    resolve_models,
)
from edge_adapt.defaults import choose, runs_without_prm
from edge_adapt.energy import METER_KINDS
from edge_adapt.generator import SamplingParams
from edge_adapt.settings import MeterSettings, PromptSettings, RunSettings
from edge_adapt.tasks import TASK_NAMES


@click.command("battery")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Run folder; rerunning with the same options resumes it.")
@click.option("--joules", "total_joules", type=FiniteFloat(min=0, min_open=True), required=True,
              help="The battery: joules for all the questions together.")
@click.option("--task", "task_name", type=click.Choice(TASK_NAMES), show_default="default")
@click.option("--data", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="JSONL file for --task gsm8k/math.")
@click.option("--limit", type=click.IntRange(min=1), help="Use this many questions, spread evenly over the split.")
@click.option("--question-seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="The default task: another draw of the split's questions.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--temperature", type=FiniteFloat(min=0), default=0.7, show_default=True)
@click.option("--price", "start_price", type=FiniteFloat(min=0.25, max=1024), default=8.0, show_default=True,
              help="Adaptive search's price to start from; the pacer moves it.")
@click.option("--no-even", is_flag=True, help="Skip the even-spending vote beside the paced run.")
@click.option("--meter", type=click.Choice(METER_KINDS), help="Energy meter (default: the best this machine has).")
@model_options
@no_prm_option
@calibration_option
@prompt_options
@parallel_option
def battery_cmd(out: Path, total_joules: float, task_name: str, data: Path | None, limit: int | None, question_seed: int,
                seed: int, temperature: float, start_price: float, no_even: bool, meter: str | None,
                generator_path: Path | None, prm_path: Path | None, models: Path | None, threads: int | None, gpu_layers: int,
                no_prm: bool, calibration: Path | None, prompt: PromptSettings, parallel: int | None) -> None:
    """Spend one battery (--joules) over a set of questions: adaptive search with its price paced so
    that the battery lasts to the last question, beside what even spending buys.

    Each question is capped by its share of what is left, so the total is never overspent; one
    the rest cannot answer is recorded as cut. RUN/paced holds a record per question (resumable),
    RUN/even the fixed vote even spending affords, RUN/battery.json the comparison.

    \b
    Examples:
      edge-adapt battery -o runs/battery --joules 300 --limit 100
      edge-adapt battery -o runs/smol-battery --joules 2000 -m smol.gguf --task gsm8k --data q.jsonl
    """
    chosen = resolve_models(generator_path, prm_path, models,
                            runs_without_prm(no_prm, generator_path is not None, prm_path is not None),
                            threads=threads, gpu_layers=gpu_layers, calibration=calibration)
    task_name = choose("battery", chosen, own_generator=generator_path is not None, task=task_name).task
    if task_name in ("gsm8k", "math") and data is None:
        raise click.UsageError(f"--task {task_name} reads your JSONL file: pass --data PATH")
    run = RunSettings(chosen, prompt, SamplingParams(temperature=temperature), meter=MeterSettings(meter))
    config = BenchConfig(run, task=task_name, data=str(data) if data else None, limit=limit, seed=seed,
                         question_seed=question_seed)
    with err_console.status("pacing the battery...") as status:
        report = run_battery(config, total_joules, out, parallel=parallel, even=not no_even, start_price=start_price,
                             progress=lambda done, total: status.update(f"pacing the battery: {done}/{total} questions"))
    console.print(f"[bold]{report.strategy}[/] paced to {report.total_joules:g} J over {report.questions} questions: "
                  f"{report.correct} right ({100 * report.correct / report.questions:.1f}%), {report.spent_joules:.1f} J "
                  f"spent ({report.energy_source}), {report.samples} samples, {report.cut} cut; price "
                  f"{report.first_price:g} -> {report.last_price:.3g}")
    if report.even_correct is not None:
        console.print(f"even spending, majority of {report.even_samples} each: {report.even_correct} right "
                      f"({100 * report.even_correct / report.questions:.1f}%), {report.even_joules:.1f} J")
    elif not no_even:
        console.print("even spending: the battery affords less than one sample per question at the paced run's joules "
                      "per sample")
    console.print(f"-> {out / 'battery.json'}")
