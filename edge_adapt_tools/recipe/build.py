"""The recipe that builds the shipped default models, end to end, seeded.

1. train a small Llama generator from scratch on the default task's train split; export it to
   GGUF (F32, verified against PyTorch) and quantize it;
2. build the calibration set with the rollout tool and the *quantized* generator, on the
   calibration split;
3. train the quantile PRM (backbone initialised from the quantized generator, dequantized,
   which also supplies the likelihood term) and export it to ONNX;
4. evaluate both on the test split and write ``manifest.json`` and ``MODEL_CARD.md``.

Each stage leaves its outputs and a stamp (its settings) in the work directory; a rerun with the
same settings skips finished stages, so an interrupted recipe resumes where it stopped. With
``from_shipped`` the first stages are taken from the models already in ``out_dir`` (checked
against their manifest), so the PRM can be rebuilt without retraining the generator.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_adapt.assembly import StackSettings, open_stack
from edge_adapt.files import atomic_write_text
from edge_adapt.generator import GeneratorConfig
from edge_adapt.models import MANIFEST, sha256_of
from edge_adapt.prm import PRMFormat
from edge_adapt.search import BestOfN
from edge_adapt.settings import ModelSettings
from edge_adapt.tasks import ArithmeticTask
from edge_adapt.tasks.arithmetic import TEST_PER_LEVEL
from edge_adapt_tools.gguf.dequantize import dequantize_gguf
from edge_adapt_tools.gguf.export import export_gguf
from edge_adapt_tools.prm.calibration_data import read_records
from edge_adapt_tools.prm.likelihood_prm import LIKELIHOOD_FORM
from edge_adapt_tools.prm.pipeline import PRMBuildSettings, build_quantile_prm
from edge_adapt_tools.prm.rollouts import RolloutSettings, build_calibration_set
from edge_adapt_tools.prm.selector import SELECTOR_FORM, calibrate_selector
from edge_adapt_tools.prm.train import TrainSettings
from edge_adapt_tools.recipe.model_card import write_model_card
from edge_adapt_tools.recipe.model_eval import EASY_SEARCH_N, EVALUATION_FORM, evaluate_models, time_easy_search
from edge_adapt_tools.recipe.stages import (
    CALIBRATION_FILE,
    GENERATOR_FILE,
    PRM_DIR,
    Stages,
    stage_keys,
    stamp,
    take_shipped_stages,
    task_levels,
)
from edge_adapt_tools.recipe.train_generator import GeneratorTrainSettings, train_generator


@dataclass(frozen=True)
class RecipeSettings:
    seed: int = 0
    generator: GeneratorTrainSettings = field(default_factory=GeneratorTrainSettings)
    quant: str = "Q8_0"
    calibration_per_level: int = 40
    rollouts: RolloutSettings = field(default_factory=RolloutSettings)
    prm: PRMBuildSettings = field(
        default_factory=lambda: PRMBuildSettings(
            fmt=PRMFormat(question_template="Q:{question}\n", step_separator="\n\n", max_length=256),
            holdout=0.2,
            # 20 epochs (a few hundred optimizer steps; the best by held-out pinball is kept), and
            # the logistic term: with the pinball loss alone the heads
            # saturated at the marginal quantiles (q50 ~ 3e-5 for every prefix, Brier 0.224)
            train=TrainSettings(epochs=20, batch_size=16, lr=3e-4, head_lr=1e-3, logistic_weight=1.0),
        )
    )
    # the PRM also reads the generator's likelihood of the solution (edge_adapt_tools/prm/likelihood_prm.py):
    # the trained head alone barely tells a wrong step from a right one
    generator_likelihood: bool = True
    # fresh calibration-split questions per level, 16 samples each, that adaptive search's answer
    # model is fitted on besides the calibration file's untrained questions (edge_adapt_tools/prm/selector.py)
    selector_fresh_per_level: int = 100
    test_per_level: tuple[int, ...] = TEST_PER_LEVEL  # 500 problems
    test_samples: int = 16
    threads: int | None = None


@dataclass(frozen=True)
class _Recipe:
    """One recipe run: where it writes, with what settings; the stages read their inputs from here."""

    out: Path
    work: Path
    settings: RecipeSettings
    log: Callable[[str], None]
    task: ArithmeticTask = field(default_factory=ArithmeticTask)

    @property
    def gen_hf(self) -> Path:
        return self.work / "generator-hf"

    @property
    def gen_file(self) -> Path:
        return self.out / GENERATOR_FILE.format(quant=self.settings.quant)

    @property
    def calibration(self) -> Path:
        return self.work / CALIBRATION_FILE


def run_recipe(
    out_dir: str | Path,
    work_dir: str | Path,
    settings: RecipeSettings = RecipeSettings(),
    log: Callable[[str], None] = print,
    from_shipped: bool = False,
) -> dict[str, Any]:
    """Build the default models into ``out_dir``; returns the manifest. ``from_shipped``: keep the
    generator and calibration set already in ``out_dir`` and rebuild from the PRM on."""
    out, work = Path(out_dir), Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    run, stages = _Recipe(out, work, settings, log), Stages(work, log)
    if from_shipped:
        take_shipped_stages(out, work, settings, stages)
    training = stages.run("1-train-generator", stage_keys(settings)["1-train-generator"], lambda: _train(run))
    exported = stages.run("2-export-generator", stage_keys(settings, training)["2-export-generator"], lambda: _export(run))
    rollout_report = stages.run("3-rollouts", stage_keys(settings, training, exported)["3-rollouts"], lambda: _rollouts(run))
    prm_report = stages.run("4-prm", [rollout_report, stamp(dataclasses.asdict(settings.prm)), settings.generator_likelihood,
                                      LIKELIHOOD_FORM, exported["sha256"], settings.seed], lambda: _prm(run))
    stages.run("4b-selector", [prm_report, SELECTOR_FORM, settings.selector_fresh_per_level], lambda: _selector(run))
    shutil.rmtree(out / PRM_DIR, ignore_errors=True)
    shutil.copytree(work / PRM_DIR, out / PRM_DIR)
    shutil.copy(run.calibration, out / CALIBRATION_FILE)
    evaluation = stages.run("5-evaluate", [exported["sha256"], prm_report, settings.test_per_level, settings.test_samples,
                                           settings.seed, EVALUATION_FORM], lambda: _evaluate(run))
    manifest = _manifest(out, settings, training, exported, rollout_report, prm_report, evaluation, stages.seconds, stages.taken)
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    write_model_card(out, manifest)
    return manifest


def _train(run: _Recipe) -> dict[str, Any]:
    """1. The generator, trained from scratch on the task's train split."""
    gs = dataclasses.replace(run.settings.generator, seed=run.settings.seed, threads=run.settings.threads)
    last = [time.perf_counter()]

    def progress(step: int, total: int, loss: float) -> None:
        if step % 100 == 0 or step == total:
            run.log(f"  generator step {step}/{total}, loss {loss:.4f} ({time.perf_counter() - last[0]:.0f}s since the last "
                    f"report)")
            last[0] = time.perf_counter()

    return dataclasses.asdict(train_generator(run.task, run.gen_hf, gs, progress))


