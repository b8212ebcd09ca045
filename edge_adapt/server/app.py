"""The HTTP layer: OpenAI-compatible routes over the engine, health, metrics and API keys.

Models load in a background thread after the server starts, so ``/health`` answers 503 while
loading and 200 once ready. Shutdown (SIGTERM, :mod:`edge_adapt.server.drain`) refuses new
requests with 503, lets the ones in flight finish (streams included), then stops the engine and
closes the models.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from edge_adapt.server.chat_serving import CHAT
from edge_adapt.server.completion_serving import COMPLETION
from edge_adapt.server.encoding import FiniteJSONResponse
from edge_adapt.server.errors import APIError, install_handlers
from edge_adapt.server.gate import Gate
from edge_adapt.server.schemas import ChatCompletionRequest, CompletionRequest
from edge_adapt.server.serving import serve
from edge_adapt.server.state import ServeConfig, ServerState


def check_key(api_key: str | None, request: Request) -> None:
    """With a key configured, ``Authorization: Bearer KEY`` or a 401 (compared in constant time)."""
    if api_key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), api_key.encode()):
        raise APIError(401, "a valid API key is required: send 'Authorization: Bearer <key>'", "authentication_error",
                       "invalid_api_key")


def json_body(request: Request) -> None:
    """A body sent as anything but JSON is a 415 that says what to send."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise APIError(415, f"send the body as JSON with 'Content-Type: application/json' (got {kind or 'none'!r})",
                       "invalid_request_error", "unsupported_media_type")


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
        check_key(config.api_key, request)

    # HEAD answers like GET without a body (container health checks and load balancers send it)
    @app.api_route("/health", methods=["GET", "HEAD"])
    async def health() -> FiniteJSONResponse:
        if state.error is not None:
            return FiniteJSONResponse({"status": "error", "message": state.error}, status_code=503)
        if state.engine is None:
            return FiniteJSONResponse({"status": "loading"}, status_code=503, headers={"Retry-After": str(config.retry_after_s)})
        if state.traffic.draining:
            return FiniteJSONResponse({"status": "draining"}, status_code=503)
        return FiniteJSONResponse({"status": "ok", "model": config.offer.model_id, "queue": state.engine.pending})

    @app.api_route("/metrics", methods=["GET", "HEAD"])
    async def metrics() -> Response:
        if state.engine is not None:
            state.metrics.refresh(state.engine.stack, state.engine.pending)
        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    def model_card() -> dict:
        return {"id": config.offer.model_id, "object": "model", "created": 0, "owned_by": "edge_adapt"}

    @app.api_route("/v1/models", methods=["GET", "HEAD"], dependencies=[Depends(authorised)])
    async def models() -> dict:
        return {"object": "list", "data": [model_card()]}

    @app.api_route("/v1/models/{model_id:path}", methods=["GET", "HEAD"], dependencies=[Depends(authorised)])
    async def model(model_id: str) -> dict:
        if model_id != config.offer.model_id:
            raise APIError(404, f"model {model_id[:200]!r} is not served here; this server serves {config.offer.model_id!r}",
                           "invalid_request_error", "model_not_found", "model")
        return model_card()

    @app.post("/v1/chat/completions", dependencies=[Depends(authorised), Depends(json_body)])
    async def chat(body: ChatCompletionRequest, request: Request) -> Response:
        return await serve(state, body, request, CHAT)

    @app.post("/v1/completions", dependencies=[Depends(authorised), Depends(json_body)])
    async def completions(body: CompletionRequest, request: Request) -> Response:
        return await serve(state, body, request, COMPLETION)

    return app
