"""The request bodies the server accepts: the OpenAI fields it honours, and the ``edge_adapt``
extension object (search strategy and budgets). Unknown OpenAI fields are ignored, as OpenAI-
compatible servers do; unknown fields inside ``edge_adapt`` are refused (a typo there would
silently drop a budget).

Every string a model reads is checked here: a NUL (llama.cpp's C strings would cut the text at
it) or a lone surrogate (no UTF-8 for it) is a 400 naming the field, never a silent cut or a 500.
Counts and lengths are bounded so that no field makes the server do unbounded work.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

MAX_MESSAGES = 512
MAX_PARTS = 256  # text parts of one message
MAX_STOPS = 4  # as OpenAI
MAX_STOP_CHARS = 128
MAX_SPEC_CHARS = 200


def _text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("holds a NUL character (U+0000); remove it")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"holds a lone surrogate at character {exc.start}; send valid UTF-8 text") from None
    return value


Text = Annotated[str, AfterValidator(_text)]
Stop = Annotated[str, StringConstraints(max_length=MAX_STOP_CHARS), AfterValidator(_text)]
Spec = Annotated[str, StringConstraints(max_length=MAX_SPEC_CHARS), AfterValidator(_text)]


class EdgeAdaptOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    strategy: Spec | None = Field(None, description='a search spec ("adaptive:price=8", "majority:n=8") or "sample"')
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
    text: Text


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: Text | Annotated[list[TextPart], Field(max_length=MAX_PARTS)]

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    model: Annotated[str, StringConstraints(max_length=256), AfterValidator(_text)] | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    stop: Stop | Annotated[list[Stop], Field(max_length=MAX_STOPS)] | None = None
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
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(None, ge=1)

    @property
    def token_cap(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def token_cap_field(self) -> str:
        return "max_completion_tokens" if self.max_completion_tokens else "max_tokens"


class CompletionRequest(_Common):
    prompt: Text | Annotated[list[Text], Field(max_length=MAX_MESSAGES)]

    @property
    def token_cap(self) -> int | None:
        return self.max_tokens

    @property
    def token_cap_field(self) -> str:
        return "max_tokens"


OpenAIRequest = ChatCompletionRequest | CompletionRequest
