"""The whole quantile-PRM build: calibration records -> trained quantile PRM -> checked ONNX bundle.

Behind ``edge-adapt export prm``. Held-out questions (never prefixes) measure calibration before
training (the initialised head) and after, and the reliability diagram is saved next to the bundle.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from edge_adapt.errors import EdgeAdaptError, TokenizerError, UnsupportedModelError
from edge_adapt.prm.format import PRMFormat, pad_token_id
from edge_adapt_tools.gguf.dequantize import dequantize_gguf
from edge_adapt_tools.prm.calibration_data import CalibrationRecord, read_records
from edge_adapt_tools.prm.data import build_sequences, split_questions
from edge_adapt_tools.prm.export import PRMExport, check_output_dir, export_prm_bundle
from edge_adapt_tools.prm.likelihood_prm import LikelihoodFit, add_likelihood_term, likelihood_source
from edge_adapt_tools.prm.metrics import CalibrationMetrics, calibration_metrics, reliability_diagram
from edge_adapt_tools.prm.quantile_prm import QUANTILE_LEVELS, from_backbone, from_two_label_prm
from edge_adapt_tools.prm.train import TrainResult, TrainSettings, predict, train_quantile_prm

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PRMBuildSettings:
    fmt: PRMFormat = field(default_factory=PRMFormat)
    levels: tuple[float, ...] = QUANTILE_LEVELS
    holdout: float = 0.2
    train: TrainSettings = field(default_factory=TrainSettings)
    base_kind: str = "auto"  # "prm" (two-label token classification), "backbone", or "auto"
    int8: bool = True
    fp16: bool = True
    # the generator, as its Hugging Face folder or its GGUF file: its likelihood of the solution
    # joins the PRM's logits (edge_adapt_tools/prm/likelihood_prm.py); None for a PRM that reads the text alone
    likelihood_generator: str | None = None
    # share of the training questions the head never trains on: the likelihood combination is
    # fitted on them (fitted on the head's own training questions it would trust the head's
    # overfit step scores)
    likelihood_fit_share: float = 0.2


@dataclass(frozen=True)
class PRMBuild:
    export: PRMExport
    training: TrainResult
    before: CalibrationMetrics
    after: CalibrationMetrics
    reliability_png: Path
    base_kind: str
    counts: dict[str, int]
    likelihood: LikelihoodFit | None = None
    after_prm_only: CalibrationMetrics | None = None  # held out, before the likelihood term joined


def _metrics(predicted: tuple, levels: tuple[float, ...]) -> CalibrationMetrics:
    preds, targets, n_rollouts = predicted
    return calibration_metrics(preds, targets, levels, n_rollouts)


def _likelihood_generator_folder(generator: Path, tokenizer_json: Path, cleanup: ExitStack) -> Path:
    """The generator as a Hugging Face folder: a GGUF file is dequantized (with the PRM's
    tokenizer, which must match its vocabulary) into a temporary folder that lives as long as
    ``cleanup``; the ONNX graph embeds the weights, so nothing of it is needed afterwards."""
    if not generator.is_file():
        return generator
    if generator.suffix != ".gguf":
        raise UnsupportedModelError(f"{generator}: give the generator's Hugging Face folder or its .gguf file.")
    folder = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="edge-adapt-generator-")))
    log.info("dequantizing %s for the likelihood term", generator)
    return dequantize_gguf(generator, tokenizer_json, folder / "generator")


def detect_base_kind(base: Path) -> str:
    config_file = base / "config.json"
    if not config_file.is_file():
        raise UnsupportedModelError(f"{base}: no config.json; give a Hugging Face model folder.")
    config = json.loads(config_file.read_text())
    arch = " ".join(config.get("architectures") or [])
    if "TokenClassification" in arch:
        if len(config.get("id2label") or {0: "", 1: ""}) != 2:
            raise UnsupportedModelError(f"{base}: a token-classification PRM must have two labels (wrong, right).")
        return "prm"
    if "CausalLM" in arch:
        return "backbone"
    raise UnsupportedModelError(f"{base}: {arch or 'unknown architecture'} is neither a two-label PRM nor a causal-LM backbone.")


def build_quantile_prm(
    base: str | Path,
    calibration: str | Path,
    out_dir: str | Path,
    settings: PRMBuildSettings = PRMBuildSettings(),
    progress: Callable[[str], None] = lambda message: None,
) -> PRMBuild:
    base = Path(base)
    check_output_dir(out_dir)  # before minutes of training
    records = _read_checked(calibration)
    train_ids, fit_ids, held_ids = _split(records, settings, calibration)
    tokenizer_json = base / "tokenizer.json"
    tokenizer = _tokenizer(tokenizer_json)
    pad_id = pad_token_id(tokenizer)
    train = build_sequences(records, tokenizer, settings.fmt, train_ids)
    # calibration is measured where the paper measures it, on the sampled solutions' points; the
    # continuations of held-out questions are left out of both sides
    sampled = [r for r in records if r.origin == "sample"]
    held = build_sequences(sampled, tokenizer, settings.fmt, held_ids)
    held_records = [r for r in sampled if r.question_id in held_ids]

    with ExitStack() as cleanup:
        lik_source = None
        if settings.likelihood_generator is not None:
            generator_dir = _likelihood_generator_folder(Path(settings.likelihood_generator), tokenizer_json, cleanup)
            lik_source = likelihood_source(generator_dir, tokenizer, settings.fmt)
        kind = detect_base_kind(base) if settings.base_kind == "auto" else settings.base_kind
        progress(f"building the quantile head on the {kind} at {base}")
        model = _initial_model(base, kind, settings.levels, train)

        model, training, before_preds, after_preds = _train(model, train, held, settings, pad_id, progress)
        likelihood, after_prm_only = None, None
        if lik_source is not None:
            progress(f"fitting the likelihood term of the generator at {lik_source.generator_dir}")
            after_prm_only = _metrics(after_preds, settings.levels)
            fit = build_sequences(records, tokenizer, settings.fmt, fit_ids)
            model, likelihood = add_likelihood_term(model, lik_source, fit, settings.levels, pad_id,
                                                    settings.train.logistic_weight)
            after_preds = predict(model, held, pad_id=pad_id)
        before, after = _metrics(before_preds, settings.levels), _metrics(after_preds, settings.levels)
        for warning in after.warnings:
            log.warning("held-out calibration: %s", warning)

        progress("exporting to ONNX and checking it")
        counts = _counts(records, (train_ids, fit_ids, held_ids), len(held_records), len(train), len(held))
        source, extra = _provenance(base, kind, model, settings, likelihood, after_prm_only)
        exported = export_prm_bundle(
            model, tokenizer_json, out_dir, fmt=settings.fmt, levels=settings.levels, held_out_records=held_records,
            parity_sequences=held, pad_id=pad_id, generator=dict(records[0].generator), source=source,
            metrics={"held_out": {"before": before.to_dict(), "after": after.to_dict()}, **extra, "counts": counts,
                     "split": {"holdout": settings.holdout, "seed": settings.train.seed,
                               "likelihood_fit_share": settings.likelihood_fit_share},
                     "training": {"best_step": training.best_step, "seconds": round(training.seconds, 1)}},
            int8=settings.int8, fp16=settings.fp16,
        )
        png = reliability_diagram({"before": before_preds, "after": after_preds}, settings.levels,
                                  Path(out_dir) / "reliability.png")
        return PRMBuild(exported, training, before, after, png, kind, counts, likelihood, after_prm_only)


def _read_checked(calibration: str | Path) -> list[CalibrationRecord]:
    """The calibration records, refused when empty or from more than one generator or setting."""
    records = read_records(calibration)
    if not records:
        raise EdgeAdaptError(f"{calibration}: no calibration records; run `edge-adapt export rollouts` first.")
    generators = {json.dumps(r.generator, sort_keys=True) for r in records}
    if len(generators) > 1:
        raise EdgeAdaptError(f"{calibration}: records come from {len(generators)} different generators or settings; calibrate "
                             f"for one.")
    return records


def _split(records: list[CalibrationRecord], settings: PRMBuildSettings, calibration: str | Path
           ) -> tuple[set[str], set[str], set[str]]:
    """Question ids to train the head on, to fit the likelihood term on (none without one), and held out."""
    train_ids, held_ids = split_questions(records, settings.holdout, settings.train.seed)
    if not train_ids or not held_ids:
        raise EdgeAdaptError(
            f"{calibration}: {len(train_ids)} training and {len(held_ids)} held-out questions; "
            "need some of each (more questions, or another --holdout)."
        )
    fit_ids: set[str] = set()
    if settings.likelihood_generator is not None:
        train_ids, fit_ids = split_questions([r for r in records if r.question_id in train_ids], settings.likelihood_fit_share,
                                             settings.train.seed, salt="likelihood-fit:")
        if not train_ids or not fit_ids:
            raise EdgeAdaptError(
                f"{calibration}: {len(train_ids)} questions to train the head on and {len(fit_ids)} to fit the likelihood "
                "term on; need some of each (more questions, or another likelihood fit share)."
            )
    return train_ids, fit_ids, held_ids


def _initial_model(base: Path, kind: str, levels: tuple[float, ...], train: list[Any]) -> Any:
    """The quantile model before training: a two-label PRM's head turned into quantiles, or a
    fresh head on a backbone starting at the training labels' base rate."""
    if kind == "prm":
        return from_two_label_prm(base, levels)
    rate = sum(t for s in train for t in s.targets) / sum(len(s.targets) for s in train)
    return from_backbone(base, levels, base_rate=rate)


