"""``edge-adapt export rollouts``: Monte-Carlo success rates of a generator's reasoning prefixes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.table import Table

from edge_adapt.cli.console import console, err_console
from edge_adapt.cli.options import FiniteFloat, cluster_options, cluster_settings, prompt_options
from edge_adapt.settings import PromptSettings
from edge_adapt.tasks import TASK_NAMES, get_task
from edge_adapt_tools.cli.loading import load_tool


@click.command("rollouts")
@click.argument("generator", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Calibration JSONL (appended to; an interrupted run resumes).")
@click.option("--task", "task_name", type=click.Choice(TASK_NAMES), default="arithmetic", show_default=True)
@click.option("--data", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Your GSM8K- or MATH-style JSONL (a training split!) for --task gsm8k/math.")
@click.option("--split", default="calibration", show_default=True, help="Which split of the default task to roll out.")
@click.option("--per-level", type=click.IntRange(min=1), default=40, show_default=True,
              help="Default task: questions per difficulty level. JSONL tasks: the first this-many x 6 questions.")
@click.option("-n", "--solutions", type=click.IntRange(min=1), default=8, show_default=True,
              help="N: full solutions per question.")
@click.option("-m", "--continuations", type=click.IntRange(min=1), default=8, show_default=True,
              help="M: continuations per partial prefix.")
@click.option("--keep-continuations/--count-continuations", default=False, show_default=True,
              help="Also write each distinct continuation as a graded whole solution (extra PRM training labels), "
                   "or only count them into their prefix's rate.")
@click.option("--temperature", type=FiniteFloat(min=0), default=0.7, show_default=True)
@click.option("--top-p", type=FiniteFloat(0, 1, min_open=True), default=1.0, show_default=True)
@click.option("--top-k", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--n-ctx", type=click.IntRange(min=256), default=8192, show_default=True,
              help="KV cells shared by a question's tree.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads (default: all).")
@click.option("--gpu-layers", type=int, default=0, show_default=True, help="Layers to offload (-1: all; needs a GPU build).")
@prompt_options
@cluster_options
def rollouts_cmd(generator: Path, out: Path, task_name: str, data: Path | None, split: str, per_level: int, solutions: int,
                 continuations: int,
                 keep_continuations: bool, temperature: float, top_p: float, top_k: int, seed: int, n_ctx: int,
                 threads: int | None,
                 gpu_layers: int, prompt: PromptSettings, ray: bool, ray_address: str | None, ray_workers: int | None,
                 ray_cpus_per_worker: int,
                 ray_gpus_per_worker: float) -> None:
    """Build a calibration set: Monte-Carlo success rates of reasoning prefixes of GENERATOR.

    For each question: N full solutions (whose success rate is the empty prefix's), every
    distinct partial prefix continued M times, all graded by the task's checker. Records are
    appended per question; rerunning the same command resumes an interrupted run.

    \b
    Examples:
      edge-adapt export rollouts gen-Q4_K_M.gguf -o calib.jsonl --per-level 40 -n 8 -m 8
      edge-adapt export rollouts qwen-Q4_K_M.gguf -o calib.jsonl --task gsm8k --data train.jsonl --per-level 50
      RAY_ADDRESS=auto edge-adapt export rollouts qwen-Q4_K_M.gguf -o calib.jsonl --ray --ray-gpus-per-worker 1 --gpu-layers -1

    With --ray the questions go to Ray workers (each loads the GGUF, checked by sha256) and this
    process appends each question's records as they arrive: the same records as a local run
    (per-question seeds), the same resume; a question whose worker died is retried on another.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from edge_adapt.generator import GeneratorConfig, SamplingParams
    rollouts = load_tool("edge_adapt_tools.prm.rollouts")

    if task_name in ("gsm8k", "math") and data is None:
        raise click.UsageError(f"--task {task_name} reads your JSONL file: pass --data PATH")
    cluster = cluster_settings(ray, ray_address, ray_workers, ray_cpus_per_worker, ray_gpus_per_worker)
    if cluster is not None and threads is None:
        threads = ray_cpus_per_worker  # each worker runs on the cores it holds
    task = get_task(task_name, data, prompt.prompt_template)
    problems = task.calibration_problems(split, per_level, seed=seed)
    settings = rollouts.RolloutSettings(
        n_solutions=solutions, n_continuations=continuations, record_continuations=keep_continuations,
        sampling=SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k), seed=seed, prompt=prompt,
    )
    config = GeneratorConfig(n_ctx=n_ctx, n_seq_max=256, n_threads=threads, n_gpu_layers=gpu_layers)
    columns = (TextColumn("rollouts"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
               TimeRemainingColumn())
    with Progress(*columns, console=err_console) as bar:
        job = bar.add_task("rollouts", total=len(problems))
        report = rollouts.build_calibration_set(
            generator, task, problems, out, settings, config,
            progress=lambda problem, done, total: bar.update(job, completed=done), cluster=cluster,
        )
    _print_report(report, out)


def _print_report(report: Any, out: Path) -> None:
    """What the rollouts wrote: their totals, the cluster's workers, and the success rate by level."""
    from edge_adapt_tools.prm.calibration_data import read_records

    rate = report.generated_tokens / report.wall_s if report.wall_s else 0.0
    console.print(
        f"[bold green]wrote[/] {out}: {report.questions} questions rolled out ({report.resumed} already there), "
        f"{report.records} records, {report.generated_tokens:,} tokens generated and {report.prompt_tokens:,} "
        f"evaluated as prompt in {report.wall_s:.1f}s ({rate:,.0f} generated tokens/s)"
    )
    if report.cluster is not None:
        for w in report.cluster["workers"]:
            console.print(f"{w['worker']} on {w['host']}: {w['questions']} questions, {w['questions_per_hour'] or 0:,.0f} per "
                          f"hour"
                          f"{' (died)' if w['died'] else ''}", highlight=False)
        for retry in report.cluster["retries"]:
            console.print(f"[yellow]retried[/] {retry['question']} after {retry['worker']} died (attempt {retry['attempt']})")
    every = read_records(out)
    kept = sum(r.origin == "continuation" for r in every)
    if kept:
        console.print(f"{kept} distinct continuations kept as graded whole solutions "
                      f"({sum(r.origin == 'continuation' and r.n_correct > 0 for r in every)} of them right)")
    records = [r for r in every if not r.prefix]
    table = Table(title="Question-level success rate (empty prefix) by level", title_justify="left")
    for col in ("level", "questions", "mean success", "all wrong", "all right"):
        table.add_column(col, justify="right")
    for level in sorted({r.level for r in records}, key=lambda v: (v is None, v)):
        rs = [r for r in records if r.level == level]
        table.add_row(str(level), str(len(rs)), f"{sum(r.success_rate for r in rs) / len(rs):.0%}",
                      f"{sum(r.n_correct == 0 for r in rs) / len(rs):.0%}",
                      f"{sum(r.n_correct == r.n_rollouts for r in rs) / len(rs):.0%}")
    console.print(table)
