"""From an OpenAI-style request to a search job (the response is :mod:`~edge_adapt.server.responses`'s).

A request runs in one of three modes, and the response says which and why:

- **search**: a strategy (the request's ``edge_adapt.strategy`` or the server's default) draws
  samples and picks one answer; the response is that solution, with what the search cost.
  Whether a turn can be searched is decided by its samples: a search gives up after its first
  samples when none holds an extractable answer (a greeting, a haiku sent to a ``--task gsm8k``
  server: nothing to vote on), and the best of them replies (the PRM's highest score, else the
  sample the generator was surest of), as a chat turn's would. How many it looks at is the
  stack's (:func:`edge_adapt.defaults.give_up_after`: two for a chat model, a task's calibrated
  count, else four). The cost of the look: that many samples instead of
  one, decoded together, and no token streaming.
- **single**: one sample is the answer, its tokens streamed as decoded: a turn that plainly asks
  for prose (a haiku, an explanation: more samples earn nothing without a way to tell which is
  right), ``temperature`` 0 (every sample would be the same), or ``"strategy": "sample"`` with n = 1.
- **sample**: ``n`` solutions decoded together from the shared prompt, no pick (``n`` > 1).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace

from edge_adapt.budget.guard import Budget
from edge_adapt.errors import EdgeAdaptError
from edge_adapt.generator import StepRules
from edge_adapt.search import BestOfN, SearchSettings
from edge_adapt.search.spec import PRM_FREE_KINDS, parse_spec
from edge_adapt.search.strategy import Strategy
from edge_adapt.server.endpoint import Endpoint
from edge_adapt.server.engine import Job
from edge_adapt.server.errors import APIError, bad_request
from edge_adapt.server.schemas import OpenAIRequest
from edge_adapt.tasks import Problem, Task

SAMPLE = "sample"
ONE_SAMPLE = BestOfN(n=1, select="majority")


@dataclass(frozen=True)
class Offer:
    """What a server offers every request, declared once for its start-up config and its loaded
    settings: the model's name, the search a question with a checkable answer gets when the request
    names none (and why), and the most samples and tokens one request may ask."""

    model_id: str
    default_strategy: str | None = None  # None until loaded: the default search for the loaded models
    default_why: str = "the server's default strategy"  # printed at start-up, said in responses
    max_n: int = 8
    max_tokens: int = 512  # per solution


@dataclass(frozen=True)
class ServerSettings:
    """What every request starts from, and the limits it may not pass: the server's offer (its
    default strategy resolved) and what the loaded stack allows."""

    offer: Offer
    search: SearchSettings  # sampling, prompt and step settings of the loaded stack
    budget: Budget = Budget()  # the server-wide default; a request's fields replace it field by field
    max_live_paths: int = 16  # what the generator's KV pool was sized for
    can_judge: bool = True  # a PRM is loaded
    # a prompt of more characters cannot fit the context: refused without tokenizing it (no token
    # of the model is longer than its longest piece)
    max_prompt_chars: int = 1 << 62


@dataclass(frozen=True)
class Prepared:
    job: Job
    mode: str  # "search", "single" or "sample"
    why: str
    n: int
    stops: tuple[str, ...]
    notes: tuple[str, ...] = ()


def prepare(request: OpenAIRequest, endpoint: Endpoint, server: ServerSettings, task: Task) -> Prepared:
    """The job a request to ``endpoint`` asks for, or a 4xx naming the field that cannot be served."""
    if request.model is not None and request.model != server.offer.model_id:
        raise APIError(404, f"model {request.model!r} is not served here; this server serves {server.offer.model_id!r} "
                            "(GET /v1/models)", "invalid_request_error", "model_not_found", "model")
    if request.n > server.offer.max_n:
        raise bad_request(f"n must be at most {server.offer.max_n} on this server (--max-n), got {request.n}", "n")
    cap = request.token_cap
    if cap is not None and cap > server.offer.max_tokens:
        field = request.token_cap_field
        raise bad_request(f"{field} must be at most {server.offer.max_tokens} on this server (--max-tokens), got {cap}", field)
    asked = endpoint.conversation(request)
    question, system, history = asked.question, asked.system, asked.history
    chars = len(question) + len(system or "") + sum(len(text) for _, text in history)
    if chars > server.max_prompt_chars:
        raise bad_request(f"the prompt has {chars} characters, more than any prompt this server's context holds "
                          f"({server.max_prompt_chars} characters at the most): shorten the conversation",
                          endpoint.prompt_field, "context_length_exceeded")
    try:
        problem = task.parse_question(question)
    except EdgeAdaptError as exc:
        raise bad_request(str(exc), endpoint.prompt_field) from None
    base = server.search
    sampling = replace(base.sampling, **{k: v for k, v in (("temperature", request.temperature), ("top_p", request.top_p))
                                         if v is not None})
    strategy, mode, why = _mode(request, server, problem, sampling.temperature)
    if mode == "search" and base.give_up_after:
        why += (f"; a turn whose first {base.give_up_after} samples hold no final answer is answered as chat: the best "
                "sample's text")

    rules: StepRules = replace((base.rules or task.step_rules).overridden(max_new_tokens=cap or server.offer.max_tokens),
                               stop=request.stops if mode != "search" else ())
    notes = _notes(problem, base, system, history)
    # a seeded request is reproducible: its prompt is evaluated whole, not partly from the cache
    settings = replace(base, sampling=sampling, rules=rules, reuse_prompt_cache=request.seed is None,
                       system=system if system is not None else base.system, history=history if base.chat else ())
    try:
        budget = replace(server.budget, **request.edge_adapt.budget_fields())
    except EdgeAdaptError as exc:
        raise bad_request(str(exc), "edge_adapt") from None
    seed = request.seed if request.seed is not None else uuid.uuid4().int % 2**31
    job = Job(problem, strategy, settings, seed, budget, stream_tokens=mode != "search" and request.n == 1)
    return Prepared(job, mode, why, request.n, request.stops, notes)


def _mode(request: OpenAIRequest, server: ServerSettings, problem: Problem,
          temperature: float) -> tuple[Strategy, str, str]:
    """(strategy, mode, why) for this request."""
    spec = request.edge_adapt.strategy
    if spec == SAMPLE or (spec is None and request.n > 1):
        return BestOfN(n=request.n, select="majority"), ("sample" if request.n > 1 else "single"), "plain sampling, as asked"
    strategy = _strategy(spec or server.offer.default_strategy, server)
    if request.n > 1:
        raise bad_request('n > 1 asks for n samples; a search returns one answer. Use "edge_adapt": '
                          '{"strategy": "sample"} for n samples, or n = 1 with a search', "n")
    if not problem.meta.get("checkable", True):
        return ONE_SAMPLE, "single", ("this turn asks for prose, whose answers cannot be compared (no number or math "
                                      "result to agree on), so more samples earn nothing: one sample")
    if temperature == 0:
        return ONE_SAMPLE, "single", "temperature 0: every sample would be the same, so one sample"
    why = "the request's strategy" if spec else server.offer.default_why
    return strategy, "search", why


def _strategy(spec: str, server: ServerSettings) -> Strategy:
    try:
        strategy = parse_spec(spec)
    except EdgeAdaptError as exc:
        raise bad_request(f"edge_adapt.strategy: {exc}", "edge_adapt.strategy") from None
    if strategy.needs_prm and not server.can_judge:
        raise bad_request(f"edge_adapt.strategy {strategy.name} reads PRM scores and this server has no PRM "
                          f"({', '.join(PRM_FREE_KINDS)} need none)", "edge_adapt.strategy")
    if strategy.live_paths > server.max_live_paths:
        raise bad_request(f"edge_adapt.strategy {strategy.name} keeps {strategy.live_paths} paths; this server was sized "
                          f"for {server.max_live_paths} (--max-n)", "edge_adapt.strategy")
    return strategy


def _notes(problem: Problem, base: SearchSettings, system: str | None, history: tuple) -> tuple[str, ...]:
    """What the response should tell its reader about how the request was read."""
    notes = [problem.meta[k] for k in ("note", "warning") if problem.meta.get(k)]
    if not base.chat and (system is not None or history):
        notes.append("this model has no chat template: the system message and earlier turns were not used, only the "
                     "last user message")
    return tuple(notes)