def _provenance(base: Path, kind: str, model: Any, settings: PRMBuildSettings, likelihood: LikelihoodFit | None,
                after_prm_only: CalibrationMetrics | None) -> tuple[dict[str, str], dict[str, Any]]:
    """Where the PRM came from, and the likelihood term's fit and the text-only calibration where it has one."""
    source = {"base": str(base), "kind": kind, "architecture": type(model).__name__}
    if likelihood is None or after_prm_only is None:  # set together
        return source, {}
    source["likelihood_generator"] = str(settings.likelihood_generator)
    return source, {"likelihood": likelihood.to_dict(), "held_out_prm_only": after_prm_only.to_dict()}


def _tokenizer(tokenizer_json: Path) -> Tokenizer:
    if not tokenizer_json.is_file():
        raise TokenizerError(f"{tokenizer_json.parent}: no tokenizer.json; the PRM's tokenizer must travel to the device as "
                             "tokenizer.json.")
    return Tokenizer.from_file(str(tokenizer_json))


def _counts(records: list[CalibrationRecord], ids: tuple[set[str], set[str], set[str]], held_records: int,
            train_sequences: int, held_sequences: int) -> dict[str, int]:
    """What the PRM was trained, fitted and judged on (``ids``: train, likelihood fit, held out)."""
    train_ids, fit_ids, held_ids = ids
    return {
        "train_questions": len(train_ids), "likelihood_fit_questions": len(fit_ids), "held_out_questions": len(held_ids),
        "train_records": sum(r.question_id in train_ids for r in records), "held_out_records": held_records,
        "train_continuations": sum(r.question_id in train_ids and r.origin == "continuation" for r in records),
        "likelihood_fit_records": sum(r.question_id in fit_ids for r in records),
        "train_sequences": train_sequences, "held_out_sequences": held_sequences,
    }


def _train(model: Any, train: list[Any], held: list[Any], settings: PRMBuildSettings, pad_id: int,
           progress: Callable[[str], None]) -> tuple[Any, TrainResult, tuple, tuple]:
    """The trained model, how training went, and the held-out predictions before and after it."""
    before = predict(model, held, pad_id=pad_id)
    progress(f"training on {len(train)} sequences ({sum(len(s.targets) for s in train)} labels)")
    model, training = train_quantile_prm(
        model, train, held, settings.levels, settings.train, pad_id=pad_id,
        progress=lambda step, total, loss: progress(f"training step {step}/{total}, pinball {loss:.4f}"),
    )
    return model, training, before, predict(model, held, pad_id=pad_id)
