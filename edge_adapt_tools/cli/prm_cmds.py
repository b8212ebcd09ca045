"""``edge-adapt export rollouts``, ``export prm`` and ``export selector``: calibrating a PRM for a generator."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from edge_adapt.cli.console import console, err_console, human_bytes
from edge_adapt.cli.options import FiniteFloat, cluster_options, cluster_settings, prompt_options, unescape
from edge_adapt.settings import PromptSettings
from edge_adapt.tasks import TASK_NAMES, get_task
from edge_adapt_tools.cli.loading import load_tool

DEFAULT_LORA_RANK = 8
LAPTOP_FULL_TUNE_LIMIT = 50_000_000  # backbone parameters above which export prm trains LoRA by default


@click.command("rollouts")
@click.argument("generator", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Calibration JSONL (appended to; an interrupted run resumes).")
@click.option("--task", "task_name", type=click.Choice(TASK_NAMES), default="arithmetic", show_default=True)
@click.option("--data", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Your GSM8K- or MATH-style JSONL (a training split!) for --task gsm8k/math.")
@click.option("--split", default="calibration", show_default=True, help="Which split of the default task to roll out.")
@click.option("--per-level", type=click.IntRange(min=1), default=40, show_default=True,
              help="Default task: questions per difficulty level. JSONL tasks: the first this-many x 6 questions.")
@click.option("-n", "--solutions", type=click.IntRange(min=1), default=8, show_default=True, help="N: full solutions per question.")
@click.option("-m", "--continuations", type=click.IntRange(min=1), default=8, show_default=True, help="M: continuations per partial prefix.")
@click.option("--keep-continuations/--count-continuations", default=False, show_default=True,
              help="Also write each distinct continuation as a graded whole solution (extra PRM training labels), "
                   "or only count them into their prefix's rate.")
@click.option("--temperature", type=FiniteFloat(min=0), default=0.7, show_default=True)
@click.option("--top-p", type=FiniteFloat(0, 1, min_open=True), default=1.0, show_default=True)
@click.option("--top-k", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--n-ctx", type=click.IntRange(min=256), default=8192, show_default=True, help="KV cells shared by a question's tree.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads (default: all).")
@click.option("--gpu-layers", type=int, default=0, show_default=True, help="Layers to offload (-1: all; needs a GPU build).")
@prompt_options
@cluster_options
def rollouts_cmd(generator: Path, out: Path, task_name: str, data: Path | None, split: str, per_level: int, solutions: int, continuations: int,
                 keep_continuations: bool, temperature: float, top_p: float, top_k: int, seed: int, n_ctx: int, threads: int | None,
                 gpu_layers: int, prompt: PromptSettings, ray: bool, ray_address: str | None, ray_workers: int | None, ray_cpus_per_worker: int,
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
    from edge_adapt_tools.prm.calibration_data import read_records

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
    columns = (TextColumn("rollouts"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=err_console) as bar:
        job = bar.add_task("rollouts", total=len(problems))
        report = rollouts.build_calibration_set(
            generator, task, problems, out, settings, config,
            progress=lambda problem, done, total: bar.update(job, completed=done), cluster=cluster,
        )
    rate = report.generated_tokens / report.wall_s if report.wall_s else 0.0
    console.print(
        f"[bold green]wrote[/] {out}: {report.questions} questions rolled out ({report.resumed} already there), "
        f"{report.records} records, {report.generated_tokens:,} tokens generated and {report.prompt_tokens:,} "
        f"evaluated as prompt in {report.wall_s:.1f}s ({rate:,.0f} generated tokens/s)"
    )
    if report.cluster is not None:
        for w in report.cluster["workers"]:
            console.print(f"{w['worker']} on {w['host']}: {w['questions']} questions, {w['questions_per_hour'] or 0:,.0f} per hour"
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
                      f"{sum(r.n_correct == 0 for r in rs) / len(rs):.0%}", f"{sum(r.n_correct == r.n_rollouts for r in rs) / len(rs):.0%}")
    console.print(table)


@click.command("prm")
@click.argument("base", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-c", "--calibration", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True, help="JSONL from `export rollouts`.")
@click.option("-o", "--out-dir", type=click.Path(file_okay=False, path_type=Path), required=True, help="The PRM folder to write.")
@click.option("--base-kind", type=click.Choice(["auto", "prm", "backbone"]), default="auto", show_default=True,
              help="prm: a two-label token-classification PRM; backbone: a causal LM to train a PRM on.")
@click.option("--question-template", default="{question}\n", show_default=True, help="How the question is written before the steps.")
@click.option("--step-separator", default="\n\n", show_default=True, help="Appended to steps that do not end with it.")
@click.option("--max-length", type=click.IntRange(min=8),
              help="PRM context; longer prefixes are cut (see docs). Default: what 99% of the calibration's solutions need, "
                   "64 to 1024 tokens.")
@click.option("--holdout", type=FiniteFloat(0, 1, min_open=True, max_open=True), default=0.2, show_default=True, help="Fraction of questions held out.")
@click.option("--epochs", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Sequences per step (memory grows with it).")
@click.option("--lr", type=FiniteFloat(min=0, min_open=True), default=2e-4, show_default=True, help="Backbone (or LoRA) learning rate.")
@click.option("--head-lr", type=FiniteFloat(min=0, min_open=True), default=2e-3, show_default=True)
@click.option("--lora-rank", type=click.IntRange(min=0),
              help="Train the head plus LoRA adapters of this rank, with gradient checkpointing; 0: every weight "
                   "(default: LoRA rank 8 for backbones over 50M parameters, so a 100-500M one fits a laptop).")
@click.option("--int8/--no-int8", default=True, show_default=True, help="Also ship dynamic int8 for CPU, if it passes the calibration check.")
@click.option("--fp16/--no-fp16", default=True, show_default=True, help="Also ship fp16 for GPU providers.")
@click.option("--likelihood-from", "likelihood_from", type=click.Path(exists=True, path_type=Path),
              help="The generator (its Hugging Face folder or its GGUF, which is dequantized): its likelihood of the solution "
                   "joins the PRM's scores (same tokenizer needed).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
def prm_cmd(base: Path, calibration: Path, out_dir: Path, base_kind: str, question_template: str, step_separator: str,
            max_length: int | None, holdout: float, epochs: int, batch_size: int, lr: float, head_lr: float, lora_rank: int | None,
            int8: bool, fp16: bool, likelihood_from: Path | None, seed: int) -> None:
    """Calibrate a PRM with quantile regression and export it to ONNX for the device.

    BASE is a Hugging Face folder: a two-label token-classification PRM (its head is replaced by
    10/50/90% quantile outputs initialised from w_right - w_wrong, so it starts as the original
    PRM), or a causal-LM backbone for a PRM trained from scratch. Trained with the pinball loss
    against the Monte-Carlo success rates in the calibration file; questions are held out to
    report calibration before and after, and the reliability diagram is saved as PNG. With
    --likelihood-from, the generator travels inside the ONNX graph and its log-probability of the
    solution so far is added to each quantile's logit by a fitted affine map: a small generator's
    mistakes are mostly a wrong digit it was unsure of, which a trained head rarely sees.

    \b
    Example:
      edge-adapt export prm ./my-generator-hf -c calib.jsonl -o ./prm --question-template 'Q:{question}\\n'
    """
    pipeline = load_tool("edge_adapt_tools.prm.pipeline")
    from edge_adapt.prm.format import PRMFormat
    from edge_adapt_tools.prm.train import TrainSettings

    load_tool("edge_adapt_tools.prm.export").check_output_dir(out_dir)  # before anything is loaded
    if lora_rank is None:
        n_params = load_tool("edge_adapt_tools.prm.quantile_prm").parameter_count(base)
        lora_rank = DEFAULT_LORA_RANK if n_params > LAPTOP_FULL_TUNE_LIMIT else 0
        err_console.print(f"{base}: about {n_params / 1e6:.0f}M parameters: "
                          + (f"training the head + LoRA rank {lora_rank} with gradient checkpointing" if lora_rank
                             else "training every weight") + " (--lora-rank to choose)", highlight=False)
    fmt = PRMFormat(question_template=unescape(question_template), step_separator=unescape(step_separator))
    if max_length is None and (base / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        data = load_tool("edge_adapt_tools.prm.data")
        records = load_tool("edge_adapt_tools.prm.calibration_data").read_records(calibration)
        max_length = data.length_from_data(records, Tokenizer.from_file(str(base / "tokenizer.json")), fmt)
        err_console.print(f"PRM context: {max_length} tokens (99% of the calibration's solutions fit; --max-length to choose)",
                          highlight=False)
    settings = pipeline.PRMBuildSettings(
        fmt=replace(fmt, max_length=max_length or fmt.max_length),
        holdout=holdout, base_kind=base_kind, int8=int8, fp16=fp16,
        likelihood_generator=str(likelihood_from) if likelihood_from else None,
        train=TrainSettings(epochs=epochs, batch_size=batch_size, lr=lr, head_lr=head_lr, lora_rank=lora_rank or None,
                            gradient_checkpointing=bool(lora_rank), seed=seed),
    )

    last_line = [0.0]

    def progress(message: str) -> None:  # the spinner on a terminal; in a log, a line per stage (steps every 30 s)
        if err_console.is_terminal:
            status.update(message)
        elif not message.startswith("training step") or time.monotonic() - last_line[0] >= 30:
            last_line[0] = time.monotonic()
            err_console.print(f"{time.strftime('%H:%M:%S')} {message}", highlight=False)

    with err_console.status("building the quantile PRM") as status:
        build = pipeline.build_quantile_prm(base, calibration, out_dir, settings, progress=progress)
    c = build.counts
    console.print(
        f"quantile PRM from the {build.base_kind} at {base}: trained on {c['train_questions']} questions "
        f"({c['train_records']} records in {c['train_sequences']} sequences), held out {c['held_out_questions']} "
        f"questions ({c['held_out_records']} records); best step {build.training.best_step}, {build.training.seconds:.0f}s"
    )
    table = Table(title="Calibration on held-out questions", title_justify="left")
    for col in ("", "Brier (median)", "ECE (median)", *[f"coverage {k}" for k in build.after.coverage], "pinball"):
        table.add_column(col, justify="right")
    rows = [("before", build.before), ("after", build.after)]
    if build.after_prm_only is not None:
        rows.insert(1, ("after, text only", build.after_prm_only))
    for name, m in rows:
        table.add_row(name, f"{m.brier_median:.4f}", f"{m.ece_median:.4f}", *[f"{v:.0%}" for v in m.coverage.values()], f"{m.pinball:.4f}")
    console.print(table)
    for warning in build.after.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    if build.likelihood is not None:
        fit = build.likelihood
        console.print("likelihood term per level (logit = question·z_q + step·(z - z_q) + weight·loglik + bias): " + "; ".join(
            f"{q:g}: {a:.3g}, {s:.3g}, {w:.3g}, {b:.3g}"
            for q, a, s, w, b in zip(settings.levels, fit.question, fit.step, fit.weight, fit.bias, strict=True)))
    variants = Table(title="Exported models (metrics measured through the device runtime)", title_justify="left")
    for col in ("variant", "size", "Brier", "ECE", "coverage", "shipped", "note"):
        variants.add_column(col)
    for v in build.export.variants:
        m = v.metrics
        variants.add_row(
            v.variant, human_bytes(v.size_bytes), f"{m.brier_median:.4f}" if m else "-", f"{m.ece_median:.4f}" if m else "-",
            " / ".join(f"{x:.0%}" for x in m.coverage.values()) if m else "-", "yes" if v.accepted else "[red]no[/]", v.note,
        )
    console.print(variants)
    console.print(f"ONNX vs PyTorch: max abs logit diff {build.export.parity_max_abs_diff:.2g} (largest |logit| {build.export.parity_logit_scale:.3g})")
    console.print(f"CPU runs the {build.export.cpu_variant} model; reliability diagram: {build.reliability_png}")
    with err_console.status("calibrating adaptive search's answer model"):
        model = load_tool("edge_adapt_tools.prm.selector").calibrate_selector(build.export.path, calibration)
    _print_selector(model)
    console.print(f"[bold green]wrote[/] {build.export.path}")


@click.command("selector")
@click.argument("prm_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-c", "--calibration", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="The JSONL from `export rollouts` the PRM was calibrated on.")
@click.option("--all-questions", is_flag=True, help="Use the PRM's training questions too (its scores are over-confident there).")
@click.option("--generator", "generator_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The GGUF the PRM was calibrated for: with --fresh-per-level, sample fresh questions too.")
@click.option("--fresh-per-level", type=click.IntRange(min=0), default=0, show_default=True,
              help="Fresh questions per level of the default task (in all, for a file task) to sample with --generator.")
@click.option("-n", "--samples", type=click.IntRange(min=2, max=64), default=16, show_default=True, help="Samples per fresh question.")
@click.option("--task", "task_name", type=click.Choice(["default", "arithmetic", "gsm8k", "math"]), default=None,
              help="The task the calibration file is for (default: what its records name; gsm8k/math need --data).")
@click.option("--data", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="JSONL file for --task gsm8k/math.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--temperature", type=FiniteFloat(min=0), default=None,
              help="Sample the fresh questions at this temperature, the one search will use (default: the calibration file's; "
                   "another one fits on fresh questions only).")
@click.option("--threads", type=click.IntRange(min=1), help="Generator and ONNX Runtime threads.")
def selector_cmd(prm_dir: Path, calibration: Path, all_questions: bool, generator_path: Path | None, fresh_per_level: int,
                 samples: int, task_name: str | None, data: Path | None, seed: int, temperature: float | None, threads: int | None) -> None:
    """Calibrate adaptive search's answer model for the PRM in PRM_DIR (writes selector_model.json).

    `export prm` and the recipe do this already; run it for a PRM folder exported before, which
    adaptive search otherwise runs with an uncalibrated fallback. The calibration file's complete
    solutions are scored by this PRM on the device runtime: per bin of the question's score, the
    prior of the success rate, how wrong answers repeat, how the PRM scores right and wrong
    samples, and every selector's accuracy with 1..N samples.

    The file's questions the PRM never trained on are few; --generator with --fresh-per-level
    samples fresh questions as well (the recipe draws 100 per level, 16 samples each).

    \b
    Examples:
      edge-adapt export selector ./prm -c calib.jsonl
      edge-adapt export selector models/prm -c models/calibration.jsonl --generator models/generator-Q8_0.gguf --fresh-per-level 50
    """
    if fresh_per_level and generator_path is None:
        raise click.UsageError("--fresh-per-level samples with the generator: pass --generator GGUF")
    if task_name in ("gsm8k", "math") and data is None:
        raise click.UsageError(f"--task {task_name} reads your JSONL file: pass --data PATH")
    from edge_adapt.tasks import get_task

    task = get_task(task_name, data) if task_name else None
    calibrate = load_tool("edge_adapt_tools.prm.selector").calibrate_selector
    with err_console.status("scoring the calibration solutions"):
        model = calibrate(prm_dir, calibration, task, threads=threads, all_questions=all_questions, generator=generator_path,
                          fresh_per_level=fresh_per_level, samples=samples, seed=seed, temperature=temperature)
    _print_selector(model)
    console.print(f"[bold green]wrote[/] {prm_dir / 'selector_model.json'}")


def _print_selector(model) -> None:
    console.print(f"answer model: {model.provenance.get('questions')} questions ({model.provenance.get('used')}), "
                  f"{model.provenance.get('samples')} samples; wrong answers agree with probability {1 / (1 + model.concentration):.2f}; "
                  f"adaptive search picks by [bold]{model.selector}[/]", highlight=False)
    table = Table(title="Selector accuracy with n samples, by the question's PRM median", title_justify="left")
    edges = [0.0, *model.question_edges, 1.0]
    table.add_column("question median")
    table.add_column("selector")
    longest = max((len(c.accuracy) for cs in model.gains.values() for c in cs), default=0)
    shown = [n for n in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32) if n <= longest]
    for n in shown:
        table.add_column(f"n={n}", justify="right")
    for b in range(len(edges) - 1):
        for i, (name, curves) in enumerate(model.gains.items()):
            c = curves[b]
            table.add_row(f"{edges[b]:.2f}-{edges[b + 1]:.2f} ({c.questions} q)" if i == 0 else "", name,
                          *[f"{100 * c.at(n):.0f}%" for n in shown])
    console.print(table)


