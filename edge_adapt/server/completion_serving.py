"""``POST /v1/completions``: one prompt in, its text continued."""

from __future__ import annotations

from typing import Any

from edge_adapt.server.endpoint import Conversation
from edge_adapt.server.errors import bad_request
from edge_adapt.server.schemas import CompletionRequest


class CompletionServing:
    id_prefix = "cmpl"
    object = "text_completion"
    chunk_object = "text_completion"
    prompt_field = "prompt"

    def conversation(self, request: CompletionRequest) -> Conversation:
        """The prompt is the question; a list of prompts (one completion each, in OpenAI's API) is
        refused unless it holds one: this server answers one question per request."""
        prompts = [request.prompt] if isinstance(request.prompt, str) else request.prompt
        if len(prompts) != 1:
            raise bad_request(f"prompt must be one string (got a list of {len(prompts)}); send one request per prompt", "prompt")
        return Conversation(prompts[0])

    def choice(self, index: int, text: str, reason: str) -> dict[str, Any]:
        return {"index": index, "text": text, "finish_reason": reason, "logprobs": None}

    def delta(self, index: int, text: str | None, reason: str | None = None) -> dict[str, Any]:
        return {"index": index, "text": text or "", "finish_reason": reason, "logprobs": None}

    def opening(self, n: int) -> list[dict[str, Any]]:
        return []


COMPLETION = CompletionServing()
