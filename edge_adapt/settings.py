"""Settings that several faces share, declared once: the CLI's options, the server's flags, a
benchmark's config.json, the rollouts and a calibration's provenance all carry these objects."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from edge_adapt.errors import EdgeAdaptError
from edge_adapt.generator import StepRules
from edge_adapt.tasks import Task


@dataclass(frozen=True)
class PromptSettings:
    """How a question becomes the generator's prompt and where its solution's steps end. Each
    ``None`` means "as the model and the task say": the chat template when the GGUF has one, the
    task's prompt, step delimiter and token cap."""

    chat: bool | None = None  # the generator's chat template around the prompt
    system: str | None = None  # a system message before the question (chat only)
    prompt_template: str | None = None  # file tasks: the prompt around {question}
    step_delimiter: str | None = None  # where a step ends (e.g. "\n": one line a step)
    max_new_tokens: int | None = None  # one solution's token cap

    def __post_init__(self) -> None:
        if self.max_new_tokens is not None and (isinstance(self.max_new_tokens, bool) or self.max_new_tokens < 1):
            raise EdgeAdaptError(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        if self.step_delimiter == "":
            raise EdgeAdaptError("the step delimiter must be a non-empty string (leave it unset for the task's)")

    def rules(self, task: Task) -> StepRules:
        """The task's step rules with these overrides."""
        return task.step_rules.overridden(self.step_delimiter, self.max_new_tokens)

    def with_chat(self, has_template: bool) -> PromptSettings:
        """These settings with the chat choice made for a generator that has (or lacks) a template."""
        return self if self.chat is not None else replace(self, chat=has_template)

    def or_else(self, recorded: Mapping[str, Any]) -> PromptSettings:
        """Unset fields taken from a record of these settings (a calibration's provenance)."""
        kept = PromptSettings.from_record(recorded)
        return replace(self, **{f.name: getattr(kept, f.name) for f in fields(self) if getattr(self, f.name) is None})

    def as_record(self) -> dict[str, Any]:
        """The settings as config.json and provenance records write them (flat, by field name)."""
        return asdict(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> PromptSettings:
        """The settings a record (config.json, a provenance) holds among its other keys."""
        return cls(**{f.name: record.get(f.name) for f in fields(cls)})
