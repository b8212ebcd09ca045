"""Quantizing a GGUF with llama.cpp's own quantizer, and saying what it really did.

llama.cpp quietly stores a tensor in a different type when its rows cannot hold the requested
one (K-quants need rows that are multiples of 256, the legacy types multiples of 32): a
"Q4_K_M" file may then hold Q5_0 or F16 tensors. We read the written file back and report
every such fallback next to the per-type histogram, instead of leaving users to find out from
the file size.
"""

from __future__ import annotations

import ctypes
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import llama_cpp

from edge_adapt.errors import QuantizationError
from edge_adapt.files import atomic_output
from edge_adapt.generator.config import default_threads
from edge_adapt.generator.llama_backend import read_gguf_header
from edge_adapt.generator.llama_platform import ensure_backend, errors_in

log = logging.getLogger(__name__)

# Quantization name -> (llama_ftype, the tensor type its 2-D weights aim for).
QUANT_TYPES: dict[str, tuple[int, gguf.GGMLQuantizationType]] = {
    "Q8_0": (llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, gguf.GGMLQuantizationType.Q8_0),
    "Q6_K": (llama_cpp.LLAMA_FTYPE_MOSTLY_Q6_K, gguf.GGMLQuantizationType.Q6_K),
    "Q5_K_M": (llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_M, gguf.GGMLQuantizationType.Q5_K),
    "Q5_K_S": (llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_S, gguf.GGMLQuantizationType.Q5_K),
    "Q5_0": (llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_0, gguf.GGMLQuantizationType.Q5_0),
    "Q5_1": (llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_1, gguf.GGMLQuantizationType.Q5_1),
    "Q4_K_M": (llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M, gguf.GGMLQuantizationType.Q4_K),
    "Q4_K_S": (llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_S, gguf.GGMLQuantizationType.Q4_K),
    "Q4_0": (llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0, gguf.GGMLQuantizationType.Q4_0),
    "Q4_1": (llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_1, gguf.GGMLQuantizationType.Q4_1),
    "Q3_K_M": (llama_cpp.LLAMA_FTYPE_MOSTLY_Q3_K_M, gguf.GGMLQuantizationType.Q3_K),
    "Q2_K": (llama_cpp.LLAMA_FTYPE_MOSTLY_Q2_K, gguf.GGMLQuantizationType.Q2_K),
}

_UNQUANTIZED = {gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16}


def resolve_quant_type(name: str) -> str:
    key = name.strip().upper()
    if key not in QUANT_TYPES:
        raise QuantizationError(f"unknown quantization type {name!r}; choose one of {', '.join(QUANT_TYPES)}")
    return key


@dataclass(frozen=True)
class TensorFallback:
    """A tensor whose rows could not hold the requested type."""

    name: str
    row_size: int
    wanted: str
    block_size: int
    stored_as: str


@dataclass(frozen=True)
class QuantizationReport:
    path: Path
    quant_type: str
    source_size: int
    size_bytes: int
    tensor_types: dict[str, int]
    fallbacks: list[TensorFallback] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ratio(self) -> float:
        return self.size_bytes / self.source_size


def quantize_gguf(
    source: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    quant_type: str,
    *,
    threads: int | None = None,
) -> QuantizationReport:
    """Quantize an F32/F16/BF16 GGUF into ``dest`` (written atomically) and report on it."""
    qname = resolve_quant_type(quant_type)
    src, out = Path(source), Path(dest)
    read_gguf_header(src)
    if src.resolve() == out.resolve():
        raise QuantizationError(f"{src}: quantizing a file onto itself; choose another output path.")
    source_types = _tensor_types(src)
    already = {t for t in source_types.values()} - _UNQUANTIZED
    if already:
        raise QuantizationError(
            f"{src}: already quantized ({', '.join(sorted(t.name for t in already))}); quantize from the "
            "F32, F16 or BF16 export instead, requantizing loses quality."
        )
    ftype, target = QUANT_TYPES[qname]
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads or default_threads()
    started = time.perf_counter()
    with atomic_output(out) as tmp:
        with ensure_backend().capture() as lines:
            rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
        if rc != 0 or not tmp.exists():
            raise QuantizationError(f"{src}: llama.cpp's quantizer failed ({errors_in(lines) or f'code {rc}'}).")
        fallbacks = _fallbacks(tmp, target)
        histogram = Counter(t.name for t in _tensor_types(tmp).values())
    report = QuantizationReport(
        path=out,
        quant_type=qname,
        source_size=src.stat().st_size,
        size_bytes=out.stat().st_size,
        tensor_types=dict(sorted(histogram.items())),
        fallbacks=fallbacks,
        seconds=time.perf_counter() - started,
    )
    for line in fallback_summary(fallbacks):  # the report holds every tensor; callers print the summary
        log.info("%s: %s", out.name, line)
    return report


def fallback_summary(fallbacks: list) -> list[str]:
    """One line per kind of fallback (row size, wanted and stored type), with how many tensors."""
    groups: dict[tuple, list[str]] = {}
    for fb in fallbacks:
        groups.setdefault((fb.row_size, fb.block_size, fb.wanted, fb.stored_as), []).append(fb.name)
    return [f"{len(names)} tensor(s) with rows of {row} (not a multiple of {block} for {wanted}) stored as {stored}, "
            f"e.g. {names[0]}" for (row, block, wanted, stored), names in groups.items()]


def _tensor_types(path: Path) -> dict[str, gguf.GGMLQuantizationType]:
    try:
        reader = gguf.GGUFReader(path)
    except Exception as exc:  # the reader raises ValueError, IndexError... on a damaged file
        raise QuantizationError(f"{path}: cannot be read as GGUF ({exc}); the file is truncated or corrupt.") from exc
    return {t.name: t.tensor_type for t in reader.tensors}


def _fallbacks(path: Path, target: gguf.GGMLQuantizationType) -> list[TensorFallback]:
    """Quantized-weight tensors whose row length the target type's block size does not divide."""
    block = gguf.GGML_QUANT_SIZES[target][0]
    out = []
    for t in gguf.GGUFReader(path).tensors:
        row = int(t.shape[0])  # GGUF shapes list the row (fastest) dimension first
        if len(t.shape) < 2 or row % block == 0:
            continue
        out.append(TensorFallback(t.name, row, target.name, block, t.tensor_type.name))
    return out
