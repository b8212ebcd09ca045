"""``edge-adapt export prm`` and ``export selector``: calibrating a PRM for a generator, and its answer model."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from edge_adapt.cli.console import console, err_console, human_bytes
from edge_adapt.cli.options import FiniteFloat, unescape
from edge_adapt.tasks import get_task
from edge_adapt_tools.cli.loading import load_tool

DEFAULT_LORA_RANK = 8
LAPTOP_FULL_TUNE_LIMIT = 50_000_000  # backbone parameters above which export prm trains LoRA by default


@click.command("prm")
@click.argument("base", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-c", "--calibration", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="JSONL from `export rollouts`.")
@click.option("-o", "--out-dir", type=click.Path(file_okay=False, path_type=Path), required=True, help="The PRM folder to write.")
@click.option("--base-kind", type=click.Choice(["auto", "prm", "backbone"]), default="auto", show_default=True,
              help="prm: a two-label token-classification PRM; backbone: a causal LM to train a PRM on.")
@click.option("--question-template", default="{question}\n", show_default=True,
              help="How the question is written before the steps.")
@click.option("--step-separator", default="\n\n", show_default=True, help="Appended to steps that do not end with it.")
@click.option("--max-length", type=click.IntRange(min=8),
              help="PRM context; longer prefixes are cut (see docs). Default: what 99% of the calibration's solutions need, "
                   "64 to 1024 tokens.")
@click.option("--holdout", type=FiniteFloat(0, 1, min_open=True, max_open=True), default=0.2, show_default=True,
              help="Fraction of questions held out.")
@click.option("--epochs", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Sequences per step (memory grows with it).")
@click.option("--lr", type=FiniteFloat(min=0, min_open=True), default=2e-4, show_default=True,
              help="Backbone (or LoRA) learning rate.")
@click.option("--head-lr", type=FiniteFloat(min=0, min_open=True), default=2e-3, show_default=True)
@click.option("--lora-rank", type=click.IntRange(min=0),
              help="Train the head plus LoRA adapters of this rank, with gradient checkpointing; 0: every weight "
                   "(default: LoRA rank 8 for backbones over 50M parameters, so a 100-500M one fits a laptop).")
@click.option("--int8/--no-int8", default=True, show_default=True,
              help="Also ship dynamic int8 for CPU, if it passes the calibration check.")
@click.option("--fp16/--no-fp16", default=True, show_default=True, help="Also ship fp16 for GPU providers.")
@click.option("--likelihood-from", "likelihood_from", type=click.Path(exists=True, path_type=Path),
              help="The generator (its Hugging Face folder or its GGUF, which is dequantized): its likelihood of the solution "
                   "joins the PRM's scores (same tokenizer needed).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
def prm_cmd(base: Path, calibration: Path, out_dir: Path, base_kind: str, question_template: str, step_separator: str,
            max_length: int | None, holdout: float, epochs: int, batch_size: int, lr: float, head_lr: float,
            lora_rank: int | None,
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
    lora_rank = _lora_rank(base) if lora_rank is None else lora_rank
    fmt = PRMFormat(question_template=unescape(question_template), step_separator=unescape(step_separator))
    if max_length is None and (base / "tokenizer.json").is_file():
        max_length = _context_from_data(base, calibration, fmt)
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
    _print_build(build, base, settings.levels)
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
@click.option("-n", "--samples", type=click.IntRange(min=2, max=64), default=16, show_default=True,
              help="Samples per fresh question.")
@click.option("--task", "task_name", type=click.Choice(["default", "arithmetic", "gsm8k", "math"]), default=None,
              help="The task the calibration file is for (default: what its records name; gsm8k/math need --data).")
@click.option("--data", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="JSONL file for --task gsm8k/math.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--temperature", type=FiniteFloat(min=0), default=None,
              help="Sample the fresh questions at this temperature, the one search will use (default: the calibration file's; "
                   "another one fits on fresh questions only).")
@click.option("--threads", type=click.IntRange(min=1), help="Generator and ONNX Runtime threads.")
def selector_cmd(prm_dir: Path, calibration: Path, all_questions: bool, generator_path: Path | None, fresh_per_level: int,
                 samples: int, task_name: str | None, data: Path | None, seed: int, temperature: float | None,
                 threads: int | None) -> None:
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
      edge-adapt export selector models/prm -c models/calibration.jsonl \\
          --generator models/generator-Q8_0.gguf --fresh-per-level 50
    """
    if fresh_per_level and generator_path is None:
        raise click.UsageError("--fresh-per-level samples with the generator: pass --generator GGUF")
    if task_name in ("gsm8k", "math") and data is None:
        raise click.UsageError(f"--task {task_name} reads your JSONL file: pass --data PATH")

    task = get_task(task_name, data) if task_name else None
    calibrate = load_tool("edge_adapt_tools.prm.selector").calibrate_selector
    with err_console.status("scoring the calibration solutions"):
        model = calibrate(prm_dir, calibration, task, threads=threads, all_questions=all_questions, generator=generator_path,
                          fresh_per_level=fresh_per_level, samples=samples, seed=seed, temperature=temperature)
    _print_selector(model)
    console.print(f"[bold green]wrote[/] {prm_dir / 'selector_model.json'}")


