"""The HTTP layer: OpenAI-compatible routes over the engine, health, metrics and API keys.

Models load in a background thread after the server starts, so ``/health`` answers 503 while
loading and 200 once ready. Shutdown (SIGTERM through uvicorn) stops accepting connections,
lets requests in flight finish, then drains the engine and closes the models.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import Future
from dataclasses import dataclass, replace

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sse_starlette.sse import EventSourceResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge_adapt.assembly import StackSettings, open_stack
from edge_adapt.errors import BudgetError, ContextOverflowError, EdgeAdaptError
from edge_adapt.search import BestOfN, SearchResult
from edge_adapt.search.spec import parse_spec
from edge_adapt.server.engine import Cancelled, Engine, Job, QueueFull, ShuttingDown
from edge_adapt.server.errors import APIError, bad_request, busy, install_handlers
from edge_adapt.server.metrics import ServerMetrics
from edge_adapt.server.schemas import ChatCompletionRequest, CompletionRequest
from edge_adapt.server.service import (
    Prepared,
    ServerSettings,
    chat_body,
    choices_of,
    completion_body,
    cost_report,
    prepare,
    usage,
)

log = logging.getLogger(__name__)

DISCONNECT_POLL_S = 0.05


@dataclass(frozen=True)
class ServeConfig:
    """Everything ``edge-adapt serve`` decides before the models load."""

    stack: StackSettings  # its strategies size the generator; its budget is the server-wide default
    model_id: str
    default_strategy: str
    max_n: int = 8
    max_tokens: int = 512
    max_waiting: int = 8
    api_key: str | None = None
    retry_after_s: int = 2
    warm_up: bool = True


def stack_settings_for(config: ServeConfig) -> StackSettings:
    """The stack sized for the largest request this server accepts: the default strategy, or
    ``max_n`` samples, each up to ``max_tokens`` tokens."""
    sizing = [BestOfN(n=config.max_n, select="majority")]
    if config.stack.prm is not None:
        sizing.append(parse_spec(config.default_strategy))
    return replace(config.stack, strategies=tuple(sizing), max_new_tokens=config.max_tokens)


class ServerState:
    """The loaded stack and engine, once ready; the load error, if loading failed."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.metrics = ServerMetrics()
        self.engine: Engine | None = None
        self.settings: ServerSettings | None = None
        self.error: str | None = None
        self.prompt_room = 0  # the longest prompt (tokens) the KV pool holds beside the largest search
        self._exit = contextlib.ExitStack()
        self._thread = threading.Thread(target=self._load, name="edge-adapt-load", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _load(self) -> None:
        try:
            stack_settings = stack_settings_for(self.config)
            stack = self._exit.enter_context(open_stack(stack_settings))
            gen = stack.generator
            live = max(s.live_paths for s in stack_settings.strategies)
            self.settings = ServerSettings(
                model_id=self.config.model_id, default_strategy=self.config.default_strategy,
                search=stack.searcher.settings, budget=stack_settings.budget, max_n=self.config.max_n,
                max_live_paths=live, max_tokens=self.config.max_tokens, can_judge=bool(stack.prm.available),
            )
            self.prompt_room = min(gen.seq_ctx, gen.n_ctx - live * self.config.max_tokens)
            if self.config.warm_up:
                stack.searcher.warm_up(stack.searcher.task.warm_up_problem())
            self.engine = Engine(stack, self.config.max_waiting, self._done)
            log.info("ready: %s, %d KV cells, prompts up to %d tokens", self.config.model_id, gen.n_ctx, self.prompt_room)
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

    app = FastAPI(title="edge_adapt", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.edge_adapt = state
    install_handlers(app)

    def authorised(request: Request) -> None:
        if config.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), config.api_key.encode()):
            raise APIError(401, "a valid API key is required: send 'Authorization: Bearer <key>'", "authentication_error",
                           "invalid_api_key")

    app.add_middleware(_RequestMetrics, metrics=state.metrics)

    @app.get("/health")
    async def health() -> JSONResponse:
        if state.error is not None:
            return JSONResponse({"status": "error", "message": state.error}, status_code=503)
        if state.engine is None:
            return JSONResponse({"status": "loading"}, status_code=503, headers={"Retry-After": str(config.retry_after_s)})
        return JSONResponse({"status": "ok", "model": config.model_id, "queue": state.engine.pending})

    @app.get("/metrics")
    async def metrics() -> Response:
        if state.engine is not None:
            state.metrics.queue_depth.set(state.engine.pending)
        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", dependencies=[Depends(authorised)])
    async def models() -> dict:
        return {"object": "list", "data": [{"id": config.model_id, "object": "model", "created": 0, "owned_by": "edge_adapt"}]}

    @app.post("/v1/chat/completions", dependencies=[Depends(authorised)])
    async def chat(body: ChatCompletionRequest, request: Request) -> Response:
        return await _serve(state, body, request, "chat.completion")

    @app.post("/v1/completions", dependencies=[Depends(authorised)])
    async def completions(body: CompletionRequest, request: Request) -> Response:
        return await _serve(state, body, request, "text_completion")

    return app


