"""``POST /v1/chat/completions``: a conversation of messages in, an assistant message out."""

from __future__ import annotations

from typing import Any

from edge_adapt.server.endpoint import Conversation
from edge_adapt.server.errors import bad_request
from edge_adapt.server.schemas import ChatCompletionRequest


class ChatServing:
    id_prefix = "chatcmpl"
    object = "chat.completion"
    chunk_object = "chat.completion.chunk"
    prompt_field = "messages"

    def conversation(self, request: ChatCompletionRequest) -> Conversation:
        """The last user message is the question; system and developer messages join into the
        system message; earlier user and assistant turns are the history."""
        messages = request.messages
        if messages[-1].role != "user":
            raise bad_request(f"the last message must be the user's (got {messages[-1].role!r})", "messages")
        system = "\n\n".join(m.text for m in messages if m.role in ("system", "developer")) or None
        history = tuple((m.role, m.text) for m in messages[:-1] if m.role in ("user", "assistant"))
        return Conversation(messages[-1].text, system, history)

    def choice(self, index: int, text: str, reason: str) -> dict[str, Any]:
        return {"index": index, "message": {"role": "assistant", "content": text}, "finish_reason": reason, "logprobs": None}

    def delta(self, index: int, text: str | None, reason: str | None = None) -> dict[str, Any]:
        return {"index": index, "delta": {} if text is None else {"content": text}, "finish_reason": reason, "logprobs": None}

    def opening(self, n: int) -> list[dict[str, Any]]:
        """As OpenAI: the role first, with empty content, for every choice."""
        return [{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None, "logprobs": None}
                for i in range(n)]


CHAT = ChatServing()