def _print_selector(model) -> None:
    console.print(f"answer model: {model.provenance.get('questions')} questions ({model.provenance.get('used')}), "
                  f"{model.provenance.get('samples')} samples; wrong answers agree with probability "
                  f"{1 / (1 + model.concentration):.2f}; "
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


def _lora_rank(base: Path) -> int:
    """LoRA for a backbone too large to train whole on a laptop, every weight below; said on stderr."""
    n_params = load_tool("edge_adapt_tools.prm.quantile_prm").parameter_count(base)
    rank = DEFAULT_LORA_RANK if n_params > LAPTOP_FULL_TUNE_LIMIT else 0
    err_console.print(f"{base}: about {n_params / 1e6:.0f}M parameters: "
                      + (f"training the head + LoRA rank {rank} with gradient checkpointing" if rank
                         else "training every weight") + " (--lora-rank to choose)", highlight=False)
    return rank


def _context_from_data(base: Path, calibration: Path, fmt: Any) -> int:
    """The PRM context 99% of the calibration's solutions fit in; said on stderr."""
    from tokenizers import Tokenizer

    data = load_tool("edge_adapt_tools.prm.data")
    records = load_tool("edge_adapt_tools.prm.calibration_data").read_records(calibration)
    max_length = data.length_from_data(records, Tokenizer.from_file(str(base / "tokenizer.json")), fmt)
    err_console.print(f"PRM context: {max_length} tokens (99% of the calibration's solutions fit; --max-length to choose)",
                      highlight=False)
    return int(max_length)


def _print_build(build: Any, base: Path, levels: Sequence[float]) -> None:
    """What ``export prm`` built: the data, calibration before and after, the likelihood term, the variants."""
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
        table.add_row(name, f"{m.brier_median:.4f}", f"{m.ece_median:.4f}", *[f"{v:.0%}" for v in m.coverage.values()],
                      f"{m.pinball:.4f}")
    console.print(table)
    for warning in build.after.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    if build.likelihood is not None:
        fit = build.likelihood
        console.print("likelihood term per level (logit = question·z_q + step·(z - z_q) + weight·loglik + bias): " + "; ".join(
            f"{q:g}: {a:.3g}, {s:.3g}, {w:.3g}, {b:.3g}"
            for q, a, s, w, b in zip(levels, fit.question, fit.step, fit.weight, fit.bias, strict=True)))
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
    console.print(f"ONNX vs PyTorch: max abs logit diff {build.export.parity_max_abs_diff:.2g} (largest |logit| "
                  f"{build.export.parity_logit_scale:.3g})")
    console.print(f"CPU runs the {build.export.cpu_variant} model; reliability diagram: {build.reliability_png}")
