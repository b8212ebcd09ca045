"""``edge-adapt calibrate``: fit a generator's vote model on your own questions (no PRM, no torch)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from edge_adapt.bench.calibrate import Calibration, draw_samples, fit_and_judge, sampling_config
from edge_adapt.cli.console import console, err_console
from edge_adapt.cli.options import FiniteFloat, cluster_options, cluster_settings, parallel_option, prompt_options
from edge_adapt.defaults import choose
from edge_adapt.settings import ModelSettings, PromptSettings, calibration_path
from edge_adapt.tasks import TASK_NAMES


@click.command("calibrate")
@click.option("-m", "--generator", "generator_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="The GGUF generator to calibrate.")
@click.option("--task", "task_name", type=click.Choice(TASK_NAMES), show_default="gsm8k")
@click.option("--data", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Your questions (JSONL; --task gsm8k/math).")
@click.option("--limit", type=click.IntRange(min=1), help="Use this many questions, spread evenly over the levels.")
@click.option("--question-seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="The default task: which draw of its calibration split (never its test split).")
@click.option("-n", "--samples", type=click.IntRange(2, 64), default=16, show_default=True, help="Samples per question.")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Where the vote model goes (default: GENERATOR.calibration.json, the only place solve, bench and serve "
                   "look for it).")
@click.option("-w", "--work", type=click.Path(file_okay=False, path_type=Path),
              help="The samples' run folder (default: OUT's name + .samples); rerunning resumes it.")
@click.option("--held-out", type=FiniteFloat(min=0.05, max=0.5), default=0.2, show_default=True,
              help="Fraction of the questions kept out of the fit and used to judge it.")
@click.option("--prm", "prm_path", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A PRM calibrated for this generator: its scores join the evidence if they predict better on held-out folds.")
@click.option("--temperature", type=FiniteFloat(min=0, min_open=True), default=0.7, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads (default: the whole cores free at start).")
@click.option("--gpu-layers", type=int, default=0, show_default=True, help="Generator layers to offload to a GPU (-1: all).")
@prompt_options
@cluster_options
@parallel_option
def calibrate_cmd(generator_path: Path, task_name: str, data: Path | None, limit: int | None, question_seed: int,
                  samples: int, out: Path | None, work: Path | None,
                  held_out: float, prm_path: Path | None, temperature: float, seed: int, threads: int | None, gpu_layers: int,
                  prompt: PromptSettings, ray: bool, ray_address: str | None, ray_workers: int | None,
                  ray_cpus_per_worker: int, ray_gpus_per_worker: float, parallel: int | None) -> None:
    """Sample N answers per question with your generator, prompt and settings, fit the vote model
    adaptive search reads (adaptive_vote), and show on held-out questions what it saves.

    \b
    Examples:
      edge-adapt calibrate -m SmolLM2-135M-Instruct.Q4_1.gguf --data questions.jsonl --step-delimiter '\\n' --max-new-tokens 128
      edge-adapt solve "What is 7*8?" -m SmolLM2-135M-Instruct.Q4_1.gguf     # finds the calibration beside the GGUF

    Interrupt at any time and rerun the same command: sampling resumes where it stopped.
    """
    task_name = choose("calibrate", ModelSettings(generator_path, prm_path), own_generator=True, task=task_name).task
    if task_name in ("gsm8k", "math") and data is None:
        raise click.UsageError(f"--task {task_name} reads your JSONL file: pass --data PATH")
    cluster = cluster_settings(ray, ray_address, ray_workers, ray_cpus_per_worker, ray_gpus_per_worker)
    if cluster is not None and parallel is not None:
        raise click.UsageError("--parallel runs questions at once in this process; with --ray each worker takes one at a time")
    out = out or calibration_path(generator_path)
    work = work or out.with_name(out.name + ".samples")
    if cluster is not None and threads is None:
        threads = ray_cpus_per_worker  # each worker runs on the cores it holds
    models = ModelSettings(generator_path, prm_path, threads, gpu_layers)
    config = sampling_config(models, task_name, data, samples=samples, limit=limit, question_seed=question_seed,
                             temperature=temperature, seed=seed, prompt=prompt)
    started = time.monotonic()
    said: dict[str, Any] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
               TimeRemainingColumn())
    with Progress(*columns, console=err_console) as progress:
        bar = progress.add_task(f"sampling {samples} per question", total=None)

        def update(done: int, total: int, record: dict[str, Any] | None) -> None:
            progress.update(bar, completed=done, total=total)
            if record is None:
                said.setdefault("resumed", done)
            elif "estimate" not in said:  # the first question measured: the time up front
                per_question = time.monotonic() - started
                said["estimate"] = per_question * (total - done)
                err_console.print(f"{total - done} questions left x {samples} samples: about "
                                  f"{said['estimate'] / 60:.0f} min at this question's pace")

        folder = draw_samples(config, work, update, cluster, parallel)
    console.print(f"fitting on the samples in {folder.path} ...")
    result = fit_and_judge(folder, config, out, held_out=held_out, seed=seed)
    _print(result)


def _print(c: Calibration) -> None:
    model, j, report = c.model, c.judgement, c.model.report
    console.print(f"[bold]vote model[/] -> {c.path}  (fitted on {c.fitted_on} questions, judged on {c.held_out} held out)")
    losses = ", ".join(f"{k} {v:.4f}" for k, v in report["feature_log_loss"].items())
    console.print(f"evidence: {model.feature} (held-out-fold log-loss: {losses})")
    declined = report.get("prm_declined")
    if declined is not None:
        w, wo = declined["with_prm"], declined["without"]
        console.print(f"the PRM's median predicted better, but scoring costs {declined['prm_work_per_sample']:g} generated-token "
                      f"equivalents a sample: out of fold the vote with it ({w['accuracy']:.1f}% at {w['tokens']:.0f} tokens, "
                      f"price {w['price']:g}) is worth less than without it ({wo['accuracy']:.1f}% at {wo['tokens']:.0f} tokens, "
                      f"price {wo['price']:g}), so the vote reads {model.feature}")
    own, cost = model.without_prm(), report.get("prm_cost")
    if model.needs_prm and own is not None and cost is not None:
        console.print(f"reading the PRM costs {cost['prm_tokens_per_sample']:g} PRM tokens a sample "
                      f"({100 * cost['prm_share_of_wall']:.0f}% of the sampling time); a stack without it (--no-prm) "
                      f"runs the generator-only table (evidence: {own.feature})")
    console.print(f"default price: {model.price:g} points per 1,000 tokens ({report['chosen_on']}; the cheapest within "
                  f"{report['tolerance_points']:g} points of the best fixed vote there)")
    if "give_up_after" in report:
        k = report["give_up_after"]
        console.print(f"a search gives up after {k} samples without an extractable answer (that stop lost "
                      f"{100 * report['give_up_lost'][str(k)]:.1f}% of the calibration questions)")
    table = Table(title=f"held-out questions ({c.held_out}): fixed votes and the adaptive vote, replayed from the same samples")
    for col in ("strategy", "accuracy %", "tokens/q", "samples/q"):
        table.add_column(col, justify="left" if col == "strategy" else "right")
    for n, r in j.fixed.items():
        table.add_row(f"majority:n={n}", f"{r.accuracy:.1f}", f"{r.tokens:.0f}", f"{r.samples:.1f}")
    for price, r in j.adaptive.items():
        mark = " (default)" if price == model.price else ""
        table.add_row(f"adaptive_vote:price={price:g}{mark}", f"{r.accuracy:.1f}", f"{r.tokens:.0f}", f"{r.samples:.1f}")
    console.print(table)
    chosen = j.adaptive[model.price]
    if chosen.per_level:
        console.print("per level at the default price: " + "; ".join(
            f"{lv}: {a:.0f}% {t:.0f} tok {s:.1f} samples" for lv, (a, t, s) in chosen.per_level.items()))
    rel = Table(title="does the table keep its promises? (held out, at the default price)")
    for col in ("P(right) promised", "stops", "promised %", "measured %"):
        rel.add_column(col, justify="right")
    for b, n, p, m in j.reliability:
        rel.add_row(b, str(n), f"{p:.1f}", f"{m:.1f}")
    console.print(rel)
    lo, mid, hi = j.questions_behind
    console.print(f"calibration questions behind each stop: min {lo}, median {mid}, max {hi}")
