"""Training the default generator from scratch on the default task (CPU-friendly).

A small Llama with one token per character (digits kept single) learns the arithmetic chain
format in minutes on two CPU cores. Every batch mixes all difficulty levels, packed into rows of
``ROW_LEN`` tokens (each example attending only to itself), so no compute goes to padding even
though the levels differ a lot in length. The loss covers the solution only, not the question.

Two options buy accuracy per CPU minute, both on for the shipped generator: ``bf16`` runs the
matrix products in bfloat16 (autocast; weights and optimizer state stay fp32), about 1.5x faster
per step on a CPU with native bf16 (AVX512-BF16 or AMX; elsewhere it is emulated and slower, so
train with ``bf16=False`` there, and expect a slightly different model); ``level_weights`` draws
the three easy levels twice as often: drawn uniformly, they stay undertrained (level 1 is missed
almost only on two-digit subtractions with a borrow; models/README.md).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from edge_adapt.errors import EdgeAdaptError
from edge_adapt.tasks.arithmetic import ArithmeticTask, split_of
from edge_adapt_tools.recipe.train_tokenizer import train_bpe_tokenizer

log = logging.getLogger(__name__)

ROW_LEN = 256  # packed row length; the longest default-task example is about 210 tokens


@dataclass(frozen=True)
class GeneratorTrainSettings:
    hidden: int = 256  # multiples of 256 keep K-quants real (no per-tensor fallbacks)
    layers: int = 4
    heads: int = 8
    kv_heads: int = 8
    ffn: int = 768
    steps: int = 2500  # leaves room between pass@1 and pass@16 for search to show (models/README.md)
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 100
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.1
    # relative frequency of each difficulty level in the training batches (None: uniform)
    level_weights: tuple[float, ...] | None = (2, 2, 2, 1, 1, 1)
    bf16: bool = True  # autocast the matrix products to bfloat16 (see the module docstring)
    seed: int = 0
    threads: int | None = None


@dataclass
class GeneratorTrainReport:
    steps: int
    n_params: int
    final_loss: float
    seconds: float
    settings: dict


def char_tokenizer(task: ArithmeticTask) -> PreTrainedTokenizerFast:
    """Byte-level BPE with no merges: one token per character, digits single (llama.cpp 'smollm')."""
    rng = random.Random(0)
    corpus = [task.prompt(p) + task.solution(p) for p in (task.sample(rng, 1 + i % len(task.levels)) for i in range(200))]
    return train_bpe_tokenizer(corpus, vocab_size=256 + 2, style="smollm")


def _examples(task: ArithmeticTask, tok: PreTrainedTokenizerFast, rng: random.Random, n: int,
              level_weights: Sequence[float] | None = None) -> list[tuple[list[int], int]]:
    """(token ids, prompt length) of ``n`` train-split problems, levels drawn by ``level_weights``
    (None: uniformly, drawn exactly as before the weights existed, so seeded runs reproduce)."""
    levels = range(1, len(task.levels) + 1)
    out = []
    while len(out) < n:
        level = rng.randint(1, len(task.levels)) if level_weights is None else rng.choices(levels, weights=level_weights)[0]
        p = task.sample(rng, level)
        if split_of(p.question) != "train":
            continue
        prompt = tok.encode(task.prompt(p))  # with BOS
        solution = tok.encode(task.solution(p), add_special_tokens=False) + [tok.eos_token_id]
        out.append((prompt + solution, len(prompt)))
    return out


def _packed_batch(examples: list[tuple[list[int], int]], row_len: int, pad_id: int) -> dict[str, torch.Tensor]:
    """Examples packed first-fit into rows of ``row_len``; position ids restart per example, which
    (with no attention mask and no cache) makes transformers attend within each example only."""
    rows: list[list[tuple[list[int], int]]] = []
    for ex in sorted(examples, key=lambda e: -len(e[0])):
        row = next((r for r in rows if sum(len(e[0]) for e in r) + len(ex[0]) <= row_len), None)
        if row is None:
            rows.append([ex])
        else:
            row.append(ex)
    width = max(sum(len(e[0]) for e in r) for r in rows)
    ids = torch.full((len(rows), width), pad_id)
    labels = torch.full((len(rows), width), -100)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        at = 0
        for seq, prompt_len in row:
            ids[i, at : at + len(seq)] = torch.tensor(seq)
            labels[i, at + prompt_len : at + len(seq)] = torch.tensor(seq[prompt_len:])
            positions[i, at : at + len(seq)] = torch.arange(len(seq))
            at += len(seq)
        positions[i, at:] = torch.arange(width - at)  # the padding tail is a sequence of its own
    return {"input_ids": ids, "labels": labels, "position_ids": positions}


def _model(tok: PreTrainedTokenizerFast, settings: GeneratorTrainSettings) -> LlamaForCausalLM:
    """A fresh Llama of the settings' shape over the character tokenizer."""
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=settings.hidden, intermediate_size=settings.ffn,
        num_hidden_layers=settings.layers, num_attention_heads=settings.heads, num_key_value_heads=settings.kv_heads,
        max_position_embeddings=512, tie_word_embeddings=True, rope_theta=10000.0,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    return model


