"""From a finished job to what the client reads: the choices (stop strings applied), the
``edge_adapt`` cost report, OpenAI's usage, and the whole response body."""

from __future__ import annotations

import time
from typing import Any

from edge_adapt.budget.decisions import GaveUp
from edge_adapt.search import SearchResult
from edge_adapt.search.types import Candidate
from edge_adapt.search.voting import no_answer_reason
from edge_adapt.server.endpoint import Endpoint
from edge_adapt.server.jobs import SAMPLE, Prepared, ServerSettings


def finish_reason(candidate: Candidate | None, stopped: bool) -> str:
    if stopped:
        return "stop"
    return "stop" if candidate is not None and candidate.end.finished else "length"  # cut off by a cap


def apply_stops(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    """``text`` cut before the first stop string, and whether one was found."""
    cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


def choices_of(prepared: Prepared, result: SearchResult) -> list[tuple[Candidate | None, str, str]]:
    """(candidate, text, finish reason) per choice: the search's pick, or every sample."""
    picked = [result.chosen] if prepared.mode == "search" else list(result.candidates)[: prepared.n]
    out = []
    for candidate in picked:
        text, stopped = apply_stops(candidate.text if candidate else "", prepared.stops)
        out.append((candidate, text, finish_reason(candidate, stopped)))
    return out


def cost_report(prepared: Prepared, result: SearchResult, server: ServerSettings) -> dict[str, Any]:
    """What the answer cost and why: the ``edge_adapt`` object of a response."""
    c = result.cost
    chosen = result.chosen
    quantiles = chosen.final if chosen is not None and chosen.final is not None else None
    budget = {k: v for k, v in (("energy_j", prepared.job.budget.energy_j), ("latency_s", prepared.job.budget.latency_s),
                                ("tokens", prepared.job.budget.tokens), ("power_w", prepared.job.budget.power_w))
              if v is not None}
    return {
        "mode": prepared.mode,
        "why": prepared.why,
        "strategy": prepared.job.strategy.name if prepared.mode == "search" else SAMPLE,
        "prm": server.can_judge,
        "notes": [*prepared.notes, *_result_notes(prepared, result)],
        "answer": result.answer if prepared.mode == "search" else None,
        "samples": c.samples,
        "generated_tokens": c.generated_tokens,
        "prompt_tokens": c.prompt_tokens,  # evaluated; the rest of the prompt came from the prompt cache
        "cached_prompt_tokens": _prompt_length(prepared, result) - c.prompt_tokens,
        "prm_calls": c.prm_calls,
        "prm_tokens": c.prm_tokens,
        "prm_s": round(c.prm_s, 4),
        "wall_s": round(c.wall_s, 4),
        "joules": None if c.joules is None else round(c.joules, 4),
        "energy_source": c.energy_source,
        "energy_estimated": c.energy_estimated,
        "quantiles": None if quantiles is None else {"q10": quantiles.at(0.1), "q50": quantiles.at(0.5),
                                                     "q90": quantiles.at(0.9)},
        "budget": budget,
        "seed": prepared.job.seed,
        "decisions": [d.as_record() for d in result.decisions],
    }


def _result_notes(prepared: Prepared, result: SearchResult) -> list[str]:
    """What the search itself tells the reader: it gave up, or no sample reached a final answer."""
    if prepared.mode != "search" or result.chosen is None or result.answer is not None:
        return []
    gave_up = next((d for d in result.decisions if isinstance(d, GaveUp)), None)
    why = f"; the search stopped after {gave_up.after} samples without one" if gave_up is not None else ""
    return [f"no sample reached a final answer{why}: the reply is the sample {no_answer_reason(result.chosen)}"]


def _prompt_length(prepared: Prepared, result: SearchResult) -> int:
    return prepared.job.measured.get("prompt_tokens", result.cost.prompt_tokens)


def usage(prepared: Prepared, result: SearchResult) -> dict[str, Any]:
    """OpenAI's usage: the whole prompt (``cached_tokens`` of it reused from the last prompt's
    KV cells), and every token generated, for every sample drawn."""
    c = result.cost
    prompt = _prompt_length(prepared, result)
    return {"prompt_tokens": prompt, "completion_tokens": c.generated_tokens, "total_tokens": prompt + c.generated_tokens,
            "prompt_tokens_details": {"cached_tokens": prompt - c.prompt_tokens}}


def response_body(prepared: Prepared, result: SearchResult, server: ServerSettings, request_id: str,
                  endpoint: Endpoint) -> dict[str, Any]:
    """The whole (non-streamed) response, as ``endpoint`` shapes it."""
    return {
        "id": request_id, "object": endpoint.object, "created": int(time.time()), "model": server.offer.model_id,
        "choices": [endpoint.choice(i, text, reason) for i, (_, text, reason) in enumerate(choices_of(prepared, result))],
        "usage": usage(prepared, result), "edge_adapt": cost_report(prepared, result, server),
    }
