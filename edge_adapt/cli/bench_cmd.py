"""``edge-adapt bench`` and ``edge-adapt report``: benchmark runs and their summaries."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from edge_adapt.bench import (
    BenchConfig,
    RunFolder,
    run_bench,
    summarise,
    write_plots,
    write_summary,
)
from edge_adapt.bench.paired import neighbours
from edge_adapt.bench.summary import COLUMNS, pareto_lines, savings, table_rows
from edge_adapt.budget.guard import Budget
from edge_adapt.cli.console import console, err_console
from edge_adapt.cli.options import (
    FiniteFloat,
    budget_options,
    calibration_option,
    cluster_options,
    cluster_settings,
    model_options,
    no_prm_option,
    parallel_option,
    prompt_options,
    resolve_models,
)
from edge_adapt.defaults import choose, runs_without_prm, unservable
from edge_adapt.files import atomic_write_text
from edge_adapt.generator import SamplingParams
from edge_adapt.search.spec import parse_spec
from edge_adapt.settings import MeterSettings, PromptSettings, RunSettings
from edge_adapt.tasks import TASK_NAMES


@click.command()
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Run folder; rerunning with the same options resumes it.")
@click.option("-s", "--strategy", "strategies", multiple=True, metavar="SPEC",
              help="Strategy spec, repeatable (default: the full matrix). E.g. best_of_n:n=16, ias_best_of_n:n_max=32, "
                   "beam:n=16,width=4, ias_beam:k_max=4,m_max=4, majority:n=16, weighted:n=16+es.")
@click.option("--task", "task_name", type=click.Choice(TASK_NAMES), show_default="default")
@click.option("--data", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="JSONL file for --task gsm8k/math.")
@click.option("--limit", type=click.IntRange(min=1), help="Use this many questions, spread evenly over the split.")
@click.option("--split", type=click.Choice(("test", "calibration")), default="test", show_default=True,
              help="The default task's split (choose settings on calibration, report on test).")
@click.option("--question-seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="The default task: another draw of the split's questions (0: the model card's).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--temperature", type=FiniteFloat(min=0), default=0.7, show_default=True)
@model_options
@no_prm_option
@calibration_option
@prompt_options
@budget_options
@cluster_options
@parallel_option
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
def bench(out: Path, strategies: tuple[str, ...], task_name: str, data: Path | None, limit: int | None, split: str,
          question_seed: int, seed: int,
          temperature: float, generator_path: Path | None, prm_path: Path | None, models: Path | None, threads: int | None,
          gpu_layers: int, no_prm: bool, calibration: Path | None, prompt: PromptSettings, budget: Budget, meter: MeterSettings,
          ray: bool, ray_address: str | None,
          ray_workers: int | None, ray_cpus_per_worker: int, ray_gpus_per_worker: float, parallel: int | None,
          no_plots: bool) -> None:
    """Run strategies x questions, one JSONL record each, then print and save the summary.

    Records are appended as they finish; interrupt with Ctrl-C (or lose power) and rerun the
    same command to resume without redoing or losing a record. The folder gets config.json,
    environment.json, records.jsonl, summary.md/.csv/.json and PNG plots.

    \b
    Examples:
      edge-adapt bench -o runs/default --limit 60
      edge-adapt bench -o runs/bo -s best_of_n:n=16 -s ias_best_of_n:n_max=32 --energy 20
      edge-adapt bench -o runs/gsm --task gsm8k --data gsm8k/test.jsonl --generator qwen.gguf --prm ./prm
      RAY_ADDRESS=auto edge-adapt bench -o runs/sweep --ray --ray-cpus-per-worker 4

    With --ray the questions go to Ray workers (each holding the models, checked by sha256) and
    this process appends their records as they arrive: the same records as a local run, and the
    same resume. environment.json gets each worker's throughput and any retried question.
    Without it, --parallel questions run at once here, their decodes batched together.
    """
    for spec in strategies:
        try:
            parse_spec(spec)
        except Exception as exc:
            raise click.BadParameter(str(exc), param_hint="--strategy") from None
    chosen = resolve_models(generator_path, prm_path, models,
                            runs_without_prm(no_prm, generator_path is not None, prm_path is not None),
                            threads=threads, gpu_layers=gpu_layers, calibration=calibration)
    defaults = choose("bench", chosen, own_generator=generator_path is not None, task=task_name,
                      strategies=tuple(parse_spec(s).name for s in strategies))
    for spec in strategies:
        if (problem := unservable(spec, chosen, flag="--strategy")) is not None:
            raise click.UsageError(problem)
    if defaults.task in ("gsm8k", "math") and data is None:
        raise click.UsageError(f"--task {defaults.task} reads your JSONL file: pass --data PATH")
    cluster = cluster_settings(ray, ray_address, ray_workers, ray_cpus_per_worker, ray_gpus_per_worker)
    if cluster is not None and parallel is not None:
        raise click.UsageError("--parallel runs questions at once in this process; with --ray each worker takes one at a time")
    if cluster is not None and threads is None:
        threads = ray_cpus_per_worker  # each worker runs on the cores it holds
    run = RunSettings(replace(chosen, threads=threads), prompt, SamplingParams(temperature=temperature), budget=budget,
                      meter=meter)
    config = BenchConfig(run, task=defaults.task, data=str(data) if data else None, strategies=defaults.strategies,
                         limit=limit, seed=seed, split=split, question_seed=question_seed)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
               TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=False) as progress:
        bar = progress.add_task("bench", total=None)

        def update(done: int, total: int, record: dict | None) -> None:
            progress.update(bar, completed=done, total=total,
                            description=f"bench ({record['strategy'] if record else 'resuming'})")

        folder = run_bench(config, out, update, cluster=cluster, parallel=parallel)
    _report(folder, plots=not no_plots)


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
def report(run_dir: Path, no_plots: bool) -> None:
    """Rebuild RUN_DIR's tables (terminal, summary.md, summary.csv) and plots from its records alone.

    \b
    Example:
      edge-adapt report runs/default
    """
    _report(RunFolder(run_dir), plots=not no_plots)


def _report(folder: RunFolder, plots: bool) -> None:
    config = folder.config()
    records = folder.records()
    if not records:
        raise click.ClickException(f"{folder.path}: no records yet; run `edge-adapt bench -o {folder.path}` first")
    summaries = summarise(records)
    questions = len({r["question_id"] for r in records})
    title = f"{config.get('task', '?')} task, {questions} questions, seed {config.get('seed', '?')}"
    table = Table(title=title)
    for col in COLUMNS:
        table.add_column(col, justify="left" if col == "strategy" else "right")
    for row in table_rows(summaries):
        table.add_row(*row)
    console.print(table)
    sources = {s.energy_source for s in summaries if s.energy_source}
    if sources:
        console.print(f"energy: {', '.join(sorted(sources))}")
    comparisons = [p.line() for p in neighbours(records, summaries)]
    for line in [*pareto_lines(summaries), *savings(summaries), *comparisons]:
        console.print(line, highlight=False)
    if comparisons:
        atomic_write_text(folder.path / "paired.md", "# Adaptive strategies against their fixed neighbours (paired)\n\n"
                          + "".join(f"- {line}\n" for line in comparisons))
    written = write_summary(folder.path, summaries, title)
    if plots:
        written += write_plots(folder.path, records, summaries)
    console.print("wrote " + ", ".join(str(p) for p in written))