def _optimizer(model: LlamaForCausalLM, settings: GeneratorTrainSettings) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW (no decay on norms and biases), a linear warm-up into a cosine decay to ``min_lr_ratio``."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optim = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.lr, betas=(0.9, 0.95),
    )

    def schedule(step: int) -> float:
        if step < settings.warmup:
            return (step + 1) / settings.warmup
        t = (step - settings.warmup) / max(1, settings.steps - settings.warmup)
        return settings.min_lr_ratio + (1 - settings.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    sched = torch.optim.lr_scheduler.LambdaLR(optim, schedule)
    return optim, sched


def train_generator(
    task: ArithmeticTask,
    out_dir: str | Path,
    settings: GeneratorTrainSettings = GeneratorTrainSettings(),
    progress: Callable[[int, int, float], None] = lambda step, total, loss: None,
    checkpoint: Callable[[int, LlamaForCausalLM, PreTrainedTokenizerFast], None] | None = None,
    checkpoint_every: int = 250,
) -> GeneratorTrainReport:
    """Train and save a Hugging Face checkpoint (model + tokenizer) in ``out_dir``.

    ``checkpoint(step, model, tokenizer)`` is called every ``checkpoint_every`` steps (e.g. to
    measure accuracy along the way); the model is in eval mode during the call.
    """
    started = time.perf_counter()
    weights = settings.level_weights
    if weights is not None and (len(weights) != len(task.levels) or min(weights) < 0 or sum(weights) <= 0):
        raise EdgeAdaptError(f"level_weights {weights}: need one non-negative weight per level ({len(task.levels)}), not all "
                             f"zero")
    if settings.bf16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        log.warning("this CPU has no native bfloat16: bf16=True will be emulated and slower; train with bf16=False")
    torch.manual_seed(settings.seed)
    rng = random.Random(settings.seed)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    tok = char_tokenizer(task)
    model = _model(tok, settings)
    optim, sched = _optimizer(model, settings)
    model.train()
    n_levels = len(task.levels)
    recent: list[float] = []
    for step in range(settings.steps):
        batch = _packed_batch(_examples(task, tok, rng, settings.batch_size, weights), ROW_LEN, tok.eos_token_id)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=settings.bf16):
            loss = model(**batch, use_cache=False).loss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        sched.step()
        recent = (recent + [loss.item()])[-n_levels * 4 :]
        progress(step + 1, settings.steps, sum(recent) / len(recent))
        if checkpoint is not None and (step + 1) % checkpoint_every == 0:
            model.eval()
            with torch.no_grad():
                checkpoint(step + 1, model, tok)
            model.train()
    model.eval()
    out = Path(out_dir)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return GeneratorTrainReport(
        steps=settings.steps,
        n_params=sum(p.numel() for p in model.parameters()),
        final_loss=sum(recent) / len(recent),
        seconds=time.perf_counter() - started,
        settings=asdict(settings),
    )
