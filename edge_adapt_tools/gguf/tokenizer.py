"""The byte-level BPE tokenizer of a checkpoint, written in the form llama.cpp reads.

llama.cpp does not run the Hugging Face pre-tokenizer: it picks one of its own built-in
splitting rules by the name in ``tokenizer.ggml.pre``. A wrong name still loads and tokenizes,
only differently (digits grouped by three instead of one by one, say), so the name must be
derived from what ``tokenizer.json`` really does. llama.cpp's converter recognises tokenizers
by hashing their output on a test text, which only works for published vocabularies; we match
the pre-tokenizer *rules* instead (so freshly trained tokenizers work too), and the export then
proves the choice by comparing tokenizations on a probe set.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from edge_adapt.errors import TokenizerError

# The splitting regexes of the tokenizer families llama.cpp implements natively.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# llama.cpp names for the pre-tokenizers above, keyed by a canonical signature (see _signature).
PRE_TOKENIZERS: dict[tuple[str, ...], str] = {
    ("bytelevel+regex",): "gpt-2",
    (f"split:{LLAMA3_SPLIT}", "bytelevel"): "llama-bpe",
    (f"split:{QWEN2_SPLIT}", "bytelevel"): "qwen2",
    ("digits:individual", "bytelevel+regex"): "smollm",
}

NO_MERGES_PLACEHOLDER = "<no-merges> <no-merges>"

# llama.cpp's token types (llama_token_type).
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5


@dataclass(frozen=True)
class TokenizerExport:
    tokenizer: PreTrainedTokenizerFast
    pre: str
    tokens: list[str]
    token_types: list[int]
    n_real: int  # tokens the tokenizer knows; the rest pad the embedding matrix


def _signature(pre: dict[str, Any] | None) -> tuple[str, ...]:
    if pre is None:
        return ()
    kind = pre.get("type")
    if kind == "Sequence":
        return tuple(part for sub in pre.get("pretokenizers", []) for part in _signature(sub))
    if kind == "ByteLevel":
        if pre.get("add_prefix_space"):
            return ("bytelevel+prefix-space",)  # llama.cpp never adds a prefix space
        return ("bytelevel+regex",) if pre.get("use_regex", True) else ("bytelevel",)
    if kind == "Split":
        pattern = pre.get("pattern", {})
        regex = pattern.get("Regex") or pattern.get("String") or ""
        if pre.get("behavior") != "Isolated" or pre.get("invert"):
            return (f"split-{pre.get('behavior')}:{regex}",)
        return (f"split:{regex}",)
    if kind == "Digits":
        return ("digits:individual" if pre.get("individual_digits") else "digits:grouped",)
    return (f"{kind}",)


def detect_pre_tokenizer(tokenizer_json: dict[str, Any], source: Path) -> str:
    """The ``tokenizer.ggml.pre`` name llama.cpp needs for this tokenizer."""
    model = tokenizer_json.get("model", {})
    if model.get("type") != "BPE":
        raise TokenizerError(f"{source}: tokenizer model {model.get('type')!r} is not BPE; only byte-level BPE is supported.")
    normalizer = tokenizer_json.get("normalizer")
    signature = _signature(tokenizer_json.get("pre_tokenizer"))
    name = PRE_TOKENIZERS.get(signature)
    if name is None:
        raise TokenizerError(
            f"{source}: pre-tokenizer {list(signature) or 'none'} is not one llama.cpp implements here. "
            "Supported: GPT-2 byte-level, Llama-3, Qwen2 and SmolLM splitting."
        )
    # llama.cpp's BPE does not normalize. Normalizers that do nothing (an empty Sequence, as
    # SmolLM2 ships) are fine; Qwen's NFC only matters for non-NFC input (decomposed accents).
    # Anything else would change every tokenization, so the parity probes would fail anyway.
    effective = [n for n in _normalizers(normalizer) if not (n == "NFC" and name in ("qwen2", "qwen3"))]
    if effective:
        raise TokenizerError(
            f"{source}: tokenizer normalizer(s) {', '.join(effective)} change the text before tokenizing, and llama.cpp's "
            "BPE does not: the GGUF would tokenize differently from the original. Only byte-level BPE tokenizers without "
            "a normalizer (or with Qwen's NFC) convert; export a model whose tokenizer.json has none.")
    return name


def _normalizers(normalizer: dict[str, Any] | None) -> list[str]:
    """The normalizer steps that change text (a Sequence flattened; empty ones dropped)."""
    if not normalizer:
        return []
    if normalizer.get("type") == "Sequence":
        return [step for sub in normalizer.get("normalizers", []) for step in _normalizers(sub)]
    return [str(normalizer.get("type"))]


def load_tokenizer_export(checkpoint_dir: Path, vocab_size: int) -> TokenizerExport:
    tokenizer_file = checkpoint_dir / "tokenizer.json"
    try:
        tokenizer_json = json.loads(tokenizer_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise TokenizerError(f"{tokenizer_file}: cannot be read as JSON ({exc}).") from exc
    pre = detect_pre_tokenizer(tokenizer_json, tokenizer_file)
    try:
        tokenizer = AutoTokenizer.from_pretrained(checkpoint_dir, use_fast=True)
    except Exception as exc:  # transformers raises many types for a broken folder
        raise TokenizerError(f"{checkpoint_dir}: transformers cannot load the tokenizer ({exc}).") from exc
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise TokenizerError(f"{checkpoint_dir}: a fast tokenizer is required, got {type(tokenizer).__name__}.")

    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    n_real = max(by_id) + 1 if by_id else 0
    if n_real > vocab_size:
        raise TokenizerError(
            f"{checkpoint_dir}: the tokenizer has {n_real} tokens but the model's embedding only {vocab_size} rows."
        )
    added = tokenizer.added_tokens_decoder
    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
        elif i in added:
            tokens.append(added[i].content)
            types.append(CONTROL if added[i].special else USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(NORMAL)
    return TokenizerExport(tokenizer=tokenizer, pre=pre, tokens=tokens, token_types=types, n_real=n_real)


def write_tokenizer(writer: gguf.GGUFWriter, export: TokenizerExport, checkpoint_dir: Path) -> None:
    """Vocabulary, merges, special token ids, add-BOS flag and chat template."""
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(export.pre)
    writer.add_token_list(export.tokens)
    writer.add_token_types(export.token_types)
    # gguf's template parser warns "Unknown separator token" on Llama-3-style pair templates
    # (BOS between the two texts); the BOS behaviour is checked for real by the parity probes.
    vocab_log = logging.getLogger("gguf.vocab")
    previous = vocab_log.level
    vocab_log.setLevel(logging.ERROR)
    try:
        special = gguf.SpecialVocab(checkpoint_dir, load_merges=True, n_vocab=len(export.tokens))
    finally:
        vocab_log.setLevel(previous)
    if not special.merges:
        # A character-level BPE has no merges, but llama.cpp's BPE loader requires the merges
        # key and gguf cannot write an empty array. BPE symbols start as single characters and
        # grow only through merges, so a merge of two multi-character strings can never fire
        # when it is the only one: tokenization is unchanged (the parity probes check it).
        special.merges = [NO_MERGES_PLACEHOLDER]
    special.add_to_gguf(writer, quiet=True)
