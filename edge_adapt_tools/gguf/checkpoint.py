"""Reading a Hugging Face causal-LM checkpoint (config, safetensors shards, tokenizer) for export.

Everything that can be wrong with the input folder is checked here, up front, so that a
conversion either starts with a known-good checkpoint or fails before writing anything.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import torch
from safetensors import safe_open

from edge_adapt.errors import TokenizerError, UnsupportedModelError


@dataclass(frozen=True)
class ArchSpec:
    """How one Hugging Face architecture maps onto a llama.cpp architecture."""

    hf_name: str
    gguf_arch: gguf.MODEL_ARCH
    # llama.cpp's LLAMA graph applies rotary embeddings to interleaved pairs; Hugging Face
    # stores Q/K for the half-split ("NEOX") layout. Without this permutation the model loads
    # and silently produces garbage. Qwen2 runs NEOX-style rope in llama.cpp: no permutation.
    permute_qk: bool
    rope_scalings: tuple[str, ...]
    # Gemma's RMSNorm multiplies by (1 + weight); llama.cpp's by the weight: stored + this shift
    norm_shift: float = 0.0
    # Scales the logit tolerance of the verification: llama.cpp's CPU GELU reads an fp16 table
    # (about 1e-3 relative error per activation), so GELU models match PyTorch to a few 1e-3 of
    # the logit scale where SiLU models match to 1e-4. A wrong conversion is off by the scale itself.
    tolerance_factor: float = 1.0


ARCHITECTURES: dict[str, ArchSpec] = {
    "LlamaForCausalLM": ArchSpec("LlamaForCausalLM", gguf.MODEL_ARCH.LLAMA, True, ("linear", "llama3")),
    "Qwen2ForCausalLM": ArchSpec("Qwen2ForCausalLM", gguf.MODEL_ARCH.QWEN2, False, ("linear",)),
    # Qwen3: Qwen2's layout without Q/K/V biases, with an RMSNorm on every head's queries and keys
    "Qwen3ForCausalLM": ArchSpec("Qwen3ForCausalLM", gguf.MODEL_ARCH.QWEN3, False, ("linear",)),
    # SmolLM3: Llama's layout, with every fourth layer attending without rotary embeddings (NoPE),
    # which llama.cpp's smollm3 graph does by itself
    "SmolLM3ForCausalLM": ArchSpec("SmolLM3ForCausalLM", gguf.MODEL_ARCH.SMOLLM3, True, ("linear",)),
    # Gemma 3 (text): Q/K norms, norms after attention and MLP too, GELU, embeddings scaled by
    # sqrt(hidden) in the graph, and sliding-window attention on five layers of every six
    "Gemma3ForCausalLM": ArchSpec("Gemma3ForCausalLM", gguf.MODEL_ARCH.GEMMA3, False, ("linear",), norm_shift=1.0,
                                   tolerance_factor=4.0),
}

# What llama.cpp's gemma3 graph fixes rather than reads from the file; a checkpoint that differs
# would load and compute something else.
GEMMA3_SWA_PERIOD = 6  # layers 6, 12, ... attend globally
GEMMA3_LOCAL_ROPE_BASE = 10_000.0


@dataclass(frozen=True)
class HFCheckpoint:
    path: Path
    config: dict[str, Any]
    arch: ArchSpec
    weight_files: tuple[Path, ...]

    # -- hyper-parameters, with the defaults transformers uses -----------------------------

    @property
    def name(self) -> str:
        return self.path.resolve().name

    @property
    def n_layers(self) -> int:
        return int(self.config["num_hidden_layers"])

    @property
    def hidden_size(self) -> int:
        return int(self.config["hidden_size"])

    @property
    def n_heads(self) -> int:
        return int(self.config["num_attention_heads"])

    @property
    def n_kv_heads(self) -> int:
        return int(self.config.get("num_key_value_heads") or self.n_heads)

    @property
    def head_dim(self) -> int:
        return int(self.config.get("head_dim") or self.hidden_size // self.n_heads)

    @property
    def vocab_size(self) -> int:
        return int(self.config["vocab_size"])

    @property
    def tied_embeddings(self) -> bool:
        """Whether the output projection is the embedding matrix; an absent key means the
        architecture's own default (True for SmolLM3, False for Llama), as transformers reads it."""
        if "tie_word_embeddings" in self.config:
            return bool(self.config["tie_word_embeddings"])
        from transformers import AutoConfig

        return bool(AutoConfig.from_pretrained(self.path).tie_word_embeddings)

    @property
    def rope_theta(self) -> float:
        params = self.rope_parameters
        return float(params.get("rope_theta", self.config.get("rope_theta", 10000.0)))

    @property
    def rope_parameters(self) -> dict[str, Any]:
        """Rope scaling settings: ``rope_scaling`` (transformers 4) or ``rope_parameters`` (5)."""
        return dict(self.config.get("rope_parameters") or self.config.get("rope_scaling") or {})

    @property
    def rope_type(self) -> str:
        params = self.rope_parameters
        return str(params.get("rope_type") or params.get("type") or "default")

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Every stored tensor, one at a time (shards are opened lazily)."""
        for file in self.weight_files:
            with safe_open(str(file), framework="pt") as f:
                for key in f.keys():
                    yield key, f.get_tensor(key)


def open_checkpoint(path: str | Path) -> HFCheckpoint:
    """Validate a checkpoint folder and describe it; raises a clear error for what is missing."""
    root = Path(path)
    if not root.is_dir():
        raise UnsupportedModelError(f"{root}: not a directory; give the folder written by save_pretrained().")
    config_file = root / "config.json"
    if not config_file.is_file():
        raise UnsupportedModelError(f"{root}: no config.json; this is not a Hugging Face checkpoint folder.")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as exc:
        raise UnsupportedModelError(f"{config_file}: not valid JSON ({exc}).") from exc

    names = config.get("architectures") or []
    arch = next((ARCHITECTURES[n] for n in names if n in ARCHITECTURES), None)
    if arch is None:
        raise UnsupportedModelError(
            f"{config_file}: architecture {names or config.get('model_type')} is not supported; "
            f"supported: {', '.join(ARCHITECTURES)}."
        )

    ckpt = HFCheckpoint(path=root, config=config, arch=arch, weight_files=_weight_files(root))
    if ckpt.rope_type not in ("default", *arch.rope_scalings):
        raise UnsupportedModelError(
            f"{config_file}: rope scaling {ckpt.rope_type!r} is not supported for {arch.hf_name} "
            f"(supported: none, {', '.join(arch.rope_scalings)})."
        )
    if ckpt.hidden_size % ckpt.n_heads or ckpt.n_heads % ckpt.n_kv_heads:
        raise UnsupportedModelError(
            f"{config_file}: num_attention_heads={ckpt.n_heads} must divide hidden_size={ckpt.hidden_size} "
            f"and be a multiple of num_key_value_heads={ckpt.n_kv_heads}."
        )
    if arch.gguf_arch == gguf.MODEL_ARCH.GEMMA3:
        _check_gemma3(ckpt, config_file)
    if not (root / "tokenizer.json").is_file():
        raise TokenizerError(
            f"{root}: no tokenizer.json. The exporter needs the model's fast (BPE) tokenizer: "
            "save it next to the weights with tokenizer.save_pretrained(folder)."
        )
    return ckpt


def _check_gemma3(ckpt: HFCheckpoint, config_file: Path) -> None:
    c = ckpt.config
    layers = c.get("layer_types") or [
        "full_attention" if (i + 1) % int(c.get("sliding_window_pattern", GEMMA3_SWA_PERIOD)) == 0 else "sliding_attention"
        for i in range(ckpt.n_layers)
    ]
    expected = ["full_attention" if (i + 1) % GEMMA3_SWA_PERIOD == 0 else "sliding_attention" for i in range(ckpt.n_layers)]
    problems = []
    if layers != expected:
        problems.append(f"layer_types must be sliding attention with every {GEMMA3_SWA_PERIOD}th layer global")
    if float(c.get("rope_local_base_freq", GEMMA3_LOCAL_ROPE_BASE)) != GEMMA3_LOCAL_ROPE_BASE:
        problems.append(f"rope_local_base_freq must be {GEMMA3_LOCAL_ROPE_BASE:g}")
    if int(c.get("query_pre_attn_scalar", ckpt.head_dim)) != ckpt.head_dim:
        problems.append("query_pre_attn_scalar must equal head_dim (attention scaled by 1/sqrt(head_dim))")
    if c.get("attn_logit_softcapping") is not None:
        problems.append("attn_logit_softcapping must be null")
    if c.get("hidden_activation", "gelu_pytorch_tanh") != "gelu_pytorch_tanh":
        problems.append("hidden_activation must be gelu_pytorch_tanh")
    if c.get("use_bidirectional_attention"):
        problems.append("use_bidirectional_attention must be false")
    if problems:
        raise UnsupportedModelError(
            f"{config_file}: llama.cpp's gemma3 graph fixes what this checkpoint sets otherwise: {'; '.join(problems)}.")


def _weight_files(root: Path) -> tuple[Path, ...]:
    index = root / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise UnsupportedModelError(f"{index}: not a valid safetensors index ({exc}).") from exc
        files = tuple(root / name for name in sorted(set(weight_map.values())))
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise UnsupportedModelError(f"{root}: shards listed in {index.name} are missing: {', '.join(missing)}.")
        return files
    single = root / "model.safetensors"
    if single.is_file():
        return (single,)
    if any(root.glob("*.bin")) or any(root.glob("*.pt")):
        raise UnsupportedModelError(
            f"{root}: only PyTorch pickle weights found; re-save them as safetensors "
            "(model.save_pretrained(folder, safe_serialization=True))."
        )
    raise UnsupportedModelError(f"{root}: no model.safetensors or model.safetensors.index.json found.")