def _export(run: _Recipe) -> dict[str, Any]:
    """2. The generator as GGUF, checked against PyTorch, and quantized."""
    result = export_gguf(run.gen_hf, run.work / "gguf", name="generator", quant_types=[run.settings.quant])
    shutil.copy(result.quantized[0].report.path, run.gen_file)
    lg, q = result.logits, result.quantized[0]
    return {
        "f32_max_abs_logit_diff": lg.max_abs_diff, "f32_greedy_match": lg.greedy_match,
        "tokenizer_probes": result.tokenizer.n_probes, "quantized_max_abs_logit_diff": q.parity.max_abs_diff,
        "quantized_top1_agreement": q.parity.top1_agreement, "tensor_types": q.report.tensor_types,
        "fallbacks": len(q.report.fallbacks), "sha256": sha256_of(run.gen_file),
    }


def _rollouts(run: _Recipe) -> dict[str, Any]:
    """3. The calibration set: the quantized generator's rollouts on the calibration split."""
    stale = run.work / "3-rollouts.done.json"
    if stale.is_file():  # finished under other settings: start afresh (and resume this run if interrupted)
        run.calibration.unlink(missing_ok=True)
        stale.unlink()
    settings = run.settings
    problems = run.task.problems("calibration", settings.calibration_per_level, seed=settings.seed)
    rs = dataclasses.replace(settings.rollouts, seed=settings.seed)
    config = GeneratorConfig(n_ctx=8192, n_seq_max=256, n_threads=settings.threads)
    report = build_calibration_set(
        run.gen_file, run.task, problems, run.calibration, rs, config,
        progress=lambda p, done, total: run.log(f"  rollouts {done}/{total}") if done % 50 == 0 or done == total else None,
    )
    return dataclasses.asdict(report)


def _prm(run: _Recipe) -> dict[str, Any]:
    """4. The quantile PRM, from the quantized generator dequantized: it starts from the weights
    that sample on the device and reads their likelihoods (edge_adapt_tools/gguf/dequantize.py)."""
    settings, work = run.settings, run.work
    tokenizer = run.gen_hf / "tokenizer.json" if (run.gen_hf / "tokenizer.json").is_file() else work / "tokenizer.json"
    generator = dequantize_gguf(run.gen_file, tokenizer, work / "generator-dequantized")
    ps = dataclasses.replace(settings.prm,
                             train=dataclasses.replace(settings.prm.train, seed=settings.seed, threads=settings.threads),
                             likelihood_generator=str(generator) if settings.generator_likelihood else None)
    build = build_quantile_prm(generator, run.calibration, work / PRM_DIR, ps, progress=lambda m: None)
    return {"before": build.before.to_dict(), "after": build.after.to_dict(), "counts": build.counts,
            "best_step": build.training.best_step, "cpu_variant": build.export.cpu_variant,
            "likelihood": build.likelihood.to_dict() if build.likelihood else None,
            "after_prm_only": build.after_prm_only.to_dict() if build.after_prm_only else None,
            "parity_max_abs_diff": build.export.parity_max_abs_diff,
            "variants": {v.variant: {"accepted": v.accepted, "note": v.note, "size_bytes": v.size_bytes,
                                     "metrics": v.metrics.to_dict() if v.metrics else None} for v in build.export.variants}}


