"""The default models' targets, checked against the manifest's metrics, and MODEL_CARD.md."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_adapt.files import atomic_write_text


@dataclass(frozen=True)
class Target:
    name: str
    requirement: str
    value: Callable[[dict[str, Any]], float]
    ok: Callable[[float], bool]
    fmt: str = "{:.1%}"


def _training_details(training: dict) -> str:
    """How the batches were drawn and computed, when the manifest says (older manifests do not)."""
    parts = []
    if training.get("level_weights"):
        parts.append("levels drawn " + ":".join(f"{w:g}" for w in training["level_weights"]) + " (easiest first)")
    if training.get("bf16"):
        parts.append("matrix products in bfloat16")
    return f" ({'; '.join(parts)})" if parts else ""


def _test(m: dict) -> dict:
    return m["metrics"]["generator_and_prm_on_test"]


def _held(m: dict) -> dict:
    return m["metrics"]["prm_held_out"]["after"]


def _level(m: dict, which: str) -> dict:
    levels = _test(m)["by_level"]
    keys = sorted(levels, key=int)
    return levels[keys[0] if which == "easiest" else keys[-1]]


def _largest_prm_file(m: dict) -> float:
    return max(f["size_bytes"] for f in m["files"] if f["path"].startswith(m["prm"]["dir"] + "/") and f["path"].endswith(".onnx"))


def _generator_file(m: dict) -> float:
    return next(f["size_bytes"] for f in m["files"] if f["path"] == m["generator"]["file"])


TARGETS: tuple[Target, ...] = (
    Target("generator pass@1 (T=0.7), all levels", "35% to 70%", lambda m: _test(m)["overall"]["pass_at_1"],
           lambda v: 0.35 <= v <= 0.70),
    Target("generator pass@1, easiest level", ">= 90%", lambda m: _level(m, "easiest")["pass_at_1"], lambda v: v >= 0.90),
    Target("generator pass@1, hardest level", "<= 30%", lambda m: _level(m, "hardest")["pass_at_1"], lambda v: v <= 0.30),
    Target("oracle pass@16 minus pass@1", ">= 25 points",
           lambda m: 100 * (_test(m)["overall"]["oracle"] - _test(m)["overall"]["pass_at_1"]),
           lambda v: v >= 25, "{:+.1f} points"),
    Target("PRM Brier of the median (held-out prefixes)", "<= 0.05", lambda m: _held(m)["brier_median"],
           lambda v: v <= 0.05, "{:.4f}"),
    Target("fraction of targets below q10", "5% to 15%", lambda m: _held(m)["coverage"]["q10"], lambda v: 0.05 <= v <= 0.15),
    Target("fraction of targets below q90", "85% to 95%", lambda m: _held(m)["coverage"]["q90"], lambda v: 0.85 <= v <= 0.95),
    Target("PRM best-of-16 minus pass@1", ">= 15 points",
           lambda m: 100 * (_test(m)["overall"]["prm_best"] - _test(m)["overall"]["pass_at_1"]),
           lambda v: v >= 15, "{:+.1f} points"),
    Target("generator GGUF size", "<= 30 MB", lambda m: _generator_file(m) / 1e6, lambda v: v <= 30, "{:.1f} MB"),
    Target("largest PRM ONNX file", "<= 30 MB", lambda m: _largest_prm_file(m) / 1e6, lambda v: v <= 30, "{:.1f} MB"),
    Target("easy question with search, models loaded (median)", "< 2 s", lambda m: _test(m)["easy_search_seconds"]["median_s"],
           lambda v: v < 2.0, "{:.3f} s"),
)


def check_targets(manifest: dict[str, Any]) -> list[tuple[Target, float, bool]]:
    return [(t, v := t.value(manifest), t.ok(v)) for t in TARGETS]


def _likelihood_text(p: dict) -> str:
    fit = p.get("likelihood")
    if not fit:
        return ""
    per_level = "; ".join(f"q{round(q * 100):02d}: {a:.3g}, {s:.3g}, {w:.3g}, {b:.3g}" for q, a, s, w, b in zip(
        p["quantile_levels"], fit["question"], fit["step"], fit["weight"], fit["bias"], strict=True))
    return (
        "\n  Its graph also holds the generator (dequantized from the shipped GGUF): inside a solution each quantile's\n"
        "  logit is `question * z_q + step * (z - z_q) + weight * loglik + bias`, with z the trained head's logit, z_q\n"
        "  its logit at the end of the question and loglik the generator's log-probability of the solution tokens so\n"
        "  far, fitted after the head on training questions held back from it, so that it weighs the head's scores as\n"
        f"  they are on unseen questions (question, step, weight, bias per level: {per_level}).\n"
        "  The question alone keeps the head's own score z_q (the bias, fitted for solutions, would lift it).\n"
        "  Why: the generator's mistakes are mostly a wrong digit it was unsure of, which the trained head alone\n"
        "  barely notices; the head rates questions well (edge_adapt_tools/prm/likelihood_prm.py)."
    )


def _taken_text(recipe: dict) -> str:
    taken = recipe.get("taken_from_shipped") or []
    if not taken:
        return ""
    return (f" This build took {', '.join(taken)} from the models shipped before it (`--from-shipped`) and reran the"
            " rest; the times of the stages it took are the earlier build's.")


def _calibration_row(name: str, m: dict | None) -> str:
    """One row of the held-out calibration table ("" for a measurement the build did not make)."""
    if not m:
        return ""
    return (f"| {name} | {m['brier_median']:.4f} | {m['ece_median']:.4f} | "
            f"{' / '.join(f'{v:.0%}' for v in m['coverage'].values())} | {m['pinball']:.4f} |\n")


def question_score_summary(test: dict) -> str:
    """The PRM's score of the question alone against the share of right samples per problem ("" if
    not measured): adaptive search sizes N by it, and the held-out calibration figures pool it with
    every prefix of a solution, where it is about one record in twelve."""
    m = test.get("question_calibration")
    if not m:
        return ""
    return (f"PRM question score against the share of right samples: Brier of the median {m['brier_median']:.4f}, "
            f"coverage q10 / q50 / q90 {' / '.join(f'{v:.0%}' for v in m['coverage'].values())} (ideal 10 / 50 / 90%)")


def _question_text(test: dict) -> str:
    summary = question_score_summary(test)
    if not summary:
        return ""
    return ("\nThe PRM question median is its score for the question alone (no step written yet), which adaptive\n"
            "search sizes N by; calibrated, it tracks pass@1.\n"
            f"{summary}; the share of {(k := test['samples_per_problem'])} samples is itself noisy, which adds its binomial\n"
            f"variance p(1-p)/{k} (at most {0.25 / k:.3f}) to that Brier.\n")


def _tables(manifest: dict[str, Any], test: dict[str, Any]) -> tuple[str, str, str]:
    """The card's Markdown rows: targets, results by level, and the task's levels."""
    rows = "\n".join(
        f"| {t.name} | {t.requirement} | {t.fmt.format(v)} | {'met' if ok else '**not met**'} |" for t, v,
        ok in check_targets(manifest)
    )
    levels = "\n".join(
        f"| {lvl} | {s['problems']} | {s['pass_at_1']:.1%} | {s['oracle']:.1%} | {s['prm_best']:.1%} | {s['majority']:.1%} | "
        f"{s.get('question_median', float('nan')):.2f} |"
        for lvl, s in sorted(test["by_level"].items(), key=lambda kv: int(kv[0]))
    )
    level_specs = "\n".join(
        f"| {i} | {lv['n_ops']} | {lv['add_digits']}-digit | 2..{lv['mul_max']} | {lv['max_value']:,} |"
        for i, lv in enumerate(manifest["task"]["levels"], start=1)
    )
    return rows, levels, level_specs


def _header(manifest: dict[str, Any], level_specs: str) -> str:
    """The card's title, how to rebuild, what the models are, and the task's levels."""
    g, p, c, r = manifest["generator"], manifest["prm"], manifest["calibration"], manifest["recipe"]
    return f"""# Default models

