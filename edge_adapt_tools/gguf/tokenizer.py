"""The tokenizer of a checkpoint, written in the form llama.cpp reads: byte-level BPE (GPT-2,
Llama 3, Qwen, SmolLM) or SentencePiece-style BPE (Gemma: "▁" for spaces, byte fallback).

llama.cpp does not run the Hugging Face pre-tokenizer: it picks one of its own built-in
splitting rules by the name in ``tokenizer.ggml.pre``. A wrong name still loads and tokenizes,
only differently (digits grouped by three instead of one by one, say), so the name must be
derived from what ``tokenizer.json`` really does. llama.cpp's converter recognises tokenizers
by hashing their output on a test text, which only works for published vocabularies; we match
the pre-tokenizer *rules* instead (so freshly trained tokenizers work too), and the export then
proves the choice by comparing tokenizations on a probe set.

SentencePiece-style vocabularies go to llama.cpp's SPM tokenizer, which merges the adjacent
pair whose merged piece has the highest score: each piece is scored by the rank of the merge
that creates it (earlier merge, higher score), which reproduces the BPE's merge order.
"""

from __future__ import annotations

import json
import logging
import re
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
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

SPACE_MARK = "\u2581"  # "▁", SentencePiece's space
_BYTE_PIECE = re.compile(r"^<0x[0-9A-F]{2}>$")
_UNMERGED_SCORE = -1e9  # a piece no merge creates (a base symbol): never preferred over a merge


@dataclass(frozen=True)
class TokenizerStyle:
    """How llama.cpp must tokenize: its tokenizer model, pre-tokenizer name and space prefix."""

    model: str  # "gpt2": byte-level BPE; "llama": SentencePiece-style BPE
    pre: str
    add_space_prefix: bool = False


@dataclass(frozen=True)
class TokenizerExport:
    tokenizer: PreTrainedTokenizerFast
    style: TokenizerStyle
    tokens: list[str]
    token_types: list[int]
    n_real: int  # tokens the tokenizer knows; the rest pad the embedding matrix
    scores: list[float] | None = None  # SentencePiece-style only

    @property
    def pre(self) -> str:
        return self.style.pre


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


def detect_style(tokenizer_json: dict[str, Any], source: Path) -> TokenizerStyle:
    """How llama.cpp must tokenize to reproduce this ``tokenizer.json``, or a TokenizerError
    that says why it cannot."""
    model = tokenizer_json.get("model", {})
    if model.get("type") != "BPE":
        raise TokenizerError(
            f"{source}: tokenizer model {model.get('type')!r} is not BPE; byte-level BPE and SentencePiece-style BPE "
            "(byte fallback) convert. A Unigram tokenizer.json (as transformers builds from some GGUFs) needs the "
            "model's original tokenizer.json.")
    byte_level = any(step.get("type") == "ByteLevel" for step in _steps(tokenizer_json.get("pre_tokenizer"), "pretokenizers"))
    # transformers' GGUF loader writes byte-level BPEs (SmolLM2) with byte_fallback set: under a
    # ByteLevel pre-tokenizer every byte is already a vocabulary symbol, so the flag never fires
    # (and a ByteFallback decoder beside ByteLevel changes nothing); the parity checks still verify it
    if model.get("byte_fallback") and not byte_level:
        return _sentencepiece_style(tokenizer_json, source)
    return TokenizerStyle("gpt2", detect_pre_tokenizer(tokenizer_json, source))


def _sentencepiece_style(tokenizer_json: dict[str, Any], source: Path) -> TokenizerStyle:
    """A SentencePiece-style BPE: spaces become "▁" (a normalizer or a Metaspace pre-tokenizer),
    optionally with one "▁" prepended, and nothing else changes the text."""
    steps = _steps(tokenizer_json.get("normalizer"), "normalizers")
    prefix = False
    if steps and steps[0] == {"type": "Prepend", "prepend": SPACE_MARK}:
        prefix, steps = True, steps[1:]
    marks_spaces = steps == [{"type": "Replace", "pattern": {"String": " "}, "content": SPACE_MARK}]
    unchanged = not steps
    pre = _steps(tokenizer_json.get("pre_tokenizer"), "pretokenizers")
    if marks_spaces and all(_splits_on_spaces(step) for step in pre):
        return TokenizerStyle("llama", "default", prefix)  # spaces are gone before the split: a no-op
    if unchanged and len(pre) == 1 and pre[0].get("type") == "Metaspace" and not pre[0].get("split", True):
        if pre[0].get("replacement", SPACE_MARK) == SPACE_MARK:
            return TokenizerStyle("llama", "default", pre[0].get("prepend_scheme", "always") != "never")
    raise TokenizerError(
        f"{source}: a byte-fallback BPE whose normalizer {tokenizer_json.get('normalizer')} and pre-tokenizer "
        f"{tokenizer_json.get('pre_tokenizer')} are not SentencePiece's (spaces written as '▁', optionally one "
        "prepended, nothing split): llama.cpp's SentencePiece tokenizer would not reproduce it.")