class _RequestMetrics:
    """Counts /v1 requests by status and times them. Plain ASGI (not BaseHTTPMiddleware), so that
    a handler still sees its client disconnect."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.requests.labels(scope["path"], str(status[0])).inc()
            self.metrics.latency.labels(scope["path"]).observe(time.perf_counter() - started)


async def _serve(state: ServerState, body: ChatCompletionRequest | CompletionRequest, request: Request, kind: str) -> Response:
    engine, settings = state.ready()
    task = engine.stack.searcher.task
    prepared = prepare(body, settings, task)
    _check_prompt_fits(state, prepared)
    try:
        future = engine.submit(prepared.job)
    except QueueFull:
        raise busy(state.config.retry_after_s) from None
    except ShuttingDown:
        raise APIError(503, "the server is shutting down", "server_error", "shutting_down") from None
    request_id = f"{'chatcmpl' if kind == 'chat.completion' else 'cmpl'}-{uuid.uuid4().hex}"
    if body.stream:
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        return EventSourceResponse(_stream(state, prepared, future, request, request_id, kind, include_usage), ping=15)
    result = await _wait(prepared, future, request)
    if result is None:
        return Response(status_code=499)  # the client is gone; nobody reads this
    build = chat_body if kind == "chat.completion" else completion_body
    return JSONResponse(build(prepared, result, settings, request_id))


def _check_prompt_fits(state: ServerState, prepared: Prepared) -> None:
    engine = state.engine
    assert engine is not None
    gen, job = engine.stack.generator, prepared.job
    task = engine.stack.searcher.task
    prompt = gen.vocab.render_prompt(task.prompt(job.problem), chat=job.settings.chat, system=job.settings.system,
                                     history=job.settings.history)
    n_prompt = len(gen.vocab.tokenize(prompt, parse_special=True))
    if n_prompt > state.prompt_room:
        raise APIError(400, f"the prompt is {n_prompt} tokens; this server's context holds prompts of up to "
                            f"{state.prompt_room} tokens (n_prompt_tokens={n_prompt}, n_ctx={state.prompt_room}): shorten it",
                       "invalid_request_error", "context_length_exceeded", "messages")


async def _wait(prepared: Prepared, future: Future[SearchResult], request: Request) -> SearchResult | None:
    """The search's result, or None when the client went away (its search is cancelled)."""
    waiting = asyncio.wrap_future(future)
    while not waiting.done():
        await asyncio.wait({waiting}, timeout=DISCONNECT_POLL_S)
        if not waiting.done() and await request.is_disconnected():
            prepared.job.cancel.set()
            with contextlib.suppress(Exception):
                await waiting  # the worker stops at its next expansion and frees the sequences
            return None
    try:
        return waiting.result()
    except Cancelled:
        return None
    except (BudgetError, ContextOverflowError) as exc:
        field = "edge_adapt" if isinstance(exc, BudgetError) else "max_tokens"
        raise bad_request(str(exc), field, "budget_too_small" if isinstance(exc, BudgetError) else "context_length_exceeded") from None
    except EdgeAdaptError as exc:
        raise bad_request(str(exc), None) from None


async def _stream(state: ServerState, prepared: Prepared, future: Future[SearchResult], request: Request, request_id: str,
                  kind: str, include_usage: bool) -> AsyncIterator[dict]:
    """SSE chunks: the role at once, the chosen solution's steps once the search has decided
    them, then the finish reason and what it cost; ``[DONE]`` last."""
    settings = state.settings
    assert settings is not None
    created = int(time.time())
    chat = kind == "chat.completion"
    obj = "chat.completion.chunk" if chat else "text_completion"

    def chunk(choices: list[dict], **extra: object) -> dict:
        return {"data": json.dumps({"id": request_id, "object": obj, "created": created, "model": settings.model_id,
                                    "choices": choices, **extra})}

    def delta(i: int, text: str | None, reason: str | None = None, role: bool = False) -> dict:
        if chat:
            content = {"role": "assistant", "content": ""} if role else ({} if text is None else {"content": text})
            return {"index": i, "delta": content, "finish_reason": reason, "logprobs": None}
        return {"index": i, "text": text or "", "finish_reason": reason, "logprobs": None}

    try:
        if chat:
            yield chunk([delta(i, None, role=True) for i in range(prepared.n)])
        try:
            result = await _wait(prepared, future, request)
        except APIError as exc:
            yield {"data": json.dumps({"error": {"message": exc.message, "type": exc.type, "code": exc.code, "param": exc.param}})}
            return
        if result is None:
            return
        for i, (candidate, text, reason) in enumerate(choices_of(prepared, result)):
            steps = list(candidate.steps) if candidate is not None and text == candidate.text else [text]
            for step in steps:
                yield chunk([delta(i, step)])
            yield chunk([delta(i, None if chat else "", reason)])
        final = {"edge_adapt": cost_report(prepared, result, settings)}
        if include_usage:
            final["usage"] = usage(result)
        yield chunk([], **final)
        yield {"data": "[DONE]"}
    finally:
        if not future.done():
            prepared.job.cancel.set()  # the client left mid-stream
