"""A quantile PRM that also reads the generator's own likelihood of the solution so far.

Why: the errors a small generator makes are mostly a wrong result of a right operation, and a
token classifier trained on a few thousand Monte-Carlo labels does not learn to check
arithmetic (it rates *questions* well but barely tells a wrong step from a right one). The
generator, though, already knows how sure it was: if it is calibrated, the probability it gave
the token it sampled is the probability that token is right, so the summed log-probability of
a solution's tokens estimates log P(no mistake so far). On the default models this ranks
finished solutions of one question far better than the trained head does.

The combination is one affine map per quantile level, fitted after the PRM is trained (the
PRM and the generator stay frozen)::

    logit_q = question_q * z_question + step_q * (z - z_question) + weight_q * loglik + bias_q

inside the solution, and the head's own logit ``z`` up to the end of the question; ``z`` is the
trained head's logit at the position, ``z_question`` its logit at the end of the question (the
question-level score, carried along the solution), and ``loglik`` the cumulative
log-probability, under the generator, of every solution token up to the position (question
tokens, and step separators, which the PRM format adds after the final answer where the
generator would have stopped, are not counted). Splitting the head's logit in two lets the fit
keep what the head is good at (how hard a question is) while weighing what it is bad at (how one
solution differs from another) on its own; one scale for both keeps the head's noise between
solutions. The question's score stays the head's because the head is trained on those labels
and the combination is not: a solution's log-likelihood is negative even when it is right, so
the fitted bias is positive (``likelihood`` in prm_config.json), and applied where no solution has
been written yet it would raise every question's score. The fit therefore uses only positions
inside a solution (docs/CALIBRATION.md and docs/RESULTS.md have the measured effects).

The generator travels inside the ONNX graph, so the device runtime scores plain text exactly as
before: same inputs, same ``logits`` output, no new code path.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel
from transformers.modeling_outputs import TokenClassifierOutput

from edge_adapt.errors import UnsupportedModelError
from edge_adapt.prm.format import PRMFormat
from edge_adapt_tools.prm.data import TrainingSequence
from edge_adapt_tools.prm.train import _collate, quantile_loss

log = logging.getLogger(__name__)

# the form of the combination below (per-level scales fitted on held-out questions, the head's own
# score at the question's end); part of the recipe's stage stamp, so a PRM built with another form
# is rebuilt rather than reused
LIKELIHOOD_FORM = 4


class GeneratorAwarePRM(nn.Module):
    """``prm`` (a quantile token classifier) and ``generator`` (a causal LM with the same
    tokenizer) in one module whose ``forward`` returns the combined quantile logits."""

    def __init__(self, prm: PreTrainedModel, generator: PreTrainedModel, question_end_id: int, skip_ids: Sequence[int]) -> None:
        super().__init__()
        if prm.config.vocab_size != generator.config.vocab_size:
            raise UnsupportedModelError(
                f"the PRM's vocabulary ({prm.config.vocab_size}) differs from the generator's "
                f"({generator.config.vocab_size}); the likelihood term needs the generator's own tokenizer."
            )
        self.prm = prm
        self.generator = generator.float().eval().requires_grad_(False)
        self.config = prm.config
        levels = prm.config.num_labels
        # starts as the PRM alone: question + step = the head's logit, no likelihood
        self.question = nn.Parameter(torch.ones(levels))
        self.step = nn.Parameter(torch.ones(levels))
        self.weight = nn.Parameter(torch.zeros(levels))
        self.bias = nn.Parameter(torch.zeros(levels))
        self.question_end_id = int(question_end_id)
        self.register_buffer("skip_ids", torch.tensor(sorted(set(skip_ids)), dtype=torch.long), persistent=False)

    def question_end(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """([batch, seq] bool: strictly after the question, [batch, seq] float: one-hot of its end)."""
        is_end = (input_ids == self.question_end_id).long()
        seen = torch.cumsum(is_end, dim=1)
        return (seen - is_end) > 0, (is_end * (seen == 1).long()).float()

    def loglik(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[batch, seq] cumulative generator log-probability of the solution tokens up to each position."""
        logp = torch.log_softmax(self.generator(input_ids=input_ids, attention_mask=attention_mask).logits.float(), dim=-1)
        token_logp = torch.gather(logp[:, :-1], 2, input_ids[:, 1:, None]).squeeze(-1)
        token_logp = torch.cat([torch.zeros_like(token_logp[:, :1]), token_logp], dim=1)  # the first token has no context
        after_question, _ = self.question_end(input_ids)
        skipped = (input_ids[..., None] == self.skip_ids).any(-1)
        counted = after_question & ~skipped & attention_mask.bool()
        return torch.cumsum(token_logp * counted.to(token_logp.dtype), dim=1)

    def question_logits(self, prm_logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """[batch, 1, levels]: the head's logits at the end of the question (zero if it was cut off)."""
        _, end = self.question_end(input_ids)
        return (prm_logits * end[..., None]).sum(dim=1, keepdim=True)

    def combine(self, prm_logits: torch.Tensor, question_logits: torch.Tensor, loglik: torch.Tensor) -> torch.Tensor:
        return (self.question * question_logits + self.step * (prm_logits - question_logits)
                + self.weight * loglik[..., None] + self.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TokenClassifierOutput:
        prm_logits = self.prm(input_ids=input_ids, attention_mask=attention_mask).logits.float()
        question_logits = self.question_logits(prm_logits, input_ids)
        combined = self.combine(prm_logits, question_logits, self.loglik(input_ids, attention_mask))
        # up to the end of the question there is no solution to weigh: the head's own logit, trained on
        # those labels (the combination's bias, fitted for solutions, made question scores optimistic)
        after_question, _ = self.question_end(input_ids)
        return TokenClassifierOutput(logits=torch.where(after_question[..., None], combined, prm_logits))


@dataclass(frozen=True)
class LikelihoodFit:
    question: list[float]
    step: list[float]
    weight: list[float]
    bias: list[float]
    train_loss_before: float
    train_loss_after: float
    points: int

    def to_dict(self) -> dict:
        return {"question": self.question, "step": self.step, "weight": self.weight, "bias": self.bias, "points": self.points,
                "train_loss_before": round(self.train_loss_before, 5), "train_loss_after": round(self.train_loss_after, 5)}


@torch.no_grad()
def _features(model: GeneratorAwarePRM, sequences: Sequence[TrainingSequence], pad_id: int,
              batch_size: int = 32) -> tuple[torch.Tensor, ...]:
    """(prm logits [n, L], question logits [n, L], loglik [n], targets [n]) at every labelled position
    inside a solution (the question's own score is the head's, not the combination's)."""
    logits, question, lik, targets = [], [], [], []
    for start in range(0, len(sequences), batch_size):
        batch = _collate(sequences[start : start + batch_size], pad_id)
        rows, cols = batch["rows"], batch["cols"]
        z = model.prm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        zq = model.question_logits(z, batch["input_ids"]).expand_as(z)
        f = model.loglik(batch["input_ids"], batch["attention_mask"])
        inside = model.question_end(batch["input_ids"])[0][rows, cols]
        logits.append(z[rows, cols][inside])
        question.append(zq[rows, cols][inside])
        lik.append(f[rows, cols][inside])
        targets.append(batch["targets"][inside])
    return torch.cat(logits), torch.cat(question), torch.cat(lik), torch.cat(targets)


def fit_likelihood_term(
    model: GeneratorAwarePRM, train: Sequence[TrainingSequence], levels: Sequence[float], pad_id: int,
    logistic_weight: float = 0.0, steps: int = 1500, lr: float = 0.02,
) -> LikelihoodFit:
    """Fit question, step, weight and bias per level on sequences the head did not train on, with
    the PRM's own loss (pinball on probabilities plus the asymmetric logistic term). Twelve
    numbers: full-batch Adam, seconds on a CPU. The three scales are kept non-negative (projected
    after each step): unconstrained, a fit on a few dozen questions gave the head's step score a
    weight of -11 at the median and held-out Brier got worse than the head alone."""
    prm_logits, question_logits, loglik, targets = _features(model, list(train), pad_id)
    level_t = torch.tensor(list(levels), dtype=torch.float32)

    def loss_fn() -> torch.Tensor:
        return quantile_loss(model.combine(prm_logits, question_logits, loglik), targets, level_t, logistic_weight)

    params = [model.question, model.step, model.weight, model.bias]
    with torch.no_grad():
        before = float(loss_fn())
    optim = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        optim.zero_grad()
        loss = loss_fn()
        loss.backward()
        optim.step()
        with torch.no_grad():  # a higher head score or a likelier solution never means less success
            for p in params[:3]:
                p.clamp_(min=0.0)
    with torch.no_grad():
        after = float(loss_fn())
    if not np.isfinite(after) or after > before:  # never ship a fit that made things worse
        with torch.no_grad():
            model.question.fill_(1.0)
            model.step.fill_(1.0)
            model.weight.zero_()
            model.bias.zero_()
        after = before
        log.warning("the likelihood term did not lower the training loss; it is left at zero")
    fit = LikelihoodFit(
        *([round(float(v), 5) for v in p.detach()] for p in params), before, after, len(targets),
    )
    log.info("likelihood term: %s", fit.to_dict())
    return fit


def _token_ids(tokenizer: Tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False).ids


@dataclass(frozen=True)
class LikelihoodSource:
    """The generator folder and where, in the PRM's tokens, a solution's likelihood is counted."""

    generator_dir: Path
    question_end_id: int
    skip_ids: tuple[int, ...]


def likelihood_source(generator_dir: str | Path, tokenizer: Tokenizer, fmt: PRMFormat) -> LikelihoodSource:
    """Check, before any training, that the generator can supply the term for this PRM."""
    generator_dir = Path(generator_dir)
    tokenizer_file = generator_dir / "tokenizer.json"
    if not (generator_dir / "config.json").is_file() or not tokenizer_file.is_file():
        raise UnsupportedModelError(
            f"{generator_dir}: the likelihood term needs the generator as a Hugging Face folder "
            "(config.json, weights, tokenizer.json) or as its GGUF file."
        )
    if Tokenizer.from_file(str(tokenizer_file)).get_vocab() != tokenizer.get_vocab():
        raise UnsupportedModelError(
            f"{generator_dir}: its tokenizer differs from the PRM's; the likelihood term reads the generator's "
            "probabilities of the PRM's tokens, so both must share one vocabulary (build the PRM on the generator)."
        )
    after_question = fmt.question_template.split("{question}", 1)[1]
    end_ids = _token_ids(tokenizer, after_question) if after_question else []
    if not end_ids:
        raise UnsupportedModelError(
            f"question template {fmt.question_template!r} has nothing after {{question}}: the likelihood term "
            "finds where the solution starts by the token that ends the question (for example a newline)."
        )
    return LikelihoodSource(generator_dir, end_ids[-1], tuple(_token_ids(tokenizer, fmt.step_separator)))


def add_likelihood_term(
    prm: PreTrainedModel, source: LikelihoodSource, train: Sequence[TrainingSequence], levels: Sequence[float], pad_id: int,
    logistic_weight: float = 0.0,
) -> tuple[GeneratorAwarePRM, LikelihoodFit]:
    """Wrap a trained quantile PRM with the generator and fit the combination on the training sequences."""
    generator = AutoModelForCausalLM.from_pretrained(source.generator_dir, dtype=torch.float32)
    model = GeneratorAwarePRM(prm.float().eval(), generator, source.question_end_id, source.skip_ids)
    return model, fit_likelihood_term(model, train, levels, pad_id, logistic_weight)