def _steps(component: dict[str, Any] | None, key: str) -> list[dict[str, Any]]:
    if not component:
        return []
    if component.get("type") == "Sequence":
        return [step for sub in component.get(key, []) for step in _steps(sub, key)]
    return [component]


def _splits_on_spaces(step: dict[str, Any]) -> bool:
    return step.get("type") == "Split" and step.get("pattern") == {"String": " "} and not step.get("invert")


def sentencepiece_scores(tokenizer_json: dict[str, Any], vocab: dict[str, int]) -> dict[int, float]:
    """Each piece's score: minus the rank of the first merge that creates it."""
    scores: dict[int, float] = {}
    for rank, merge in enumerate(tokenizer_json["model"].get("merges", [])):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        token_id = vocab.get(left + right)
        if token_id is not None and token_id not in scores:
            scores[token_id] = -float(rank)
    return scores


def detect_pre_tokenizer(tokenizer_json: dict[str, Any], source: Path) -> str:
    """The ``tokenizer.ggml.pre`` name llama.cpp needs for this byte-level BPE tokenizer."""
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
    style = detect_style(tokenizer_json, tokenizer_file)
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
    spm = style.model == "llama"
    unknown = tokenizer_json["model"].get("unk_token") if spm else None
    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
        elif i in added and added[i].content != unknown:
            tokens.append(added[i].content)
            types.append(CONTROL if added[i].special else USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(UNKNOWN if by_id[i] == unknown else BYTE if spm and _BYTE_PIECE.match(by_id[i]) else NORMAL)
    scores = None
    if spm:
        merged = sentencepiece_scores(tokenizer_json, tokenizer.get_vocab())
        scores = [merged.get(i, _UNMERGED_SCORE) if t == NORMAL else 0.0 for i, t in enumerate(types)]
    return TokenizerExport(tokenizer=tokenizer, style=style, tokens=tokens, token_types=types, n_real=n_real, scores=scores)


def write_tokenizer(writer: gguf.GGUFWriter, export: TokenizerExport, checkpoint_dir: Path) -> None:
    """Vocabulary (with merges, or scores for SentencePiece style), special token ids, add-BOS
    flag and chat template."""
    writer.add_tokenizer_model(export.style.model)
    writer.add_tokenizer_pre(export.pre)
    writer.add_token_list(export.tokens)
    if export.scores is not None:
        writer.add_token_scores(export.scores)
        writer.add_add_space_prefix(export.style.add_space_prefix)
    writer.add_token_types(export.token_types)
    byte_level = export.style.model == "gpt2"
    # gguf's template parser warns "Unknown separator token" on Llama-3-style pair templates
    # (BOS between the two texts); the BOS behaviour is checked for real by the parity probes.
    vocab_log = logging.getLogger("gguf.vocab")
    previous = vocab_log.level
    vocab_log.setLevel(logging.ERROR)
    try:
        special = gguf.SpecialVocab(checkpoint_dir, load_merges=byte_level, n_vocab=len(export.tokens))
    finally:
        vocab_log.setLevel(previous)
    if byte_level and not special.merges:
        # A character-level BPE has no merges, but llama.cpp's BPE loader requires the merges
        # key and gguf cannot write an empty array. BPE symbols start as single characters and
        # grow only through merges, so a merge of two multi-character strings can never fire
        # when it is the only one: tokenization is unchanged (the parity probes check it).
        special.merges = [NO_MERGES_PLACEHOLDER]
    special.add_to_gguf(writer, quiet=True)
