"""Calibration records -> PRM training sequences.

A record labels one point of a solution (question + k steps). Records of the same solution are
points on one token sequence, so they are packed into it: one forward pass labels the question
and every step of a sampled solution at once, several times cheaper than one sequence per
record. Each record is used exactly once.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from tokenizers import Tokenizer

from edge_adapt.prm.format import PRMFormat, encode_prefix
from edge_adapt_tools.prm.calibration_data import CalibrationRecord


@dataclass(frozen=True)
class TrainingSequence:
    question_id: str
    input_ids: list[int]
    positions: list[int]  # token indices that carry a label
    targets: list[float]  # Monte-Carlo success rate at each position
    n_rollouts: list[int]  # how many rollouts each target averages (its resolution)


def split_questions(
    records: Iterable[CalibrationRecord], holdout: float, seed: int = 0, salt: str = ""
) -> tuple[set[str], set[str]]:
    """(train, held-out) question ids; the split is by question, never by prefix. ``salt`` draws
    another split of the same questions (splitting a split again)."""
    ids = sorted({r.question_id for r in records})
    held = {q for q in ids if int(hashlib.sha256(f"{salt}{seed}:{q}".encode()).hexdigest(), 16) % 10_000 < holdout * 10_000}
    return set(ids) - held, held


def build_sequences(
    records: Sequence[CalibrationRecord], tokenizer: Tokenizer, fmt: PRMFormat, question_ids: set[str] | None = None
) -> list[TrainingSequence]:
    by_question: dict[str, list[CalibrationRecord]] = defaultdict(list)
    for r in records:
        if question_ids is None or r.question_id in question_ids:
            by_question[r.question_id].append(r)
    sequences = []
    for qid, recs in by_question.items():
        # longest first, so shorter prefixes find the solution they belong to
        paths: list[tuple[tuple[str, ...], dict[int, CalibrationRecord]]] = []
        for r in sorted(recs, key=lambda r: -len(r.prefix)):
            depth = len(r.prefix)
            for steps, labels in paths:
                if steps[:depth] == r.prefix and depth not in labels:
                    labels[depth] = r
                    break
            else:
                paths.append((r.prefix, {depth: r}))
        question = recs[0].question
        for steps, labels in paths:
            enc = encode_prefix(tokenizer, fmt, question, list(steps))
            kept = [(enc.score_positions[d], r) for d, r in sorted(labels.items()) if enc.score_positions[d] is not None]
            if kept:
                sequences.append(
                    TrainingSequence(
                        qid, enc.input_ids, [p for p, _ in kept], [r.success_rate for _,
                                                                   r in kept], [r.n_rollouts for _, r in kept]
                    )
                )
    return sequences


def length_from_data(records: Sequence[CalibrationRecord], tokenizer: Tokenizer, fmt: PRMFormat,
                     quantile: float = 0.99, ceiling: int = 1024) -> int:
    """A PRM context that holds ``quantile`` of the calibration's solutions whole: their token
    length (question and every step), rounded up to a multiple of 64, between 64 and ``ceiling``.
    Memory and time grow with the context, so it is no longer than the data needs."""
    wide = replace(fmt, max_length=1 << 20)
    lengths = sorted(len(encode_prefix(tokenizer, wide, r.question, list(r.prefix)).input_ids)
                     for r in records if r.origin == "sample")
    if not lengths:
        return fmt.max_length
    longest = lengths[min(len(lengths) - 1, int(quantile * len(lengths)))]
    return max(64, min(ceiling, -(-longest // 64) * 64))
