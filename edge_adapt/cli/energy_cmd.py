"""``edge-adapt energy``: the meters this machine has, and fitting the cost model to one of them."""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.table import Table

from edge_adapt.assembly import StackSettings, open_stack
from edge_adapt.cli.console import console, err_console
from edge_adapt.cli.options import FiniteFloat, model_options, resolve_models
from edge_adapt.energy import METER_KINDS, CostSample, detect_meters, fit_cost_model, open_meter
from edge_adapt.energy.detect import default_device_class
from edge_adapt.search import BestOfN
from edge_adapt.settings import MeterSettings, RunSettings
from edge_adapt.tasks import ArithmeticTask


@click.group("energy")
def energy_group() -> None:
    """Power meters and the energy cost model."""


@energy_group.command("meters")
@click.option("--seconds", type=FiniteFloat(min=0, max=3600), default=1.0, show_default=True,
              help="Sample the chosen meter this long (at most an hour).")
def meters(seconds: float) -> None:
    """List every meter kind, available or why not, and read the one the policy would use.

    \b
    Example:
      edge-adapt energy meters --seconds 2
    """
    table = Table(title="Energy meters, in order of preference")
    for col in ("meter", "available", "detail"):
        table.add_column(col)
    for m in detect_meters():
        table.add_row(m.name, "yes" if m.available else "no", m.detail)
    console.print(table)
    with open_meter() as meter:
        first = meter.read()
        time.sleep(seconds)
        last = meter.read()
    dt = last.timestamp - first.timestamp
    watts = (last.joules - first.joules) / dt if dt > 0 else float("nan")
    label = "estimated (no work running, so idle power only)" if last.estimated else "measured"
    console.print(f"policy meter: {last.source}; {watts:.2f} W over {dt:.1f} s, {label}")


@energy_group.command("fit")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Cost-model JSON to write.")
@click.option("--meter", type=click.Choice([k for k in METER_KINDS if k != "estimate"]),
              help="Meter to fit against (default: best found).")
@click.option("--runs", type=click.IntRange(min=4), default=12, show_default=True, help="Measured runs (different sizes).")
@model_options
def fit(out: Path, meter: str | None, runs: int, generator_path: Path | None, prm_path: Path | None, models: Path | None,
        threads: int | None, gpu_layers: int) -> None:
    """Fit the cost model (idle W, J per prompt / generated / PRM token) on this device.

    Runs best-of-N searches of varied sizes on the default task while a real meter measures
    them, then solves non-negative least squares. Use the file with --cost-model where no
    meter is available at run time (e.g. a Jetson whose rails need root).

    \b
    Example:
      sudo edge-adapt energy fit -o jetson-cost.json
    """
    chosen = resolve_models(generator_path, prm_path, models, threads=threads, gpu_layers=gpu_layers)
    task = ArithmeticTask()
    problems = task.problems("calibration", 2)
    sizes = (1, 2, 4, 8, 16, 32)
    settings = StackSettings(RunSettings(chosen, meter=MeterSettings(meter, measured_only=True)), task,
                             tuple(BestOfN(n=n) for n in sizes))
    with open_stack(settings) as stack:
        searcher, m = stack.searcher, stack.meter
        samples = []
        for i in range(runs):
            n = sizes[i % len(sizes)]
            problem = problems[i % len(problems)]
            u0, r0 = searcher.usage(), m.read()
            searcher.run(BestOfN(n=n), problem, seed=i)
            r1, u1 = m.read(), searcher.usage()
            samples.append(CostSample(r1.timestamp - r0.timestamp, u1 - u0, r1.joules - r0.joules))
            err_console.print(f"run {i + 1}/{runs}: N={n}, {samples[-1].joules:.2f} J, {samples[-1].wall_s:.2f} s")
    model = fit_cost_model(samples, default_device_class(detect_meters()))
    model.save(out)
    console.print(f"fitted on {m.source}: idle {model.idle_w:.2f} W, {model.j_per_prompt_token:.3g} J/prompt token, "
                  f"{model.j_per_generated_token:.3g} J/generated token, {model.j_per_prm_token:.3g} J/PRM token -> {out}")
