"""How a (question, reasoning prefix) becomes PRM input, and where its scores are read.

Shared by training (``export/``) and the device scorer, so that the model is scored exactly the
way it was trained. The input is the question segment followed by one segment per step::

    [BOS] question_template.format(question) | step_1 + sep | step_2 + sep | ...

``sep`` (the step separator) is appended to a step that does not already end with it. The PRM's
outputs are read at the *last token of each segment*: the question segment gives the score of
the empty prefix (the question-level success probability), segment ``i`` the score after step ``i``.
Segments are tokenized separately so their boundaries are exact.

Prefixes longer than ``max_length`` tokens are cut by a fixed rule, never an error: the question
keeps at most its first ``max_length // 2`` tokens; then steps are kept from the most recent
backwards while they fit; if the most recent step alone does not fit, its last tokens are kept.
Steps dropped this way have no score (``None`` per step); the last step always has one, computed
without the dropped steps in view (the question's own score is unaffected: the model is causal).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tokenizers import Tokenizer

from edge_adapt.errors import EdgeAdaptError


@dataclass(frozen=True)
class PRMFormat:
    question_template: str = "{question}\n"
    step_separator: str = "\n\n"
    max_length: int = 512

    def __post_init__(self) -> None:
        if not isinstance(self.question_template, str) or "{question}" not in self.question_template:
            raise EdgeAdaptError(f"question_template must contain {{question}}, got {self.question_template!r}")
        try:
            self.question_template.format(question="")
        except (KeyError, IndexError, ValueError) as exc:
            raise EdgeAdaptError(f"question_template {self.question_template!r} may hold {{question}} and no other "
                                 f"placeholder ({exc!r}); write literal braces as {{{{ }}}}") from None
        if not isinstance(self.step_separator, str) or not self.step_separator:
            raise EdgeAdaptError(f"step_separator must be non-empty text, got {self.step_separator!r}")
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < 8:
            raise EdgeAdaptError(f"max_length must be an integer of at least 8, got {self.max_length!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PRMFormat:
        return cls(**{k: data[k] for k in ("question_template", "step_separator", "max_length") if k in data})


@dataclass(frozen=True)
class EncodedPrefix:
    input_ids: list[int]
    # score_positions[i]: token index whose output scores segment i (0 = the question, i = step i);
    # None for steps dropped by truncation.
    score_positions: list[int | None]

    @property
    def n_dropped(self) -> int:
        return sum(p is None for p in self.score_positions)


def encode_prefix(
    tokenizer: Tokenizer,
    fmt: PRMFormat,
    question: str,
    steps: Sequence[str],
    cache: dict[tuple[str, bool], list[int]] | None = None,
) -> EncodedPrefix:
    """Token ids and score positions for one prefix (see the module docstring for the rule).

    ``cache`` (segment text -> ids) lets many prefixes of one question share the tokenization of
    the question and of their common steps.
    """
    if not isinstance(question, str) or not question.strip():
        raise EdgeAdaptError("the question is empty; the PRM scores a prefix *of a question*")
    if any(not isinstance(s, str) for s in steps):
        raise EdgeAdaptError(f"steps must be strings, got {[type(s).__name__ for s in steps]}")
    memo = {} if cache is None else cache

    def ids(text: str, special: bool) -> list[int]:
        key = (text, special)
        if key not in memo:
            memo[key] = tokenizer.encode(text, add_special_tokens=special).ids
        return memo[key]

    sep = fmt.step_separator
    q_ids = ids(fmt.question_template.format(question=question), True)
    if not q_ids:
        raise EdgeAdaptError("the PRM's tokenizer turns the question into no tokens; check the PRM folder's tokenizer.json")
    step_ids = [ids(s if s.endswith(sep) else s + sep, False) for s in steps]
    if any(not ids for ids in step_ids):
        raise EdgeAdaptError("a step encodes to no tokens; steps must be non-empty text")

    q_ids = q_ids[: fmt.max_length // 2]
    budget = fmt.max_length - len(q_ids)
    kept: list[list[int]] = []
    for ids in reversed(step_ids):
        if len(ids) <= budget:
            kept.append(ids)
            budget -= len(ids)
        elif not kept:
            kept.append(ids[-budget:])  # the most recent step is always scored, even if cut
            budget = 0
        else:
            break
    kept.reverse()

    input_ids = list(q_ids)
    positions: list[int | None] = [len(q_ids) - 1] + [None] * (len(steps) - len(kept))
    for ids in kept:
        input_ids += ids
        positions.append(len(input_ids) - 1)
    return EncodedPrefix(input_ids=input_ids, score_positions=positions)


def pad_token_id(tokenizer: Tokenizer) -> int:
    """An id to pad batches with; padded positions are masked out, so any id works when none is named."""
    for token in ("<|endoftext|>", "<|end_of_text|>", "<pad>", "[PAD]", "</s>"):
        tid = tokenizer.token_to_id(token)
        if tid is not None:
            return tid
    return 0