Two small models that make `edge-adapt` run out of the box, offline, on any laptop: a generator
that solves the default arithmetic task with a wide spread of difficulty (easy questions need no
search, hard ones do), and a quantile PRM calibrated for *this* generator. They are built by the
project's own recipe, from scratch, in about {r['total_seconds'] / 60:.0f} minutes on a CPU:

```bash
{r['command']}
```

## What they are

- **Generator** `{g['file']}`: a {g['n_params'] / 1e6:.1f}M-parameter Llama ({g['training']['layers']} layers,
  hidden {g['training']['hidden']}, {g['training']['heads']} heads, FFN {g['training']['ffn']}), {g['tokenizer']},
  trained for {g['training']['steps']} steps on the train split{_training_details(g['training'])}, exported to GGUF
  (F32 verified against PyTorch: max abs logit diff {g['export']['f32_max_abs_logit_diff']:.2g})
  and quantized to {g['quantization']}.
- **PRM** `{p['dir']}/`: {p['architecture']}, predicting the {', '.join(f'{q:.0%}' for q in p['quantile_levels'])}
  quantiles of the probability that the generator (at temperature 0.7) finishes correctly; trained with the pinball loss on
  {c['records']:,} Monte-Carlo records from {c['questions']} calibration questions (N={c['n_solutions']} solutions,
  M={c['n_continuations']} continuations per prefix, `{c['file']}`), exported to ONNX; the CPU runs the
  `{p['cpu_variant']}` variant.{_likelihood_text(p)}
