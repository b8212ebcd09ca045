"""Server-sent events for ``"stream": true``: chunks as OpenAI sends them, built from a job's events.

A single-sample answer streams its tokens as they are decoded (UTF-8 reassembled across tokens;
text that could be the start of a stop string is held back until it is not). A search streams
progress in the ``edge_adapt`` extension (samples drawn, each decision) and the chosen solution
once it is decided. The last chunks carry the finish reason, the cost and, when asked, the usage.
"""

from __future__ import annotations

import codecs
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from typing import Any

from edge_adapt.search import SearchResult
from edge_adapt.server.encoding import to_json
from edge_adapt.server.endpoint import Endpoint
from edge_adapt.server.engine import Events
from edge_adapt.server.errors import APIError
from edge_adapt.server.jobs import Prepared, ServerSettings
from edge_adapt.server.responses import apply_stops, choices_of, cost_report, usage

PING_S = 15.0  # an SSE comment this often keeps proxies from closing a quiet stream


class TextStream:
    """A lone sample's text as its tokens arrive: what may be sent now, never past a stop string."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = stops
        self._hold = max((len(s) for s in stops), default=1) - 1
        self.text = ""
        self.sent = 0
        self.stopped = False

    def push(self, piece: bytes) -> str:
        if self.stopped:
            return ""
        self.text += self._decoder.decode(piece)
        cut, self.stopped = apply_stops(self.text, self._stops)
        upto = len(cut) if self.stopped else len(self.text) - self._hold
        out = self.text[self.sent:upto] if upto > self.sent else ""
        self.sent = max(self.sent, upto)
        return out

    def rest(self, final: str) -> str:
        """What the final text holds beyond what was sent."""
        return final[self.sent:]


def sse(data: dict[str, Any] | str) -> bytes:
    return f"data: {data if isinstance(data, str) else to_json(data)}\n\n".encode()


async def stream(prepared: Prepared, future: Future[SearchResult], events: Events, settings: ServerSettings,
                 request_id: str, endpoint: Endpoint, include_usage: bool,
                 answer: Callable[[], SearchResult | None]) -> AsyncIterator[bytes]:
    """The chunks of one streamed response, as ``endpoint`` shapes them; ``answer`` turns the
    finished job into its result (raising the API error it deserves). The job is cancelled if the
    client leaves."""
    created = int(time.time())

    def chunk(choices: list[dict], **extra: object) -> bytes:
        return sse({"id": request_id, "object": endpoint.chunk_object, "created": created, "model": settings.offer.model_id,
                    "choices": choices, **extra})

    delta = endpoint.delta
    streamed = TextStream(prepared.stops)  # a lone sample's text, as far as it was sent
    try:
        if opening := endpoint.opening(prepared.n):
            yield chunk(opening)
        while True:
            event = await events.get(PING_S)
            if event is None:
                yield b": ping\n\n"
                continue
            kind, value = event
            if kind == "token":
                if text := streamed.push(value):
                    yield chunk([delta(0, text)])
            elif kind == "progress" and prepared.mode == "search":
                samples, decision = value
                yield chunk([], edge_adapt={"event": "progress", "samples": samples,
                                            "decision": None if decision is None else decision.as_record()})
            elif kind == "done":
                break
        try:
            result = answer()
        except APIError as exc:
            yield sse({"error": {"message": exc.message, "type": exc.type, "code": exc.code, "param": exc.param}})
            return
        if result is None:
            return
        for i, (candidate, text, reason) in enumerate(choices_of(prepared, result)):
            if prepared.job.stream_tokens:
                pieces = [streamed.rest(text)]
            else:
                pieces = list(candidate.steps) if candidate is not None and text == candidate.text else [text]
            for piece in filter(None, pieces):
                yield chunk([delta(i, piece)])
            yield chunk([delta(i, None, reason)])
        final: dict[str, Any] = {"edge_adapt": cost_report(prepared, result, settings)}
        if include_usage:
            final["usage"] = usage(prepared, result)
        yield chunk([], **final)
        yield sse("[DONE]")
    finally:
        if not future.done():
            prepared.job.cancel.set()  # the client left mid-stream
