"""The request bodies the server accepts: the OpenAI fields it honours, and the ``edge_adapt``
extension object (search strategy and budgets). Unknown OpenAI fields are ignored, as OpenAI-
compatible servers do; unknown fields inside ``edge_adapt`` are refused (a typo there would
silently drop a budget)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class EdgeAdaptOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    strategy: str | None = Field(None, description='a search spec ("adaptive:price=8", "best_of_n:n=8") or "sample"')
    # upper bounds refuse absurd budgets rather than treating them as "unlimited" by accident
    energy_j: float | None = Field(None, gt=0, le=1e6)
    latency_s: float | None = Field(None, gt=0, le=3600)
    tokens: int | None = Field(None, gt=0, le=10_000_000)
    power_w: float | None = Field(None, gt=0, le=10_000)

    def budget_fields(self) -> dict[str, float]:
        """The budgets this request sets (each replaces the server's default)."""
        return {k: v for k, v in self.model_dump(exclude={"strategy"}).items() if v is not None}


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: dict[str, bool] | None = None
    edge_adapt: EdgeAdaptOptions = Field(default_factory=EdgeAdaptOptions)

    @property
    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return tuple(s for s in ([self.stop] if isinstance(self.stop, str) else self.stop) if s)


class ChatCompletionRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)

    @property
    def token_cap(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Common):
    prompt: str | list[str]

    @property
    def token_cap(self) -> int | None:
        return self.max_tokens
