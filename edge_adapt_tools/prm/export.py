"""Quantile PRM -> ONNX bundle for the device, with the checks that make it trustworthy.

1. Export with optimum (token classification, dynamic batch and sequence axes). optimum registers
   Qwen2 for token classification but not Llama: see ``register_llama_token_classification``.
2. Parity: ONNX Runtime must reproduce PyTorch's logits (max abs diff printed, 1e-3 relative).
3. int8 (dynamic quantization, CPU): kept only if, scored through the device runtime on held-out
   questions, its calibration metrics stay within ``INT8_TOLERANCE`` of fp32; else dropped, with why.
4. fp16 (for GPU providers): converted with ONNX Runtime's float16 tool; checked here against fp32
   on the CPU when the CPU provider can run it, otherwise left to the runtime's load-time check.
5. The folder is assembled under a temporary name and renamed into place when complete.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedModel

from edge_adapt.errors import EdgeAdaptError, VerificationError
from edge_adapt.prm.bundle import CONFIG_FILE, TOKENIZER_FILE, PRMBundle
from edge_adapt.prm.format import PRMFormat
from edge_adapt.prm.scorer import sigmoid
from edge_adapt_tools.prm.calibration_data import CalibrationRecord
from edge_adapt_tools.prm.data import TrainingSequence
from edge_adapt_tools.prm.likelihood_prm import GeneratorAwarePRM
from edge_adapt_tools.prm.metrics import CalibrationMetrics, runtime_metrics

log = logging.getLogger(__name__)

# int8 is accepted when every held-out metric moves less than this from fp32.
INT8_TOLERANCE = {"brier_median": 0.005, "ece_median": 0.02, "coverage": 0.03}
PARITY_TOLERANCE = 1e-3  # ONNX vs PyTorch logits, relative to the largest |logit| (at least 1)


@dataclass(frozen=True)
class VariantCheck:
    variant: str
    file: str
    size_bytes: int
    metrics: CalibrationMetrics | None  # held-out, through the device runtime (None if not measured)
    accepted: bool
    note: str


@dataclass(frozen=True)
class PRMExport:
    path: Path
    parity_max_abs_diff: float
    parity_logit_scale: float
    variants: list[VariantCheck]
    cpu_variant: str


def register_llama_token_classification() -> None:
    """Teach optimum to export Llama for token classification.

    optimum registers Qwen2 for this task but not Llama, and only consults custom configs for
    architectures it does not know at all. The graph is Llama's decoder with a linear head on
    every position, which Llama's own ONNX config describes; it is added to optimum's task
    registry through optimum's registration hook (existing Llama tasks are left untouched).
    """
    from optimum.exporters.onnx.model_configs import LlamaOnnxConfig
    from optimum.exporters.tasks import TasksManager

    TasksManager.create_register("onnx")("llama", "token-classification")(LlamaOnnxConfig)


def export_onnx(model: PreTrainedModel | GeneratorAwarePRM, out_dir: Path, opset: int = 18) -> Path:
    from optimum.exporters.onnx import onnx_export_from_model
    from optimum.exporters.onnx.convert import export_pytorch
    from optimum.exporters.tasks import TasksManager

    register_llama_token_classification()
    model = model.float().eval()
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(model, GeneratorAwarePRM):
            # not a transformers class, but the same inputs and output as its PRM: export it
            # with the PRM's ONNX config, under optimum's patches that make the decoders traceable
            config = TasksManager.get_exporter_config_constructor(
                "onnx", model=model.prm, task="token-classification", library_name="transformers")(model.config)
            export_pytorch(model, config, opset, Path(tmp) / "model.onnx")
        else:
            onnx_export_from_model(model, tmp, task="token-classification", opset=opset, do_validation=False)
        for f in Path(tmp).glob("model.onnx*"):  # model.onnx and, for >2 GB models, model.onnx_data
            shutil.move(str(f), out_dir / f.name)
    return out_dir / "model.onnx"


def _torch_logits(model: PreTrainedModel, seqs: Sequence[TrainingSequence]) -> list[np.ndarray]:
    out = []
    with torch.no_grad():
        for s in seqs:
            ids = torch.tensor([s.input_ids])
            out.append(model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0].float().numpy())
    return out


def check_parity(model: PreTrainedModel, onnx_path: Path, seqs: Sequence[TrainingSequence], pad_id: int) -> tuple[float, float]:
    """Max |logit difference| between PyTorch and ONNX Runtime over whole sequences, padded as a batch."""
    import onnxruntime as ort

    seqs = list(seqs)[:16]
    reference = _torch_logits(model, seqs)
    width = max(len(s.input_ids) for s in seqs)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, : len(s.input_ids)] = s.input_ids
        mask[i, : len(s.input_ids)] = 1
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input_ids": ids, "attention_mask": mask})[:1]
    diff = max(float(np.abs(logits[i, : len(s.input_ids)] - ref).max()) for i,
               (s, ref) in enumerate(zip(seqs, reference, strict=True)))
    scale = max(float(np.abs(ref).max()) for ref in reference)
    return diff, scale


def _within_int8_tolerance(fp32: CalibrationMetrics, int8: CalibrationMetrics) -> tuple[bool, str]:
    deltas = {
        "brier_median": abs(int8.brier_median - fp32.brier_median),
        "ece_median": abs(int8.ece_median - fp32.ece_median),
        "coverage": max(abs(int8.coverage[k] - fp32.coverage[k]) for k in fp32.coverage),
    }
    bad = [f"{k} moved {v:.4f} (allowed {INT8_TOLERANCE[k]})" for k, v in deltas.items() if v > INT8_TOLERANCE[k]]
    summary = ", ".join(f"Δ{k} {v:.4f}" for k, v in deltas.items())
    return (not bad), ("; ".join(bad) if bad else f"within tolerance ({summary})")


def export_prm_bundle(
    model: PreTrainedModel,
    tokenizer_json: Path,
    out_dir: str | Path,
    *,
    fmt: PRMFormat,
    levels: Sequence[float],
    held_out_records: Sequence[CalibrationRecord],
    parity_sequences: Sequence[TrainingSequence],
    pad_id: int,
    generator: dict,
    source: dict,
    metrics: dict,
    int8: bool = True,
    fp16: bool = True,
) -> PRMExport:
    out = Path(out_dir)
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        fp32_path = export_onnx(model, staging)
        diff, scale = check_parity(model, fp32_path, parity_sequences, pad_id)
        if diff > PARITY_TOLERANCE * max(1.0, scale):
            raise VerificationError(
                f"ONNX Runtime does not reproduce PyTorch: max abs logit diff {diff:.3g} (allowed "
                f"{PARITY_TOLERANCE:g} x {max(1.0, scale):.3g}); nothing was written."
            )
        shutil.copy(tokenizer_json, staging / TOKENIZER_FILE)
        models = {"fp32": fp32_path.name}
        bundle = PRMBundle(staging, tuple(levels), fmt, models, "fp32", generator, source, metrics)
        bundle.save()
        fp32_metrics = runtime_metrics(staging, "fp32", held_out_records)
        variants = [VariantCheck("fp32", fp32_path.name, fp32_path.stat().st_size, fp32_metrics, True,
                                 f"parity with PyTorch: max abs diff {diff:.2g}")]
        cpu_variant = "fp32"
        if int8:
            check = _add_int8(staging, fp32_path, bundle, held_out_records, fp32_metrics)
            variants.append(check)
            if check.accepted:
                models["int8"] = check.file
                cpu_variant = "int8"
        if fp16:
            check = _add_fp16(staging, fp32_path, parity_sequences, pad_id)
            variants.append(check)
            if check.accepted:
                models["fp16"] = check.file
        metrics = {**metrics, "variants": {v.variant: (v.metrics.to_dict() if v.metrics else None) for v in variants}}
        PRMBundle(staging, tuple(levels), fmt, models, cpu_variant, generator, source, metrics).save()
        _replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return PRMExport(out, diff, scale, variants, cpu_variant)


def _add_int8(staging: Path, fp32_path: Path, bundle: PRMBundle, records, fp32_metrics) -> VariantCheck:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    path = staging / "model_int8.onnx"
    prepared = staging / "model_prep.onnx"
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)  # ORT's recommended first pass
    quantize_dynamic(str(prepared), str(path), weight_type=QuantType.QInt8)
    prepared.unlink()
    PRMBundle(staging, bundle.quantile_levels, bundle.format, {**bundle.models, "int8": path.name}, "fp32",
              bundle.generator, bundle.source, bundle.metrics).save()
    m = runtime_metrics(staging, "int8", records)
    ok, note = _within_int8_tolerance(fp32_metrics, m)
    size = path.stat().st_size
    if not ok:
        path.unlink()
        note = f"rejected, not shipped: {note}"
    return VariantCheck("int8", path.name, size, m, ok, note)


def _add_fp16(staging: Path, fp32_path: Path, seqs: Sequence[TrainingSequence], pad_id: int) -> VariantCheck:
    import onnx
    import onnxruntime as ort
    from onnxruntime.transformers.float16 import convert_float_to_float16

    path = staging / "model_fp16.onnx"
    onnx.save(convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True), str(path))
    seq = list(seqs)[0]
    feed = {"input_ids": np.array([seq.input_ids], dtype=np.int64),
            "attention_mask": np.ones((1, len(seq.input_ids)), dtype=np.int64)}
    try:
        ref = ort.InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"]).run(None, feed)[0]
        out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]
        diff = float(np.abs(sigmoid(out.astype(np.float32)) - sigmoid(ref.astype(np.float32))).max())
        note = f"for GPU providers; on CPU its probabilities differ from fp32 by at most {diff:.2g}"
        ok = diff < 2e-2
        if not ok:
            note = f"rejected, not shipped: probabilities differ from fp32 by {diff:.2g}"
    except Exception as exc:  # the CPU provider lacks fp16 kernels for some ops
        why = str(exc).splitlines()[0][:80]
        ok, note = True, f"for GPU providers; not checkable on this CPU ({why}); checked at load time on the GPU"
    size = path.stat().st_size
    if not ok:
        path.unlink()
    return VariantCheck("fp16", path.name, size, None, ok, note)


def _prm_owns(path: Path) -> bool:
    """A file an exported PRM folder holds: its config, tokenizer, ONNX models (and their external
    weights), the selector model and the reliability plot written beside them."""
    name = path.name
    return path.is_file() and (name in (CONFIG_FILE, TOKENIZER_FILE, "selector_model.json", "reliability.png")
                               or name.endswith((".onnx", ".onnx.data")))


def check_output_dir(out: str | Path) -> Path:
    """Where a PRM folder may be written, checked before any work: a new or empty folder, or an
    existing PRM folder (replaced once the new one is complete). Anything else is refused, so that
    no file of the user's is ever deleted."""
    out = Path(out)
    resolved = out.resolve()
    if resolved == Path.cwd().resolve() or resolved in Path.cwd().resolve().parents or resolved == Path(resolved.anchor):
        raise EdgeAdaptError(f"-o {out}: give the PRM a folder of its own (e.g. ./prm), not the current folder or one above it")
    if resolved.exists():
        if not resolved.is_dir():
            raise EdgeAdaptError(f"-o {out} is a file; give a folder for the PRM")
        if any(resolved.iterdir()) and not (resolved / CONFIG_FILE).is_file():
            raise EdgeAdaptError(f"-o {out} holds files that are not a PRM (no {CONFIG_FILE}); give a new or empty folder, "
                                 "or an existing PRM folder to replace")
        foreign = sorted(p.name + ("/" if p.is_dir() else "") for p in resolved.iterdir() if not _prm_owns(p))
        if foreign:
            raise EdgeAdaptError(f"-o {out} is a PRM folder that also holds {len(foreign)} file(s) of yours "
                                 f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); replacing it would delete "
                                 "them: move them out, or give a new folder")
    parent = resolved.parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise EdgeAdaptError(f"-o {out}: {parent} is not writable")
    return out


def _replace_dir(staging: Path, out: Path) -> None:
    """Put ``staging`` at ``out``; an existing ``out`` is only removed once the new one is in place."""
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old)
    else:
        staging.rename(out)
