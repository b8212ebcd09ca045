"""``edge-adapt export recipe``: rebuild the shipped default models from scratch."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from edge_adapt.cli.console import console, err_console
from edge_adapt_tools.cli.loading import load_tool


def _parse_weights(value: str | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        weights = tuple(float(w) for w in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: give one number per level, comma-separated, e.g. 2,2,2,1,1,1") from None
    return weights  # their count and signs are checked by train_generator, which knows the levels


@click.command("recipe")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("models"), show_default=True,
              help="Where the default models go.")
@click.option("--work", "work_dir", type=click.Path(file_okay=False, path_type=Path), default=Path(".recipe-work"),
              show_default=True,
              help="Intermediate files and stage stamps; a rerun skips finished stages.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads (default: all).")
@click.option("--generator-steps", type=click.IntRange(min=1), help="Override the generator's training steps (for quick trials).")
@click.option("--generator-level-weights", callback=lambda ctx, param, value: _parse_weights(value),
              help="How often each level is drawn for the generator's training, comma-separated (e.g. 2,2,2,1,1,1).")
@click.option("--generator-bf16/--generator-fp32", default=None,
              help="Train the generator with bfloat16 matrix products (the default; ~1.5x faster on CPUs with native bf16) "
                   "or in float32 (slower, for CPUs without native bf16; the result differs from the shipped generator).")
@click.option("--calibration-per-level", type=click.IntRange(min=1), help="Override the calibration questions per level.")
@click.option("--from-shipped", is_flag=True,
              help="Keep the generator and calibration set already in --out (checked against its manifest); rebuild the PRM, "
                   "the evaluation and the manifest only (minutes instead of the generator's ~40 on 2 cores).")
def recipe_cmd(out_dir: Path, work_dir: Path, seed: int, threads: int | None, generator_steps: int | None,
               generator_level_weights: tuple[float, ...] | None, generator_bf16: bool | None, calibration_per_level: int | None,
               from_shipped: bool) -> None:
    """Rebuild the shipped default models from scratch: generator, calibration set, PRM, manifest.

    Trains the generator on the default task, exports and quantizes it, rolls it out on the
    calibration split, trains and exports the quantile PRM, evaluates both on the test split and
    writes manifest.json and MODEL_CARD.md. Prints each stage's time. Seeded; an interrupted
    run resumes from its last finished stage.

    \b
    Examples:
      edge-adapt export recipe --out models --seed 0
      edge-adapt export recipe --out models --seed 0 --from-shipped   # PRM only
      edge-adapt export recipe --out /tmp/trial --generator-steps 500 --generator-level-weights 1,1,1,1,1,1
    """
    import dataclasses

    recipe = load_tool("edge_adapt_tools.recipe.build")
    model_card = load_tool("edge_adapt_tools.recipe.model_card")
    settings = recipe.RecipeSettings(seed=seed, threads=threads)
    generator = settings.generator
    if generator_steps:
        generator = dataclasses.replace(generator, steps=generator_steps)
    if generator_level_weights:
        generator = dataclasses.replace(generator, level_weights=generator_level_weights)
    if generator_bf16 is not None:
        generator = dataclasses.replace(generator, bf16=generator_bf16)
    settings = dataclasses.replace(settings, generator=generator)
    if calibration_per_level:
        settings = dataclasses.replace(settings, calibration_per_level=calibration_per_level)
    manifest = recipe.run_recipe(out_dir, work_dir, settings, log=lambda m: err_console.print(m, highlight=False),
                                 from_shipped=from_shipped)
    stages = Table(title="Recipe stages", title_justify="left")
    stages.add_column("stage")
    stages.add_column("minutes", justify="right")
    for name, seconds in manifest["recipe"]["stage_seconds"].items():
        stages.add_row(name, f"{seconds / 60:.1f}")
    stages.add_row("total", f"{manifest['recipe']['total_seconds'] / 60:.1f}")
    console.print(stages)
    print_targets(model_card.check_targets(manifest))
    if summary := model_card.question_score_summary(manifest["metrics"]["generator_and_prm_on_test"]):
        console.print(summary)
    console.print(f"[bold green]wrote[/] {out_dir}/manifest.json and {out_dir}/MODEL_CARD.md")


def print_targets(checks: list) -> None:
    table = Table(title="Default-model targets (test split)", title_justify="left")
    for col in ("measure", "target", "measured", ""):
        table.add_column(col)
    for target, value, ok in checks:
        table.add_row(target.name, target.requirement, target.fmt.format(value), "[green]met[/]" if ok else "[red]not met[/]")
    console.print(table)
