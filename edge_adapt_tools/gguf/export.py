"""The whole generator export: checkpoint -> verified GGUF -> quantized GGUFs, with a report.

A base file that fails verification never appears under its final name: it is converted and
checked under a temporary name, and only renamed once tokenization and logits match.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edge_adapt.errors import EdgeAdaptError, VerificationError
from edge_adapt.files import atomic_output
from edge_adapt_tools.gguf.checkpoint import open_checkpoint
from edge_adapt_tools.gguf.convert import OUTTYPES, ConversionResult, convert_checkpoint
from edge_adapt_tools.gguf.quantize import QuantizationReport, quantize_gguf, resolve_quant_type
from edge_adapt_tools.gguf.tokenizer import load_tokenizer_export
from edge_adapt_tools.gguf.verify import (
    GREEDY_ENFORCED,
    TOLERANCES,
    LogitParity,
    Reference,
    TokenizerParity,
    check_logits,
    check_tokenizer,
    reference_outputs,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuantizedFile:
    report: QuantizationReport
    parity: LogitParity | None  # against PyTorch, reported (quantization moves logits by design)


@dataclass(frozen=True)
class GGUFExport:
    conversion: ConversionResult
    tokenizer: TokenizerParity | None = None
    logits: LogitParity | None = None
    quantized: list[QuantizedFile] = field(default_factory=list)


def export_gguf(
    checkpoint_dir: str | Path,
    out_dir: str | Path,
    *,
    outtype: str = "f32",
    quant_types: Sequence[str] = (),
    verify: bool = True,
    name: str | None = None,
    threads: int | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> GGUFExport:
    """Convert, verify and quantize; files are named ``{name}-{TYPE}.gguf`` in ``out_dir``."""
    ckpt = open_checkpoint(checkpoint_dir)
    quant_types = [resolve_quant_type(q) for q in quant_types]  # fail before any work
    if outtype not in OUTTYPES:
        raise EdgeAdaptError(f"outtype {outtype!r} is not one of {', '.join(OUTTYPES)}")
    stem = name or ckpt.name
    out = Path(out_dir)
    base_path = out / f"{stem}-{outtype.upper()}.gguf"

    tokenizer = load_tokenizer_export(ckpt.path, ckpt.vocab_size).tokenizer
    reference: Reference | None = None
    tok_parity: TokenizerParity | None = None
    logit_parity: LogitParity | None = None
    with atomic_output(base_path) as staged:
        progress(f"converting {ckpt.arch.hf_name} to {outtype.upper()}")
        conversion = dataclasses.replace(convert_checkpoint(ckpt, staged, outtype), path=base_path)
        if verify:
            progress("checking tokenization against the Hugging Face tokenizer")
            tok_parity = check_tokenizer(staged, tokenizer)
            progress("checking logits and greedy text against PyTorch")
            reference = reference_outputs(ckpt.path, tokenizer)
            logit_parity = check_logits(staged, reference, TOLERANCES[outtype] * ckpt.arch.tolerance_factor,
                                        GREEDY_ENFORCED[outtype])
            _raise_unless_verified(base_path, tok_parity, logit_parity)

    quantized = []
    for qtype in quant_types:
        progress(f"quantizing to {qtype}")
        report = quantize_gguf(base_path, out / f"{stem}-{qtype}.gguf", qtype, threads=threads)
        parity = check_logits(report.path, reference, tolerance=None) if reference is not None else None
        quantized.append(QuantizedFile(report, parity))
    return GGUFExport(conversion=conversion, tokenizer=tok_parity, logits=logit_parity, quantized=quantized)


def _raise_unless_verified(path: Path, tok: TokenizerParity, logits: LogitParity) -> None:
    problems = []
    if not tok.passed:
        first = tok.mismatches[0]
        problems.append(
            f"tokenization differs on {len(tok.mismatches)} of {tok.n_probes} probes (first: {first.text[:40]!r}, "
            f"token {first.first_difference}: HF {first.reference[first.first_difference:][:5]} vs "
            f"GGUF {first.gguf[first.first_difference:][:5]})"
        )
    if not logits.within_tolerance:
        problems.append(
            f"logits differ by up to {logits.max_abs_diff:.3g} (allowed {logits.tolerance:g} x "
            f"{max(1.0, logits.logit_scale):.3g})"
        )
    if logits.greedy_enforced and not logits.greedy_match:
        problems.append(f"the greedy continuation differs (HF {logits.greedy_reference[:8]} vs GGUF {logits.greedy_gguf[:8]})")
    if problems:
        raise VerificationError(
            f"{path.name}: the GGUF does not reproduce the checkpoint: {'; '.join(problems)}. "
            "The file was not written. Please report this with the checkpoint's config.json."
        )