def _selector(run: _Recipe) -> dict[str, Any]:
    """4b. Adaptive search's answer model for the PRM."""
    model = calibrate_selector(run.work / PRM_DIR, run.calibration, threads=run.settings.threads, generator=run.gen_file,
                               fresh_per_level=run.settings.selector_fresh_per_level, seed=run.settings.seed)
    return {"questions": model.provenance.get("questions"), "concentration": model.concentration}


def _evaluate(run: _Recipe) -> dict[str, Any]:
    """5. Both models on the test split, and how long an easy search takes."""
    settings = run.settings
    problems = run.task.problems("test", list(settings.test_per_level), seed=settings.seed)
    strategies = (BestOfN(n=settings.test_samples), BestOfN(n=EASY_SEARCH_N))
    with open_stack(StackSettings(ModelSettings(run.gen_file, run.out / PRM_DIR, settings.threads), run.task,
                                  strategies)) as stack:
        evaluation = evaluate_models(
            stack.generator, stack.prm, run.task, problems, samples=settings.test_samples, seed=settings.seed,
            progress=lambda done, total: run.log(f"  evaluated {done}/{total}") if done % 100 == 0 or done == total else None,
        )
        easy = [p for p in problems if p.level == 1][:20]
        evaluation.easy_search_seconds = time_easy_search(stack.searcher, easy, n=EASY_SEARCH_N)
    return evaluation.to_dict()


def _manifest(out: Path, settings: RecipeSettings, training: dict, exported: dict, rollouts: dict,
              prm: dict, evaluation: dict, seconds: dict[str, float], taken: list[str]) -> dict[str, Any]:
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name not in (MANIFEST, "MODEL_CARD.md", "README.md"))
    task = ArithmeticTask()
    prm_config = json.loads((out / PRM_DIR / "prm_config.json").read_text())
    calib = read_records(out / CALIBRATION_FILE)
    return {
        "version": 1,
        "created": time.strftime("%Y-%m-%d"),
        "recipe": {
            "command": f"edge-adapt export recipe --out {out.name} --seed {settings.seed}",
            "seed": settings.seed,
            "stage_seconds": {k: round(v, 1) for k, v in seconds.items()},
            "total_seconds": round(sum(seconds.values()), 1),
            "taken_from_shipped": taken,  # --from-shipped: these stages (and their times) are the earlier build's
            "machine": f"{platform.machine()}, {platform.system()}, {settings.threads or 'all'} threads",
        },
        "task": {"name": task.name, "levels": task_levels(task)},
        "generator": {
            "file": GENERATOR_FILE.format(quant=settings.quant),
            "architecture": "LlamaForCausalLM",
            "quantization": settings.quant,
            "n_params": training["n_params"],
            "tokenizer": "one token per character (byte-level BPE, no merges; llama.cpp pre-tokenizer 'smollm')",
            "training": {**training["settings"], "final_loss": round(training["final_loss"], 4),
                         "seconds": round(training["seconds"], 1)},
            "export": exported,
        },
        "prm": {
            "dir": PRM_DIR,
            "architecture": "LlamaForTokenClassification (backbone initialised from the quantized generator)"
                            + (" plus the generator's own likelihood of the solution" if prm.get("likelihood") else ""),
            "likelihood": prm.get("likelihood"),
            "quantile_levels": prm_config["quantile_levels"],
            "cpu_variant": prm["cpu_variant"],
            "format": prm_config["format"],
            "training": {**dataclasses.asdict(settings.prm.train), "best_step": prm["best_step"]},
            "variants": prm["variants"],
        },
        "calibration": {"file": CALIBRATION_FILE, "records": len(calib), "questions": len({r.question_id for r in calib}),
                        "rollouts": rollouts, "n_solutions": settings.rollouts.n_solutions,
                        "n_continuations": settings.rollouts.n_continuations},
        "metrics": {"generator_and_prm_on_test": evaluation, "prm_held_out": {"before": prm["before"], "after": prm["after"],
                                                                                   "text_only": prm.get("after_prm_only")}},
        "files": [{"path": str(p.relative_to(out)), "sha256": sha256_of(p), "size_bytes": p.stat().st_size} for p in files],
    }
