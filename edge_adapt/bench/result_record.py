"""A search result as one line of a run's records.jsonl: the answer, its grade, what the search
decided and spent, and every sample's evidence (answer, grade, length, token confidence, PRM score),
which calibration and the paired comparisons read."""

from __future__ import annotations

import dataclasses
from typing import Any

from edge_adapt.budget.decisions import SampleSize
from edge_adapt.search import Candidate, SearchResult
from edge_adapt.tasks import Problem, Task


def to_record(problem: Problem, index: int, result: SearchResult, task: Task, question_q: Any) -> dict[str, Any]:
    chosen = result.chosen
    sized = next((d for d in result.decisions if isinstance(d, SampleSize)), None)
    return {
        "question_id": problem.id,
        "index": index,
        "level": problem.level,
        "strategy": result.strategy,
        "answer": result.answer,
        "gold": problem.answer,
        "correct": bool(chosen is not None and task.is_correct(chosen.text, problem)),
        "candidates": len(result.candidates),
        "candidates_correct": sum(task.is_correct(c.text, problem) for c in result.candidates),
        "candidates_unfinished": sum(not c.end.finished for c in result.candidates),  # cut off: no answer, no vote
        "samples_chosen": sized.samples if sized is not None else None,
        "question_quantiles": [question_q.low, question_q.median, question_q.high] if question_q is not None else None,
        "chosen_final_median": chosen.final.median if chosen is not None and chosen.final is not None else None,
        "cost": dataclasses.asdict(result.cost),
        "decisions": [d.as_record() for d in result.decisions],
        "samples": [sample_record(c, task.is_correct(c.text, problem)) for c in result.candidates],
    }


ANSWER_CHARS = 200  # an answer longer than this is kept cut (free text: only its equality is read)


def sample_record(candidate: Candidate, correct: bool) -> dict[str, Any]:
    """What one sample said and how sure the generator was: the evidence calibration fits on."""
    return {
        "answer": candidate.answer[:ANSWER_CHARS] if candidate.answer is not None else None,
        "correct": correct,
        "finished": candidate.end.finished,
        "tokens": candidate.n_tokens,
        "confidence": candidate.confidence.as_record(),
        "prm_median": round(candidate.final.median, 5) if candidate.final is not None else None,
    }
