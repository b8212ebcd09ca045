"""Turning a PRM (or a bare backbone) into a quantile PRM.

The quantile PRM is a plain Hugging Face ``*ForTokenClassification`` model whose head has one
output per quantile level; ``sigmoid(logit)`` is that quantile of the success probability.
Keeping the stock class means optimum, transformers and the runtime all treat it as an ordinary
token-classification model.

From a two-label PRM (the TRL kind: softmax over {wrong, right} at each step separator) the new
head starts as the paper prescribes, every quantile row equal to ``w_right - w_wrong`` (and the
same for the bias): ``sigmoid((w1 - w0)·h + b1 - b0)`` is exactly the old softmax's P(right), so
before training the quantile PRM reproduces the original PRM's scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForTokenClassification, PreTrainedModel

from edge_adapt.errors import UnsupportedModelError

QUANTILE_LEVELS: tuple[float, ...] = (0.1, 0.5, 0.9)
SUPPORTED_MODEL_TYPES = ("llama", "qwen2")


def _head(model: PreTrainedModel) -> nn.Linear:
    for name in ("score", "classifier"):
        layer = getattr(model, name, None)
        if isinstance(layer, nn.Linear):
            return layer
    raise UnsupportedModelError(f"{type(model).__name__} has no linear token-classification head (score/classifier)")


def _set_quantile_config(model: PreTrainedModel, levels: Sequence[float]) -> None:
    labels = [f"q{round(q * 100):02d}" for q in levels]
    model.config.num_labels = len(levels)
    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {label: i for i, label in enumerate(labels)}
    model.config.quantile_levels = list(levels)
    model.num_labels = len(levels)


def _check_type(path: Path) -> None:
    config = AutoConfig.from_pretrained(path)
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedModelError(
            f"{path}: model type {config.model_type!r} is not supported for the quantile PRM "
            f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})."
        )


def _load_token_classifier(path: Path, **kwargs: object) -> PreTrainedModel:
    """The checkpoint as a token classifier; weights it will not load safely are a clear error."""
    if not list(path.glob("*.safetensors")):
        pickled = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.pt"))
        raise UnsupportedModelError(
            f"{path}: no .safetensors weights" + (f" (only pickle files: {', '.join(pickled)}, which are not loaded: "
                                                   "they can run code)" if pickled else "")
            + "; convert the checkpoint with `model.save_pretrained(path, safe_serialization=True)` where you trust it")
    try:
        return AutoModelForTokenClassification.from_pretrained(path, dtype=torch.float32, **kwargs)
    except (OSError, ValueError) as exc:
        raise UnsupportedModelError(f"{path}: the checkpoint does not load as a token classifier "
                                    f"({str(exc).splitlines()[0]})") from exc


def from_two_label_prm(path: str | Path, levels: Sequence[float] = QUANTILE_LEVELS, positive_label: int = 1) -> PreTrainedModel:
    """A quantile PRM initialised from a two-label token-classification PRM (see module docstring)."""
    path = Path(path)
    _check_type(path)
    model = _load_token_classifier(path)
    old = _head(model)
    if old.out_features != 2:
        raise UnsupportedModelError(f"{path}: expected a two-label PRM head, found {old.out_features} labels.")
    neg = 1 - positive_label
    new = nn.Linear(old.in_features, len(levels), bias=True)
    with torch.no_grad():
        new.weight.copy_((old.weight[positive_label] - old.weight[neg]).expand(len(levels), -1))
        bias = (old.bias[positive_label] - old.bias[neg]) if old.bias is not None else torch.tensor(0.0)
        new.bias.fill_(float(bias))
    setattr(model, "score" if hasattr(model, "score") else "classifier", new)
    _set_quantile_config(model, levels)
    return model


def from_backbone(path: str | Path, levels: Sequence[float] = QUANTILE_LEVELS, base_rate: float = 0.5) -> PreTrainedModel:
    """A quantile PRM on a bare causal-LM (or encoder) backbone, for a PRM trained from scratch.

    The new head starts at zero weights and ``logit(base_rate)`` bias: every quantile begins at
    the average success rate of the calibration data, and training moves them apart.
    """
    path = Path(path)
    _check_type(path)
    model = _load_token_classifier(path, num_labels=len(levels))
    head = _head(model)
    rate = min(max(base_rate, 1e-3), 1 - 1e-3)
    with torch.no_grad():
        head.weight.zero_()
        if head.bias is None:
            raise UnsupportedModelError(f"{path}: the token-classification head has no bias")
        head.bias.fill_(math.log(rate / (1 - rate)))
    _set_quantile_config(model, levels)
    return model


def parameter_count(path: str | Path) -> int:
    """About how many parameters the checkpoint at ``path`` has, from its config alone."""
    try:
        config = AutoConfig.from_pretrained(path)
        hidden, layers = config.hidden_size, config.num_hidden_layers
    except (OSError, ValueError, AttributeError) as exc:
        raise UnsupportedModelError(f"{path}: not a Hugging Face model folder with a readable config.json "
                                    f"({str(exc).splitlines()[0]})") from exc
    inner = getattr(config, "intermediate_size", 4 * hidden)
    return layers * (4 * hidden * hidden + 3 * hidden * inner) + config.vocab_size * hidden
