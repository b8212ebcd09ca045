"""Proof that a GGUF reproduces its Hugging Face source: same tokens, same logits, same text.

Both checks run llama.cpp exactly (F32 KV cache, flash attention off) so that what is
measured is the conversion, not the runtime's speed-oriented defaults.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase

from edge_adapt.errors import VerificationError
from edge_adapt.generator.llama_backend import Batch, ContextSettings, LlamaContext, LlamaModel
from edge_adapt.generator.vocab import Vocabulary

# Texts where tokenizers disagree when a pre-tokenizer or byte mapping is wrong.
TOKENIZER_PROBES: tuple[str, ...] = (
    "Q:37+48*3\n\n37+48=85\n\n85*3=255\n\nA:255",
    "1234567890 12.5 -3.14159 1,000,000 2^10=1024 007 3rd 2024-11-23",
    "naïve café, Ünïcödé — “quotes” «guillemets» 日本語の文章 Ελληνικά emoji 🙂👍🏽",
    "tabs\tand  two spaces   three    four\n\n\nthree newlines \n \n trailing   ",
    "def f(x):\n    return x**2  # squared\n\n\tindented\ttab\r\nCRLF",
    "The answer is \\boxed{\\frac{1}{2}} and $x^2 + y^2 = z^2$.",
    "I'm sure they'll say it's fine; WE'RE ready, aren't we?",
    " leading space",
    "",
)

PARITY_PROMPT = "Q:37+48*3\n\n37+48=85\n\n85*3=255\n\nA:255 The quick brown fox 12345"

# Largest |logit difference| accepted, as a fraction of the largest |logit| (at least 1).
TOLERANCES = {"f32": 1e-3, "f16": 1e-2, "bf16": 5e-2}
# Rounding weights to 16 bits can flip near-ties in the greedy path of a model whose logits
# are close (random or barely trained weights): for those files greedy agreement is reported,
# and only F32 must reproduce the PyTorch text token for token.
GREEDY_ENFORCED = {"f32": True, "f16": False, "bf16": False}


@dataclass(frozen=True)
class TokenMismatch:
    text: str
    reference: list[int]
    gguf: list[int]

    @property
    def first_difference(self) -> int:
        for i, (a, b) in enumerate(zip(self.reference, self.gguf, strict=False)):
            if a != b:
                return i
        return min(len(self.reference), len(self.gguf))


@dataclass(frozen=True)
class TokenizerParity:
    n_probes: int
    mismatches: list[TokenMismatch]

    @property
    def passed(self) -> bool:
        return not self.mismatches


@dataclass(frozen=True)
class LogitParity:
    n_positions: int
    max_abs_diff: float
    logit_scale: float  # max |reference logit|
    top1_agreement: float  # fraction of prompt positions with the same argmax
    greedy_reference: list[int]
    greedy_gguf: list[int]
    tolerance: float | None  # None: reported, not enforced (quantized files)
    greedy_enforced: bool = True

    @property
    def greedy_match(self) -> bool:
        return self.greedy_reference == self.greedy_gguf

    @property
    def within_tolerance(self) -> bool:
        return self.tolerance is None or self.max_abs_diff <= self.tolerance * max(1.0, self.logit_scale)

    @property
    def passed(self) -> bool:
        if self.tolerance is None:
            return True
        return self.within_tolerance and (self.greedy_match or not self.greedy_enforced)


@dataclass(frozen=True)
class Reference:
    """What the PyTorch model computes on the parity prompt."""

    prompt: list[int]
    logits: np.ndarray  # [positions, vocab]
    greedy: list[int]


def check_tokenizer(gguf_path: str | os.PathLike[str], tokenizer: PreTrainedTokenizerBase) -> TokenizerParity:
    """Tokenize every probe with both tokenizers, plain and with special-token markup."""
    model = LlamaModel(gguf_path, vocab_only=True)
    try:
        vocab = Vocabulary(model)
        probes = list(TOKENIZER_PROBES)
        special = [t for t in tokenizer.all_special_tokens if t]
        if special:
            probes.append(f"{special[-1]}user\nhi{special[0]} there")
        mismatches = []
        for text in probes:
            reference = tokenizer.encode(text, add_special_tokens=False)
            ours = vocab.tokenize(text, add_special=False, parse_special=True)
            if reference != ours:
                mismatches.append(TokenMismatch(text, reference, ours))
        # BOS/EOS added the way the tokenizer adds them
        text = TOKENIZER_PROBES[0]
        reference = tokenizer.encode(text, add_special_tokens=True)
        ours = vocab.tokenize(text, add_special=True, parse_special=True)
        if reference != ours:
            mismatches.append(TokenMismatch("[with special tokens] " + text, reference, ours))
        return TokenizerParity(n_probes=len(probes) + 1, mismatches=mismatches)
    finally:
        model.close()


def reference_outputs(checkpoint_dir: str | Path, tokenizer: PreTrainedTokenizerBase, n_greedy: int = 16) -> Reference:
    """Logits at every prompt position, and a greedy continuation, from PyTorch in float32."""
    model = AutoModelForCausalLM.from_pretrained(checkpoint_dir, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    prompt = tokenizer.encode(PARITY_PROMPT, add_special_tokens=True)
    with torch.no_grad():
        out = model(torch.tensor([prompt]), use_cache=True)
        logits = out.logits[0].numpy().copy()
        past = out.past_key_values
        token = int(logits[-1].argmax())
        greedy = [token]
        for _ in range(n_greedy - 1):
            out = model(torch.tensor([[token]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            token = int(out.logits[0, -1].argmax())
            greedy.append(token)
    return Reference(prompt=prompt, logits=logits, greedy=greedy)


def check_logits(
    gguf_path: str | os.PathLike[str], reference: Reference, tolerance: float | None, greedy_enforced: bool = True
) -> LogitParity:
    """Run the GGUF on the reference prompt and compare logits and the greedy continuation."""
    n_greedy = len(reference.greedy)
    n_prompt = len(reference.prompt)
    model = LlamaModel(gguf_path)
    try:
        ctx = LlamaContext(
            model,
            ContextSettings(
                n_ctx=max(64, n_prompt + n_greedy + 8),
                n_batch=max(n_prompt, 32),
                n_seq_max=1,
                n_threads=os.cpu_count() or 1,
                n_threads_batch=os.cpu_count() or 1,
                flash_attn=False,
                kv_type="f32",
            ),
        )
        batch = Batch(ctx.n_batch, 1)
        for i, token in enumerate(reference.prompt):
            batch.add(token, i, 0, logits=True)
        if batch.decode(ctx) != 0:
            raise VerificationError("llama_decode failed on the parity prompt")
        ours = np.stack(
            [np.ctypeslib.as_array(ctx.logits(i), shape=(model.n_vocab,)).copy() for i in range(n_prompt)]
        )
        greedy = [int(ours[-1].argmax())]
        for step in range(n_greedy - 1):
            batch.clear()
            batch.add(greedy[-1], n_prompt + step, 0, logits=True)
            if batch.decode(ctx) != 0:
                raise VerificationError("llama_decode failed during the greedy continuation")
            greedy.append(int(np.ctypeslib.as_array(ctx.logits(0), shape=(model.n_vocab,)).argmax()))
        batch.close()
        ctx.close()
    finally:
        model.close()
    ref = reference.logits
    if ours.shape != ref.shape:
        raise VerificationError(f"logit shapes differ: GGUF {ours.shape} vs reference {ref.shape}")
    return LogitParity(
        n_positions=n_prompt,
        max_abs_diff=float(np.abs(ours - ref).max()),
        logit_scale=float(np.abs(ref).max()),
        top1_agreement=float((ours.argmax(-1) == ref.argmax(-1)).mean()),
        greedy_reference=reference.greedy,
        greedy_gguf=greedy,
        tolerance=tolerance,
        greedy_enforced=greedy_enforced and tolerance is not None,
    )
