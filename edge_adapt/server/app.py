"""The HTTP layer: OpenAI-compatible routes over the engine, health, metrics and API keys.

Models load in a background thread after the server starts, so ``/health`` answers 503 while
loading and 200 once ready. Shutdown (SIGTERM, :mod:`edge_adapt.server.drain`) refuses new
requests with 503, lets the ones in flight finish (streams included), then stops the engine and
closes the models.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import Future
from dataclasses import dataclass, replace

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST

from edge_adapt.assembly import StackSettings, open_stack
from edge_adapt.errors import BudgetError, ContextOverflowError, EdgeAdaptError
from edge_adapt.search import BestOfN, SearchResult
from edge_adapt.search.adaptive_vote import vote_model_spec
from edge_adapt.search.spec import DEFAULT_SPEC, parse_spec
from edge_adapt.server.encoding import FiniteJSONResponse
from edge_adapt.server.engine import Cancelled, Engine, Events, Job, QueueFull, ShuttingDown
from edge_adapt.server.errors import APIError, bad_request, busy, install_handlers
from edge_adapt.server.gate import Gate, Traffic
from edge_adapt.server.metrics import ServerMetrics
from edge_adapt.server.schemas import ChatCompletionRequest, CompletionRequest
from edge_adapt.server.service import Prepared, ServerSettings, prepare, response_body
from edge_adapt.server.streaming import stream

log = logging.getLogger(__name__)

DISCONNECT_POLL_S = 0.05


@dataclass(frozen=True)
class ServeConfig:
    """Everything ``edge-adapt serve`` decides before the models load."""

    stack: StackSettings  # its task, prompt settings and context; its budget is the server-wide default
    model_id: str
    default_strategy: str | None = None  # None: the PRM's default search, or without a PRM the adaptive vote
    max_n: int = 8
    max_tokens: int = 512
    max_waiting: int = 8
    api_key: str | None = None
    retry_after_s: int = 2
    warm_up: bool = True
    max_body: int = 4 * 2**20
    drain_s: float = 30.0  # how long SIGTERM waits for requests in flight


def stack_settings_for(config: ServeConfig) -> StackSettings:
    """The stack sized for the largest request this server accepts: the default strategy, or
    ``max_n`` samples, each up to ``max_tokens`` tokens."""
    sizing = [BestOfN(n=config.max_n, select="majority")]
    if config.default_strategy is not None:
        sizing.append(parse_spec(config.default_strategy))
    return replace(config.stack, strategies=tuple(sizing), max_new_tokens=config.max_tokens)


class ServerState:
    """The loaded stack and engine, once ready; the load error, if loading failed."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.metrics = ServerMetrics()
        self.traffic = Traffic()
        self.engine: Engine | None = None
        self.settings: ServerSettings | None = None
        self.error: str | None = None
        self._exit = contextlib.ExitStack()
        self._thread = threading.Thread(target=self._load, name="edge-adapt-load", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _load(self) -> None:
        try:
            stack_settings = stack_settings_for(self.config)
            stack = self._exit.enter_context(open_stack(stack_settings))
            gen = stack.generator
            if self.config.default_strategy is not None:
                default, why = self.config.default_strategy, "the server's default strategy (--strategy)"
            elif stack.prm.available:
                default, why = DEFAULT_SPEC, "value-aware sampling with the PRM"
            else:
                default = vote_model_spec(stack.searcher.vote_model)
                why = ("the generator's calibrated adaptive vote" if stack.searcher.vote_model is not None else
                       "no PRM and no calibration beside the generator: Adaptive-Consistency's adaptive vote")
            self.settings = ServerSettings(
                model_id=self.config.model_id, default_strategy=default, default_why=why,
                search=stack.searcher.settings, budget=stack_settings.budget, max_n=self.config.max_n,
                max_live_paths=max(s.live_paths for s in stack_settings.strategies),
                max_tokens=self.config.max_tokens, can_judge=bool(stack.prm.available),
                max_prompt_chars=gen.n_ctx * gen.vocab.longest_piece,
            )
            if self.config.warm_up:
                stack.searcher.warm_up(stack.searcher.task.warm_up_problem())
            self.engine = Engine(stack, self.config.max_waiting, self._done)
            log.info("ready: %s, task %s%s; context %d KV cells (a one-sample prompt may have %d tokens); n <= %d, "
                        "max_tokens <= %d, body <= %d bytes; questions with a checkable answer: %s (%s); other turns: "
                        "one sample, streamed", self.config.model_id, stack.searcher.task.name,
                        " (chat template)" if stack.searcher.settings.chat else "", gen.n_ctx,
                        min(gen.n_ctx, gen.seq_ctx) - self.config.max_tokens, self.config.max_n, self.config.max_tokens,
                        self.config.max_body, default, why)
        except Exception as exc:  # reported by /health and every request
            log.exception("loading the models failed")
            self.error = f"{type(exc).__name__}: {exc}"

    def _done(self, job: Job, result: SearchResult | None) -> None:
        if result is not None:
            self.metrics.record_search(result)
        elif job.cancel.is_set():
            self.metrics.cancelled.inc()
        if self.engine is not None:
            self.metrics.kv_cells_used.set(self.engine.stack.generator.kv_cells_used)
            self.metrics.kv_cells_cached.set(self.engine.stack.generator.kv_cells_cached)

    def stop(self) -> None:
        self._thread.join()
        if self.engine is not None:
            self.engine.close()
        self._exit.close()

    def ready(self) -> tuple[Engine, ServerSettings]:
        if self.error is not None:
            raise APIError(503, f"the models failed to load: {self.error}", "server_error", "load_failed")
        if self.engine is None or self.settings is None:
            raise APIError(503, "the models are loading; retry shortly", "server_error", "loading",
                           headers={"Retry-After": str(self.config.retry_after_s)})
        return self.engine, self.settings


def create_app(config: ServeConfig) -> FastAPI:
    state = ServerState(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.start()
        yield
        await asyncio.to_thread(state.stop)

    app = FastAPI(title="edge_adapt", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None,
                  default_response_class=FiniteJSONResponse)
    app.state.edge_adapt = state
    install_handlers(app)
    app.add_middleware(Gate, metrics=state.metrics, traffic=state.traffic, max_body=config.max_body)

    def authorised(request: Request) -> None:
        if config.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), config.api_key.encode()):
            raise APIError(401, "a valid API key is required: send 'Authorization: Bearer <key>'", "authentication_error",
                           "invalid_api_key")

    def json_body(request: Request) -> None:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            raise APIError(415, f"send the body as JSON with 'Content-Type: application/json' (got {kind or 'none'!r})",
                           "invalid_request_error", "unsupported_media_type")

    @app.get("/health")
    async def health() -> FiniteJSONResponse:
        if state.error is not None:
            return FiniteJSONResponse({"status": "error", "message": state.error}, status_code=503)
        if state.engine is None:
            return FiniteJSONResponse({"status": "loading"}, status_code=503, headers={"Retry-After": str(config.retry_after_s)})
        if state.traffic.draining:
            return FiniteJSONResponse({"status": "draining"}, status_code=503)
        return FiniteJSONResponse({"status": "ok", "model": config.model_id, "queue": state.engine.pending})

    @app.get("/metrics")
    async def metrics() -> Response:
        if state.engine is not None:
            state.metrics.queue_depth.set(state.engine.pending)
        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    def model_card() -> dict:
        return {"id": config.model_id, "object": "model", "created": 0, "owned_by": "edge_adapt"}

    @app.get("/v1/models", dependencies=[Depends(authorised)])
    async def models() -> dict:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}", dependencies=[Depends(authorised)])
    async def model(model_id: str) -> dict:
        if model_id != config.model_id:
            raise APIError(404, f"model {model_id[:200]!r} is not served here; this server serves {config.model_id!r}",
                           "invalid_request_error", "model_not_found", "model")
        return model_card()

    @app.post("/v1/chat/completions", dependencies=[Depends(authorised), Depends(json_body)])
    async def chat(body: ChatCompletionRequest, request: Request) -> Response:
        return await _serve(state, body, request, chat=True)

    @app.post("/v1/completions", dependencies=[Depends(authorised), Depends(json_body)])
    async def completions(body: CompletionRequest, request: Request) -> Response:
        return await _serve(state, body, request, chat=False)

    return app


