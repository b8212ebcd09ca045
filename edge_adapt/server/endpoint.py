"""What differs between the two OpenAI APIs the server speaks, chat completions and text
completions: how a request becomes a conversation, and the shape of a choice in a response and in
a stream chunk. Everything else (the job, the search, the cost, streaming) is shared; each API is
one :class:`Endpoint` (:mod:`~edge_adapt.server.chat_serving`, :mod:`~edge_adapt.server.completion_serving`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Conversation:
    """What a request asks: the question (the last user turn, or the prompt), the system message,
    the earlier turns as (role, text)."""

    question: str
    system: str | None = None
    history: tuple[tuple[str, str], ...] = ()


class Endpoint(Protocol):
    id_prefix: str  # of a response's id ("chatcmpl-...")
    object: str  # a whole response's "object"
    chunk_object: str  # a stream chunk's "object"
    prompt_field: str  # the request field that holds the prompt, named in its errors

    def conversation(self, request: Any) -> Conversation:
        """The request's conversation, or a 400 naming the field that cannot be read."""
        ...

    def choice(self, index: int, text: str, reason: str) -> dict[str, Any]:
        """One choice of a whole response."""
        ...

    def delta(self, index: int, text: str | None, reason: str | None = None) -> dict[str, Any]:
        """One choice of a stream chunk: ``text`` more of it (None: none), ``reason`` once it ends."""
        ...

    def opening(self, n: int) -> list[dict[str, Any]]:
        """The choices of the stream's first chunk, before any text (empty: no such chunk)."""
        ...