- **The task**: chains like `Q:454+762*3`, that is (454+762)*3: one operation at a time on the running result, one
  per step, steps separated by a blank line, then `A:<answer>`. Levels:

| level | operations | + and - operands | multipliers | every value up to |
|---|---|---|---|---|
{level_specs}

"""


def write_model_card(out: Path, manifest: dict[str, Any]) -> Path:
    p, r = manifest["prm"], manifest["recipe"]
    test = manifest["metrics"]["generator_and_prm_on_test"]
    rows, levels, level_specs = _tables(manifest, test)
    held = manifest["metrics"]["prm_held_out"]
    below, k = held["after"]["below"], test["samples_per_problem"]
    stages = ", ".join(f"{name} {seconds / 60:.1f} min" for name, seconds in r["stage_seconds"].items())
    text = _header(manifest, level_specs) + f"""## What they are not

They know one synthetic task and nothing else: not a chat model, not a general math model. The PRM
is calibrated for this generator at temperature 0.7 only; with another generator or temperature
its probabilities mean something else (recalibrate: `edge-adapt export rollouts`, `edge-adapt export prm`).

## Targets (test split: {test['overall']['problems']} problems, never seen in training or calibration)

| measure | target | measured | |
|---|---|---|---|
{rows}

Coverage counts a Monte-Carlo target that ties a quantile (within half a Monte-Carlo step) as tau,
the randomized PIT for discrete targets (see docs/CALIBRATION.md); the literal "strictly below"
fractions are q10 {below['q10']:.1%}, q50 {below['q50']:.1%}, q90 {below['q90']:.1%}.

### By level ({test['samples_per_problem']} samples per problem, temperature {test['temperature']})

| level | problems | pass@1 | oracle pass@{k} | PRM best-of-{k} | majority vote | PRM question median |
|---|---|---|---|---|---|---|
{levels}
{_question_text(test)}
### PRM calibration on held-out calibration questions

| | Brier (median) | ECE (median) | coverage q10 / q50 / q90 | pinball |
|---|---|---|---|---|
{_calibration_row("before training (head at the base rate)", held["before"])}{_calibration_row(
    "after, text only (without the likelihood term)", held.get("text_only"))}{_calibration_row("after", held["after"])}
Reliability diagram: `{p['dir']}/reliability.png`.

## Rebuilding

`{r['command']}` (seeded; about {r['total_seconds'] / 60:.0f} minutes on {r['machine']}; stages:
{stages}).{_taken_text(r)} `python benchmarks/eval_default_models.py`
re-measures the table above from the shipped files. `manifest.json` lists every file with its sha256.
"""
    path = out / "MODEL_CARD.md"
    atomic_write_text(path, text)
    return path
