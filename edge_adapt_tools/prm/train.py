"""Training the quantile head with the pinball loss against Monte-Carlo success rates.

Full fine-tuning for small models; for large ones, the head plus LoRA adapters on the attention
projections (peft), merged back into the weights afterwards so the export sees a plain model.
The best state by held-out pinball loss is kept (early stopping by selection).
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel

from edge_adapt_tools.prm.data import TrainingSequence
from edge_adapt_tools.prm.metrics import pinball

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 4
    batch_size: int = 16
    lr: float = 2e-4
    head_lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_fraction: float = 0.05
    lora_rank: int | None = None  # None: full fine-tuning; else head + LoRA of this rank
    # recompute activations in the backward pass: a fraction of the memory for ~30% more time
    gradient_checkpointing: bool = False
    eval_every: int = 0  # steps between held-out evaluations; 0: once per epoch
    # Weight of an asymmetric logistic term added to the pinball loss. The pinball loss's gradient
    # through the sigmoid vanishes once an output saturates, and with mostly-0/1 Monte-Carlo
    # targets the heads can saturate at the marginal quantiles before the backbone learns to
    # tell prefixes apart (seen on the default models: every prefix scored q50 ~ 3e-5). The
    # logistic term's gradient (p - y, weighted tau / 1 - tau) never vanishes. 0: the paper's loss.
    logistic_weight: float = 0.0
    seed: int = 0
    threads: int | None = None


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)  # step, train_pinball, eval_pinball
    best_step: int = 0  # the step whose weights were kept (0: training never beat the start)
    seconds: float = 0.0


def pinball_loss(preds: torch.Tensor, targets: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """preds [n, L] (probabilities), targets [n], levels [L]."""
    diff = targets[:, None] - preds
    return torch.maximum(levels * diff, (levels - 1) * diff).mean()


def asymmetric_logistic_loss(logits: torch.Tensor, targets: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy per quantile output, weighted tau above and 1 - tau below the target
    (a logistic expectile loss): keeps each output's gradient alive and its order by level."""
    y = targets[:, None].expand_as(logits)
    weight = torch.where(y > torch.sigmoid(logits).detach(), levels, 1 - levels)
    return (weight * torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")).mean()


def quantile_loss(logits: torch.Tensor, targets: torch.Tensor, levels: torch.Tensor,
                  logistic_weight: float = 0.0) -> torch.Tensor:
    """The PRM's training loss: pinball on the sigmoid outputs, plus the asymmetric logistic
    term when ``logistic_weight`` is set (see TrainSettings)."""
    loss = pinball_loss(torch.sigmoid(logits), targets, levels)
    return loss + logistic_weight * asymmetric_logistic_loss(logits, targets, levels) if logistic_weight else loss


def _collate(batch: Sequence[TrainingSequence], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(s.input_ids) for s in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    rows, cols, targets, counts = [], [], [], []
    for i, s in enumerate(batch):
        ids[i, : len(s.input_ids)] = torch.tensor(s.input_ids)
        mask[i, : len(s.input_ids)] = 1
        rows += [i] * len(s.positions)
        cols += s.positions
        targets += s.targets
        counts += s.n_rollouts
    return {"input_ids": ids, "attention_mask": mask, "rows": torch.tensor(rows), "cols": torch.tensor(cols),
            "targets": torch.tensor(targets, dtype=torch.float32), "n_rollouts": torch.tensor(counts)}


def _quantile_logits(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return logits[batch["rows"], batch["cols"]].float()


def _quantile_probs(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.sigmoid(_quantile_logits(model, batch))


@torch.no_grad()
def predict(
    model: PreTrainedModel, sequences: Sequence[TrainingSequence], batch_size: int = 32, pad_id: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(quantile predictions [n, L] sorted per row, targets [n], rollouts per target [n]) over
    every labelled position."""
    model.eval()
    preds, targets, counts = [], [], []
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i].input_ids))
    for start in range(0, len(order), batch_size):
        batch = _collate([sequences[i] for i in order[start : start + batch_size]], pad_id)
        preds.append(_quantile_probs(model, batch).numpy())
        targets.append(batch["targets"].numpy())
        counts.append(batch["n_rollouts"].numpy())
    return np.sort(np.concatenate(preds), axis=1), np.concatenate(targets), np.concatenate(counts)


def _with_lora(model: PreTrainedModel, rank: int) -> PreTrainedModel:
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(
        task_type=TaskType.TOKEN_CLS, r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], modules_to_save=["score"],
    )
    return get_peft_model(model, config)


def _optimizer(net: PreTrainedModel, settings: TrainSettings, total: int) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW with the head at its own learning rate, and a linear warm-up into a cosine decay over ``total`` steps."""
    head_params = [p for n, p in net.named_parameters() if p.requires_grad and ("score" in n or "classifier" in n)]
    body_params = [p for n, p in net.named_parameters() if p.requires_grad and not ("score" in n or "classifier" in n)]
    optim = torch.optim.AdamW(
        [{"params": body_params, "lr": settings.lr}, {"params": head_params, "lr": settings.head_lr}],
        weight_decay=settings.weight_decay,
    )
    warmup = max(1, int(total * settings.warmup_fraction))
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total)))
    )
    return optim, sched


def _step(net: PreTrainedModel, batch: dict[str, Any], level_t: torch.Tensor, logistic_weight: float,
          optim: torch.optim.Optimizer, sched: Any) -> float:
    """One optimisation step on ``batch``; its loss."""
    net.train()
    loss = quantile_loss(_quantile_logits(net, batch), batch["targets"], level_t, logistic_weight)
    optim.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    optim.step()
    sched.step()
    return float(loss.item())


def train_quantile_prm(
    model: PreTrainedModel,
    train: Sequence[TrainingSequence],
    held_out: Sequence[TrainingSequence],
    levels: Sequence[float],
    settings: TrainSettings = TrainSettings(),
    pad_id: int = 0,
    progress: Callable[[int, int, float], None] = lambda step, total, loss: None,
) -> tuple[PreTrainedModel, TrainResult]:
    """Train in place; returns the best model (by held-out pinball loss) and the report."""
    if not train or not held_out:
        raise ValueError(f"need training and held-out sequences, got {len(train)} and {len(held_out)}")
    started = time.perf_counter()
    torch.manual_seed(settings.seed)
    rng = random.Random(settings.seed)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    level_t = torch.tensor(list(levels), dtype=torch.float32)

    if settings.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    net = _with_lora(model, settings.lora_rank) if settings.lora_rank else model
    steps_per_epoch = math.ceil(len(train) / settings.batch_size)
    total = steps_per_epoch * settings.epochs
    optim, sched = _optimizer(net, settings, total)
    eval_every = settings.eval_every or steps_per_epoch

    def evaluate() -> float:
        p, t, _ = predict(net, held_out, pad_id=pad_id)
        return pinball(p, t, levels)

    best = evaluate()
    best_state = copy.deepcopy(net.state_dict())
    result = TrainResult(history=[{"step": 0, "eval_pinball": best}])
    step = 0
    for _ in range(settings.epochs):
        order = list(range(len(train)))
        rng.shuffle(order)
        for start in range(0, len(order), settings.batch_size):
            batch = _collate([train[i] for i in order[start : start + settings.batch_size]], pad_id)
            loss = _step(net, batch, level_t, settings.logistic_weight, optim, sched)
            step += 1
            progress(step, total, loss)
            if step % eval_every == 0 or step == total:
                score = evaluate()
                result.history.append({"step": step, "train_pinball": loss, "eval_pinball": score})
                if score < best:
                    best, best_state, result.best_step = score, copy.deepcopy(net.state_dict()), step
    net.load_state_dict(best_state)
    if settings.lora_rank:
        net = net.merge_and_unload()
    result.seconds = time.perf_counter() - started
    return net, result
