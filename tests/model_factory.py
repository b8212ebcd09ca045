"""Tiny real models for the tests: Hugging Face checkpoints built with transformers.

Hidden and feed-forward sizes are multiples of 256 so that K-quants are real, not fallbacks.
Random-weight models test conversion and the KV bookkeeping (any error in a shared prefix
changes their logits); a briefly trained model is needed where the test must see the model
*choose* to end a step with a blank line or to stop with EOS.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from transformers import (
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
    SmolLM3Config,
    SmolLM3ForCausalLM,
)

from edge_adapt.tasks.arithmetic import ArithmeticTask, Level
from edge_adapt_tools.recipe.train_tokenizer import train_bpe_tokenizer, train_sentencepiece_style_tokenizer

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_TOKENIZER_CORPUS = [
    "Q:37+48*3\n\n37+48=85\n\n85*3=255\n\nA:255",
    "The quick brown fox jumps over the lazy dog, naïve café 日本語 12345 3.14159",
    "def f(x):\n    return x**2  # squared\n",
    "I'm sure they'll say it's fine; WE'RE ready.",
] * 20


def random_checkpoint(
    out: Path,
    *,
    arch: str = "llama",
    tied: bool = False,
    style: str = "gpt2",
    vocab_size: int = 384,
    hidden: int = 256,
    intermediate: int = 512,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    rope_scaling: dict | None = None,
    seed: int = 0,
) -> Path:
    """A random-weight model of ``arch`` with grouped-query attention and a chat template."""
    if style == "sentencepiece":
        tok = train_sentencepiece_style_tokenizer(
            _TOKENIZER_CORPUS, vocab_size=320, extra_special=["<|im_start|>", "<|im_end|>"], chat_template=CHAT_TEMPLATE)
    else:
        tok = train_bpe_tokenizer(
            _TOKENIZER_CORPUS, vocab_size=320, style=style, extra_special=["<|im_start|>", "<|im_end|>"],
            chat_template=CHAT_TEMPLATE,
        )
    common = dict(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=1024,
        tie_word_embeddings=tied, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(seed)
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common, rope_scaling=rope_scaling))
    elif arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    elif arch == "qwen3":
        model = Qwen3ForCausalLM(Qwen3Config(**common, head_dim=hidden // heads))
    elif arch == "gemma3":
        # sliding window of 8 so that the parity prompt (47 tokens) crosses it; layer 6 is global
        model = Gemma3ForCausalLM(Gemma3TextConfig(**common, head_dim=hidden // heads, query_pre_attn_scalar=hidden // heads,
                                                   sliding_window=8, pad_token_id=tok.pad_token_id))
    elif arch == "smollm3":
        model = SmolLM3ForCausalLM(SmolLM3Config(**common, pad_token_id=tok.eos_token_id))
    else:
        raise ValueError(arch)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.8, 1.2)
            else:
                p.normal_(0.0, 0.08)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


# The default task's format with single-digit operands: a model trained for seconds learns the
# format fully and the arithmetic partly, so its answers are a real mix of right and wrong.
TINY_ARITHMETIC = ArithmeticTask(levels=tuple(Level(n, 1, 9, max_value=99_999) for n in (1, 2, 3)))


def arithmetic_text(rng: random.Random) -> str:
    problem = TINY_ARITHMETIC.sample(rng, rng.randint(1, 3))
    return TINY_ARITHMETIC.prompt(problem) + TINY_ARITHMETIC.solution(problem)


def trained_step_checkpoint(out: Path, *, steps: int = 150, seed: int = 0) -> Path:
    """A tiny Llama trained for a few seconds on the default task's format (steps, blank lines,
    an answer line, EOS)."""
    rng = random.Random(seed)
    tok = train_bpe_tokenizer([arithmetic_text(rng) for _ in range(400)], vocab_size=280, style="smollm")
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=288, hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        batch = [tok.encode(arithmetic_text(rng)) + [tok.eos_token_id] for _ in range(32)]
        width = max(map(len, batch))
        ids = torch.full((len(batch), width), tok.eos_token_id)
        labels = torch.full((len(batch), width), -100)
        for i, seq in enumerate(batch):
            ids[i, : len(seq)] = torch.tensor(seq)
            labels[i, : len(seq)] = torch.tensor(seq)
        loss = model(input_ids=ids, labels=labels).loss
        optim.zero_grad()
        loss.backward()
        optim.step()
    model.eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
