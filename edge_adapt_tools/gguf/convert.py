"""Hugging Face Llama / Qwen2 / Qwen3 / SmolLM3 / Gemma 3 checkpoint -> GGUF (F32, F16 or BF16), written atomically.

Hyper-parameters, tensor names and the tokenizer are written the way llama.cpp's loader
expects them; the two traps that load fine and then produce garbage are handled explicitly:
the rotary Q/K layout (see ``ArchSpec.permute_qk``) and the pre-tokenizer name (see
``gguf_tokenizer``). The file appears under its final name only when it is complete.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch

from edge_adapt.errors import UnsupportedModelError
from edge_adapt.files import atomic_output
from edge_adapt_tools.gguf.checkpoint import HFCheckpoint
from edge_adapt_tools.gguf.tokenizer import load_tokenizer_export, write_tokenizer

log = logging.getLogger(__name__)

OUTTYPES: dict[str, tuple[gguf.GGMLQuantizationType, gguf.LlamaFileType]] = {
    "f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "bf16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
}

_SKIPPED_SUFFIXES = ("rotary_emb.inv_freq",)  # recomputed by llama.cpp from rope_theta


@dataclass(frozen=True)
class ConversionResult:
    path: Path
    architecture: str
    outtype: str
    n_tensors: int
    n_params: int
    size_bytes: int
    vocab_size: int
    tokenizer_pre: str
    tied_embeddings: bool
    seconds: float


def permute_rotary(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder Q or K rows (or bias) from the half-split rotary layout to interleaved pairs."""
    rows = weight.shape[0]
    return (
        weight.reshape(n_heads, 2, rows // n_heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def llama3_rope_factors(ckpt: HFCheckpoint) -> np.ndarray:
    """Per-frequency divisors of Llama-3.1/3.2 "llama3" rope scaling (llama.cpp: rope_freqs)."""
    params = ckpt.rope_parameters
    dim = ckpt.head_dim
    freqs = 1.0 / (ckpt.rope_theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    factor = float(params.get("factor", 8.0))
    low = float(params.get("low_freq_factor", 1.0))
    high = float(params.get("high_freq_factor", 4.0))
    old_ctx = float(params.get("original_max_position_embeddings", 8192))
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, dtype=np.float32)


def convert_checkpoint(ckpt: HFCheckpoint, out_path: str | os.PathLike[str], outtype: str = "f32") -> ConversionResult:
    """Write ``ckpt`` as a GGUF file at ``out_path``."""
    if outtype not in OUTTYPES:
        raise UnsupportedModelError(f"outtype {outtype!r} is not one of {', '.join(OUTTYPES)}")
    started = time.perf_counter()
    out = Path(out_path)
    tok = load_tokenizer_export(ckpt.path, ckpt.vocab_size)
    with atomic_output(out) as tmp:
        writer = gguf.GGUFWriter(str(tmp), gguf.MODEL_ARCH_NAMES[ckpt.arch.gguf_arch])
        _write_metadata(writer, ckpt, outtype)
        write_tokenizer(writer, tok, ckpt.path)
        n_tensors, n_params = _write_tensors(writer, ckpt, outtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return ConversionResult(
        path=out,
        architecture=ckpt.arch.hf_name,
        outtype=outtype,
        n_tensors=n_tensors,
        n_params=n_params,
        size_bytes=out.stat().st_size,
        vocab_size=len(tok.tokens),
        tokenizer_pre=tok.pre,
        tied_embeddings=ckpt.tied_embeddings,
        seconds=time.perf_counter() - started,
    )


def _write_metadata(writer: gguf.GGUFWriter, ckpt: HFCheckpoint, outtype: str) -> None:
    c = ckpt.config
    writer.add_name(ckpt.name)
    writer.add_context_length(int(c.get("max_position_embeddings", 2048)))
    writer.add_embedding_length(ckpt.hidden_size)
    writer.add_block_count(ckpt.n_layers)
    writer.add_feed_forward_length(int(c["intermediate_size"]))
    writer.add_head_count(ckpt.n_heads)
    writer.add_head_count_kv(ckpt.n_kv_heads)
    writer.add_rope_freq_base(ckpt.rope_theta)
    writer.add_layer_norm_rms_eps(float(c.get("rms_norm_eps", 1e-6)))
    writer.add_vocab_size(ckpt.vocab_size)
    writer.add_rope_dimension_count(ckpt.head_dim)
    if ckpt.head_dim != ckpt.hidden_size // ckpt.n_heads:
        writer.add_key_length(ckpt.head_dim)
        writer.add_value_length(ckpt.head_dim)
    if ckpt.arch.gguf_arch == gguf.MODEL_ARCH.GEMMA3:
        writer.add_sliding_window(int(c.get("sliding_window", 4096)))
        if c.get("final_logit_softcapping") is not None:
            writer.add_final_logit_softcapping(float(c["final_logit_softcapping"]))
    if ckpt.rope_type == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(ckpt.rope_parameters["factor"]))
    writer.add_file_type(OUTTYPES[outtype][1])


def _write_tensors(writer: gguf.GGUFWriter, ckpt: HFCheckpoint, outtype: str) -> tuple[int, int]:
    names = gguf.get_tensor_name_map(ckpt.arch.gguf_arch, ckpt.n_layers)
    qtype = OUTTYPES[outtype][0]
    seen: set[str] = set()
    n_params = 0
    for hf_name, tensor in ckpt.tensors():
        if hf_name.endswith(_SKIPPED_SUFFIXES):
            continue
        if ckpt.tied_embeddings and hf_name == "lm_head.weight":
            continue  # llama.cpp reuses token_embd when output.weight is absent
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise UnsupportedModelError(
                f"{ckpt.path}: tensor {hf_name!r} has no llama.cpp equivalent for {ckpt.arch.hf_name}; "
                "this checkpoint uses a feature the exporter does not handle."
            )
        data = tensor.to(torch.float32).numpy()
        if ckpt.arch.norm_shift and hf_name.endswith("norm.weight"):
            data = data + ckpt.arch.norm_shift
        if ckpt.arch.permute_qk and ".self_attn.q_proj." in hf_name:
            data = permute_rotary(data, ckpt.n_heads)
        elif ckpt.arch.permute_qk and ".self_attn.k_proj." in hf_name:
            data = permute_rotary(data, ckpt.n_kv_heads)
        _add_tensor(writer, name, data, qtype)
        seen.add(name)
        n_params += data.size
    if ckpt.rope_type == "llama3":
        _add_tensor(writer, gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", llama3_rope_factors(ckpt), qtype)
    if "output.weight" not in seen and not ckpt.tied_embeddings:
        raise UnsupportedModelError(
            f"{ckpt.path}: tie_word_embeddings is false but the checkpoint has no lm_head.weight."
        )
    return len(seen), n_params


def _add_tensor(writer: gguf.GGUFWriter, name: str, data: np.ndarray, qtype: gguf.GGMLQuantizationType) -> None:
    # Norms, biases and rope factors stay F32, as llama.cpp expects and as its own converter does.
    if data.ndim == 1 or qtype == gguf.GGMLQuantizationType.F32:
        writer.add_tensor(name, data.astype(np.float32))
    elif qtype == gguf.GGMLQuantizationType.F16:
        writer.add_tensor(name, data.astype(np.float16))
    else:
        writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
