"""Serving one request at either endpoint: request -> job (:mod:`~edge_adapt.server.jobs`), the job
through the engine, its result (or error) -> a JSON response (:mod:`~edge_adapt.server.responses`) or
an SSE stream (:mod:`~edge_adapt.server.streaming`); a client that leaves cancels its job."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from concurrent.futures import Future
from dataclasses import replace

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from edge_adapt.errors import BudgetError, ContextOverflowError, EdgeAdaptError
from edge_adapt.search import SearchResult
from edge_adapt.server.encoding import FiniteJSONResponse
from edge_adapt.server.endpoint import Endpoint
from edge_adapt.server.engine import Cancelled, Events, QueueFull, ShuttingDown
from edge_adapt.server.errors import APIError, bad_request, busy
from edge_adapt.server.jobs import Prepared, prepare
from edge_adapt.server.responses import response_body
from edge_adapt.server.schemas import OpenAIRequest
from edge_adapt.server.state import ServerState
from edge_adapt.server.streaming import stream

DISCONNECT_POLL_S = 0.05


async def serve(state: ServerState, body: OpenAIRequest, request: Request, endpoint: Endpoint) -> Response:
    """Serve ``body`` at ``endpoint`` (chat or text completions): a JSON response, or an SSE stream."""
    engine, settings = state.ready()
    # reading the question (a parser, regular expressions over up to --max-body bytes) runs off the event loop
    prepared = await asyncio.to_thread(prepare, body, endpoint, settings, engine.stack.searcher.task)
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
    request_id = f"{endpoint.id_prefix}-{uuid.uuid4().hex}"
    if events is not None:
        if not await _started(prepared, future, events, request):
            return Response(status_code=499)  # the client is gone; nobody reads this
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        chunks = stream(prepared, future, events, settings, request_id, endpoint, include_usage, lambda: _outcome(future))
        return StreamingResponse(chunks, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    result = await _wait(prepared, future, request)
    if result is None:
        return Response(status_code=499)
    return FiniteJSONResponse(response_body(prepared, result, settings, request_id, endpoint))


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
    waiting.exception()  # retrieved here (answered from ``future`` below), so asyncio logs no "never retrieved"
    return _outcome(future)


def _outcome(future: Future[SearchResult]) -> SearchResult | None:
    """A finished job's result; None if it was cancelled; its error as the API error it deserves.

    The error is read with ``exception()``, not re-raised by ``result()``: re-raising adds this
    frame (which holds the future, which holds the error) to the error's traceback, a cycle that
    kept every refused request's prompt tokens alive until the next full garbage collection.
    """
    exc = future.exception(timeout=0)
    if exc is None:
        return future.result(timeout=0)
    if isinstance(exc, Cancelled):
        return None
    if isinstance(exc, BudgetError):
        raise bad_request(str(exc), "edge_adapt", "budget_too_small")
    if isinstance(exc, ContextOverflowError):
        raise bad_request(str(exc), "messages", "context_length_exceeded")
    if isinstance(exc, EdgeAdaptError):
        raise bad_request(str(exc), None)
    raise exc
