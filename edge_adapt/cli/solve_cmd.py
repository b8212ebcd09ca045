"""``edge-adapt solve``: answer one question with the generator and the PRM, and show the work."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from edge_adapt.assembly import StackSettings, open_stack
from edge_adapt.budget.guard import Budget
from edge_adapt.cli.console import console, err_console
from edge_adapt.cli.options import (
    FiniteFloat,
    budget_options,
    calibration_option,
    model_options,
    no_prm_option,
    prompt_options,
    resolve_models,
)
from edge_adapt.defaults import DEFAULT_SPEC, Defaults, choose, runs_without_prm, unservable
from edge_adapt.errors import EdgeAdaptError
from edge_adapt.generator import SamplingParams
from edge_adapt.generator.vocab import utf8
from edge_adapt.prm import PRM, Quantiles
from edge_adapt.search import SearchResult
from edge_adapt.search.spec import parse_spec
from edge_adapt.search.strategy import MAX_LIVE_PATHS, Strategy
from edge_adapt.search.voting import no_answer_reason
from edge_adapt.settings import MeterSettings, ModelSettings, PromptSettings, RunSettings, budget_record
from edge_adapt.tasks import TASK_NAMES, Problem, get_task


def _q(q: Quantiles | None) -> str:
    return "-" if q is None else f"{q.low:.2f} / {q.median:.2f} / {q.high:.2f}"


def _problem(task, question: str | None, index: int | None) -> Problem:
    if (question is None) == (index is None):
        raise click.UsageError("give either a QUESTION or --index N")
    try:
        if question is not None:
            utf8(question)  # a NUL or a lone surrogate is refused here, not cut or replaced later
        problem = task.problem_at(index) if index is not None else task.parse_question(question)
    except EdgeAdaptError as exc:
        raise click.UsageError(str(exc)) from None
    if note := problem.meta.get("note"):
        err_console.print(f"note: {escape(note)}", highlight=False)
    if warning := problem.meta.get("warning"):
        err_console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    return problem


@click.command()
@click.argument("question", required=False)
@click.option("--task", "task_name", type=click.Choice(TASK_NAMES), default=None,
              show_default="default with the shipped models; with your --generator, its calibration's task, else gsm8k")
@click.option("--data", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="JSONL file for --task gsm8k/math.")
@click.option("--index", type=click.IntRange(min=0), help="Solve problem N of the task (the default task's test split).")
# the default: value-aware sampling (edge_adapt/search/strategies/adaptive.py)
@click.option("-s", "--strategy", "spec", default=None,
              show_default=f"{DEFAULT_SPEC} with a PRM (adaptive_vote where the generator was calibrated with that PRM); "
                           "without one, adaptive_vote at the generator's calibrated price, else consistency:n_max=16",
              metavar="SPEC",
              help="Search strategy: adaptive:price=8 (lower prices buy more samples), best_of_n:n=8, majority:n=8, "
                   "ias_best_of_n:n_max=32, beam:n=16,width=4, ias_beam:k_max=4,m_max=4 (+es adds early stopping to best-of-N).")
@click.option("-n", "--samples", type=click.IntRange(min=1, max=MAX_LIVE_PATHS),
              help="Shorthand for --strategy best_of_n:n=N (majority:n=N with --no-prm).")
@click.option("--temperature", type=FiniteFloat(min=0), default=0.7, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@model_options
@no_prm_option
@calibration_option
@prompt_options
@budget_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def solve_cmd(question: str | None, task_name: str | None, data: Path | None, index: int | None, spec: str | None,
              samples: int | None,
              temperature: float, seed: int, generator_path: Path | None, prm_path: Path | None, models: Path | None,
              threads: int | None, gpu_layers: int, no_prm: bool, calibration: Path | None, prompt: PromptSettings,
              budget: Budget, meter: MeterSettings, as_json: bool) -> None:
    """Answer QUESTION with adaptive search: steps with PRM quantiles, the answer, and the cost.

    By default adaptive search, and it says which: solutions are drawn one or two at a time, and
    another only while it is expected to raise the chance that the picked answer is right by more
    than its cost at the given price. With a calibration file (`edge-adapt calibrate`; beside the
    GGUF, or --calibration) that is the generator's calibrated vote, reading a PRM's scores only
    where they predicted better on held-out questions; with the shipped PRM alone, value-aware
    sampling by its answer model; with neither, Adaptive-Consistency. The quantiles shown are
    the PRM's 10% / 50% / 90% estimates of the probability that the generator gets it right from
    there. Budgets cap what the search may spend on this question; the energy figure says which
    meter measured it (or that it is estimated).

    \b
    Examples:
      edge-adapt solve "(454+762)*3"
      edge-adapt solve --index 420 -s beam:n=16,width=4
      edge-adapt solve "(3348*6+7430)*2" --energy 5 --latency 2
      edge-adapt solve --task gsm8k --data test.jsonl --index 3 --generator qwen.gguf --prm ./prm --json
      edge-adapt solve "What is 7*8?" --generator smol.gguf --prm ./prm --calibration smol.calibration.json
    """
    mine = generator_path is not None
    chosen = resolve_models(generator_path, prm_path, models, runs_without_prm(no_prm, mine, prm_path is not None),
                            threads=threads, gpu_layers=gpu_layers, calibration=calibration)
    defaults = choose("solve", chosen, own_generator=mine, task=task_name, strategies=(spec,) if spec else ())
    if defaults.vote_model is not None:  # prompt settings as calibrated, unless given
        prompt = prompt.or_else(defaults.vote_model.provenance)
    strategy = _strategy(defaults, samples, chosen, quiet=as_json)
    try:
        task = get_task(defaults.task, data, prompt.prompt_template)
    except EdgeAdaptError as exc:
        raise click.UsageError(str(exc)) from None
    problem = _problem(task, question, index)
    settings = StackSettings(RunSettings(chosen, prompt, SamplingParams(temperature=temperature), budget=budget, meter=meter),
                             task, (strategy,))
    with open_stack(settings) as stack:
        prm = stack.prm
        if not budget.unlimited:
            stack.searcher.warm_up(problem)
        result = stack.searcher.run(strategy, problem, seed=seed, score_question=prm.available)
    question_q = result.question_score
    correct = task.is_correct(result.chosen.text, problem) if (result.chosen and problem.answer) else None
    if as_json:
        data_out = dataclasses.asdict(result)
        data_out["decisions"] = [d.as_record() for d in result.decisions]
        del data_out["question_score"]
        data_out.update(gold=problem.answer or None, level=problem.level, correct=correct,
                        question_quantiles=dataclasses.asdict(question_q) if question_q is not None else None,
                        prm_provider=prm.provider, prm_variant=prm.variant, budget=budget_record(budget))
        click.echo(json.dumps(data_out, indent=2, default=str))
        return
    _print(result, problem, task.display_question(problem), question_q, correct, prm)


def _strategy(defaults: Defaults, samples: int | None, models: ModelSettings, quiet: bool) -> Strategy:
    """What to run: -n given, else the spec given or the default (:mod:`edge_adapt.defaults`),
    said on stderr with why."""
    spec = defaults.strategies[0]
    if samples:
        spec = f"{'majority' if models.prm is None else 'best_of_n'}:n={samples}"
    elif defaults.why != "given" and not quiet:
        err_console.print(f"{spec}: {defaults.why}", highlight=False)
    if (problem := unservable(spec, models, flag="--strategy")) is not None:
        raise click.UsageError(problem)
    return parse_spec(spec)


def _print(result: SearchResult, problem: Problem, shown: str, question_q: Quantiles | None, correct: bool | None,
           prm: PRM) -> None:
    asked = f"  (asked as {escape(problem.question)})" if shown != problem.question else ""
    rated = f"PRM P(success) q10/q50/q90: {_q(question_q)}" if prm.available else "no PRM: the generator's own samples decide"
    console.print(f"[bold]Question[/] {escape(shown)}{asked}    {rated}")
    chosen = result.chosen
    if chosen is not None:
        steps = Table(title="Chosen solution", title_justify="left")
        steps.add_column("#", justify="right")
        steps.add_column("step")
        steps.add_column("PRM q10 / q50 / q90 after it")
        for i, text in enumerate(chosen.steps, start=1):
            q = chosen.per_step[i] if i < len(chosen.per_step) else None
            steps.add_row(str(i), text.strip() or "(empty)", _q(q))
        console.print(steps)
    verdict = "" if correct is None else ("  [green]correct[/]" if correct else f"  [red]wrong[/] (gold {problem.answer})")
    console.print(f"[bold]Answer[/] {result.answer}{verdict}")
    if result.answer is None and chosen is not None:
        console.print(f"no sample reached a final answer: the solution shown is the sample {no_answer_reason(chosen)}",
                      highlight=False)
    cands = Table(title=f"All {len(result.candidates)} candidates", title_justify="left")
    for col in ("#", "answer", "PRM median", "tokens", "ended by"):
        cands.add_column(col)
    for i, c in enumerate(result.candidates):
        mark = " *" if c is chosen else ""
        cands.add_row(f"{i}{mark}", str(c.answer), f"{c.final.median:.3f}" if c.final else "-", str(c.n_tokens), c.end.value)
    console.print(cands)
    for d in result.decisions:
        if d.kind != "select":
            console.print(f"[bold]{d.kind}[/] " + ", ".join(f"{k}={_short(v)}" for k, v in d.detail.items()), highlight=False)
    cost = result.cost
    energy = ""
    if cost.joules is not None:
        energy = f", {cost.joules:.2f} J ({cost.energy_source}{', estimated' if cost.energy_estimated else ', measured'})"
    scoring = (f"{cost.prm_calls} PRM calls ({cost.prm_prefixes} prefixes, {cost.prm_tokens} tokens, "
               f"{prm.provider.removesuffix('ExecutionProvider')} {prm.variant})") if prm.available else "no PRM"
    console.print(
        f"[bold]Cost[/] ({result.strategy}) {cost.samples} samples, {cost.generated_tokens} tokens generated, "
        f"{cost.prompt_tokens} prompt tokens, {scoring}, {cost.wall_s:.2f}s{energy}"
    )


def _short(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
