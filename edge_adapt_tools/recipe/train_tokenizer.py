"""Training small BPE tokenizers in the styles llama.cpp implements natively: byte-level BPE
(GPT-2, Llama 3, Qwen2, SmolLM splitting) and SentencePiece-style BPE as Gemma ships it.

Used to build models from scratch (the shipped default generator, the test models): a model
trained here must export to GGUF with a tokenizer llama.cpp reproduces exactly, so only the
splitting rules llama.cpp knows are offered (see ``gguf_tokenizer.PRE_TOKENIZERS``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from edge_adapt_tools.gguf.tokenizer import LLAMA3_SPLIT, QWEN2_SPLIT

STYLES = ("gpt2", "llama3", "qwen2", "smollm")


def _pre_tokenizer(style: str) -> pre_tokenizers.PreTokenizer:
    if style == "gpt2":
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if style in ("llama3", "qwen2"):
        regex = LLAMA3_SPLIT if style == "llama3" else QWEN2_SPLIT
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    if style == "smollm":
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
    raise ValueError(f"unknown tokenizer style {style!r}; choose from {STYLES}")


def train_bpe_tokenizer(
    corpus: Iterable[str],
    *,
    vocab_size: int,
    style: str = "gpt2",
    bos: str = "<|begin_of_text|>",
    eos: str = "<|end_of_text|>",
    extra_special: Sequence[str] = (),
    add_bos: bool = True,
    chat_template: str | None = None,
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer over the 256 byte symbols plus merges learnt from ``corpus``.

    ``vocab_size`` counts the byte alphabet, the merges and the special tokens; use a small
    value (e.g. 300) for a near character-level tokenizer.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = _pre_tokenizer(style)
    tok.decoder = decoders.ByteLevel()
    special = [bos, eos, *extra_special]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=eos,
        additional_special_tokens=list(extra_special),
        clean_up_tokenization_spaces=False,
    )
    if chat_template is not None:
        fast.chat_template = chat_template
    return fast


def train_sentencepiece_style_tokenizer(
    corpus: Iterable[str],
    *,
    vocab_size: int,
    specials: Sequence[str] = ("<pad>", "<eos>", "<bos>", "<unk>"),
    extra_special: Sequence[str] = (),
    chat_template: str | None = None,
) -> PreTrainedTokenizerFast:
    """A BPE over characters with byte fallback, spaces written as "▁", as Gemma's tokenizer.json
    is: its normalizer replaces spaces, its pre-tokenizer splits on spaces (none are left), and
    characters outside the vocabulary become "<0xNN>" byte pieces. ``specials`` are pad, eos,
    bos and unk, in Gemma's order; ``vocab_size`` counts them, the 256 byte pieces and the merges."""
    pad, eos, bos, unk = specials
    trainer_model = Tokenizer(models.BPE(unk_token=unk))
    trainer_model.normalizer = normalizers.Replace(" ", "\u2581")
    trainer_model.train_from_iterator(corpus, trainer=trainers.BpeTrainer(
        vocab_size=vocab_size - 256 - len(specials) - len(extra_special), show_progress=False))
    learnt = trainer_model.get_vocab()
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m)
              for m in json.loads(trainer_model.to_str())["model"]["merges"]]
    vocab = {t: i for i, t in enumerate([*specials, *extra_special, *(f"<0x{b:02X}>" for b in range(256))])}
    for token in sorted(learnt, key=learnt.__getitem__):
        vocab.setdefault(token, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=unk, byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens([*specials, *extra_special])
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                       special_tokens=[(bos, vocab[bos])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, unk_token=unk, pad_token=pad,
                                   additional_special_tokens=list(extra_special), clean_up_tokenization_spaces=False)
    if chat_template is not None:
        fast.chat_template = chat_template
    return fast