async def _serve(state: ServerState, body: ChatCompletionRequest | CompletionRequest, request: Request, chat: bool) -> Response:
    engine, settings = state.ready()
    prepared = prepare(body, settings, engine.stack.searcher.task)
    events = Events(asyncio.get_running_loop()) if body.stream else None
    if events is not None:
        prepared = replace(prepared, job=replace(prepared.job, events=events))
    else:
        prepared = replace(prepared, job=replace(prepared.job, stream_tokens=False))
    try:
        future = engine.submit(prepared.job)
    except QueueFull:
        raise busy(state.config.retry_after_s) from None
    except ShuttingDown:
        raise APIError(503, "the server is shutting down", "server_error", "shutting_down") from None
    request_id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
    if events is not None:
        if not await _started(prepared, future, events, request):
            return Response(status_code=499)  # the client is gone; nobody reads this
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        chunks = stream(prepared, future, events, settings, request_id, chat, include_usage, lambda: _outcome(future))
        return StreamingResponse(chunks, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    result = await _wait(prepared, future, request)
    if result is None:
        return Response(status_code=499)
    return FiniteJSONResponse(response_body(prepared, result, settings, request_id, chat))


async def _started(prepared: Prepared, future: Future[SearchResult], events: Events, request: Request) -> bool:
    """Wait until the job's prompt is accepted (so that a prompt too long is a 4xx, not an error
    inside a 200 stream); False when the client left first. A job that failed raises its error."""
    while True:
        event = await events.get(DISCONNECT_POLL_S)
        if event is not None and event[0] == "started":
            return True
        if event is not None and event[0] == "done":
            return _outcome(future) is not None
        if event is None and await request.is_disconnected():
            prepared.job.cancel.set()
            return False


async def _wait(prepared: Prepared, future: Future[SearchResult], request: Request) -> SearchResult | None:
    """The search's result, or None when the client went away (its search is cancelled)."""
    waiting = asyncio.wrap_future(future)
    while not waiting.done():
        await asyncio.wait({waiting}, timeout=DISCONNECT_POLL_S)
        if not waiting.done() and await request.is_disconnected():
            prepared.job.cancel.set()
            with contextlib.suppress(Exception):
                await waiting  # the worker stops at its next batched decode and frees the sequences
            return None
    return _outcome(future)


def _outcome(future: Future[SearchResult]) -> SearchResult | None:
    """A finished job's result; None if it was cancelled; its error as the API error it deserves."""
    try:
        return future.result(timeout=0)
    except Cancelled:
        return None
    except BudgetError as exc:
        raise bad_request(str(exc), "edge_adapt", "budget_too_small") from None
    except ContextOverflowError as exc:
        raise bad_request(str(exc), "messages", "context_length_exceeded") from None
    except EdgeAdaptError as exc:
        raise bad_request(str(exc), None) from None
