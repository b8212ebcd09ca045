"""What every ``/v1`` request passes before and after its route: the body-size limit, the drain
(503 once the server is shutting down), the count of requests in flight, and the metrics.

Plain ASGI (not BaseHTTPMiddleware), so that a handler still sees its client disconnect and a
streamed response counts as in flight until its last chunk. Metrics are labelled by the route's
template (``/v1/models/{model_id}``), and every path no route matches by one label, so no client
can grow the series.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge_adapt.server.errors import APIError
from edge_adapt.server.metrics import ServerMetrics

UNMATCHED = "unmatched"


@dataclass
class Traffic:
    """Requests in flight and whether the server drains (shared with the shutdown)."""

    in_flight: int = 0
    draining: bool = False


class Gate:
    def __init__(self, app: ASGIApp, metrics: ServerMetrics, traffic: Traffic, max_body: int) -> None:
        self.app = app
        self.metrics = metrics
        self.traffic = traffic
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [0]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        self.traffic.in_flight += 1
        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                await refusal.response()(scope, receive, sending)
                return
            replay = await self._read_body(receive)
            if replay is None:
                await self._too_large().response()(scope, receive, sending)
                return
            await self.app(scope, replay, sending)
        finally:
            self.traffic.in_flight -= 1
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or UNMATCHED
            self.metrics.requests.labels(endpoint, str(status[0] or 500)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)

    def _refusal(self, scope: Scope) -> APIError | None:
        if self.traffic.draining:
            return APIError(503, "the server is shutting down; retry against another instance", "server_error",
                            "shutting_down", headers={"Connection": "close"})
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            try:
                if int(length) > self.max_body:
                    return self._too_large()
            except ValueError:
                return APIError(400, "the Content-Length header is not a number", "invalid_request_error", "invalid_header")
        return None

    def _too_large(self) -> APIError:
        return APIError(413, f"the request body is over this server's limit of {self.max_body} bytes (--max-body): "
                             "shorten the conversation", "invalid_request_error", "request_too_large",
                        headers={"Connection": "close"})

    async def _read_body(self, receive: Receive) -> Receive | None:
        """The whole body, read here up to the limit (chunked, or lying about its length), and a
        ``receive`` that hands it to the route once, then reports the client's disconnect; None
        when the body is over the limit (the rest is never read)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return receive  # the client left: the route sees it
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body:
                return None
            if not message.get("more_body", False):
                break
        body = [b"".join(chunks)]

        async def replay() -> Message:
            if body:
                return {"type": "http.request", "body": body.pop(), "more_body": False}
            return await receive()

        return replay
