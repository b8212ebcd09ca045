"""What ends a reasoning step, and what ends a whole solution.

A *step* ends at the step delimiter (a blank line by default, the paper's convention); the
solution then continues. A *solution* ends at an end-of-generation token, when the answer
pattern matches, at a length cap, or (where asked) when the model's confidence in its last
tokens falls below a floor (DeepConf's online termination, arXiv 2508.15260). Search needs the
two apart: a finished step is expanded further, a finished solution is scored and kept.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import Enum

from edge_adapt.errors import SamplingConfigError

# Tokens per confidence window: the traces of a small model on short questions are ~50-200 tokens.
CONFIDENCE_WINDOW = 16


class StepEnd(str, Enum):
    DELIMITER = "delimiter"  # the step delimiter was generated; the solution continues
    STEP_LIMIT = "step_limit"  # max_step_tokens reached without a delimiter; the solution continues
    EOG = "eog"  # an end-of-generation token: the solution is complete
    ANSWER = "answer"  # the answer pattern matched: the solution is complete
    STOP = "stop"  # a stop string was generated: the solution is complete (the reader cuts the text before it)
    LENGTH = "length"  # max_new_tokens for the whole solution reached: cut off
    CONTEXT = "context"  # no room left in the context window: cut off
    LOW_CONFIDENCE = "low_confidence"  # the last window's confidence fell below StepRules.min_confidence: cut off
    BUDGET = "budget"  # the search reached its hard energy cap (a battery's share): cut off

    @property
    def ends_solution(self) -> bool:
        return self not in (StepEnd.DELIMITER, StepEnd.STEP_LIMIT)

    @property
    def finished(self) -> bool:
        """Ended by the model (end of generation, or the answer), not cut off by a cap."""
        return self in (StepEnd.EOG, StepEnd.ANSWER, StepEnd.STOP)


@dataclass(frozen=True)
class StepRules:
    """Step and solution boundaries.

    ``answer_pattern`` is a regular expression searched in the text of the current step after
    every token; include what terminates the answer (e.g. ``r"A:\\s*-?\\d+\\n"``) so that a
    number is not cut after its first digit. ``max_new_tokens`` caps one solution, counted from
    the node a run starts at.
    """

    delimiter: str = "\n\n"
    answer_pattern: str | None = None
    max_step_tokens: int = 256
    max_new_tokens: int = 1024
    stop: tuple[str, ...] = ()  # strings that end a solution where they appear (within a step)
    # cut a solution off once the mean log-probability of its last ``confidence_window`` generated
    # tokens (across steps) falls below this; None: never
    min_confidence: float | None = None
    confidence_window: int = CONFIDENCE_WINDOW

    def __post_init__(self) -> None:
        if not self.delimiter:
            raise SamplingConfigError("the step delimiter must be a non-empty string (default: a blank line)")
        if self.max_step_tokens < 1 or self.max_new_tokens < 1:
            raise SamplingConfigError(
                f"max_step_tokens and max_new_tokens must be >= 1, got {self.max_step_tokens} and {self.max_new_tokens}"
            )
        if self.min_confidence is not None and not (math.isfinite(self.min_confidence) and self.min_confidence <= 0):
            raise SamplingConfigError(f"min_confidence is a mean log-probability (a finite number <= 0), got "
                                      f"{self.min_confidence!r}")
        if self.confidence_window < 1:
            raise SamplingConfigError(f"confidence_window must be >= 1 token, got {self.confidence_window}")
        if self.answer_pattern is not None:
            try:
                re.compile(self.answer_pattern)
            except re.error as exc:
                raise SamplingConfigError(f"answer_pattern {self.answer_pattern!r} is not a valid regex: {exc}") from exc

    def overridden(self, delimiter: str | None = None, max_new_tokens: int | None = None) -> StepRules:
        """These rules with the delimiter and the solution cap replaced where given."""
        changes = {k: v for k, v in (("delimiter", delimiter), ("max_new_tokens", max_new_tokens)) if v is not None}
        return replace(self, **changes) if changes else self


class StepScanner:
    """Watches one branch's bytes (and, under a confidence floor, its log-probabilities) as tokens
    arrive and says when its step ends. ``recent_logprobs``: the path's generated tokens before this
    step, the last ones at least (the confidence window spans steps)."""

    def __init__(self, rules: StepRules, generated_before: int, recent_logprobs: Iterable[float] = ()) -> None:
        self._rules = rules
        self._delimiter = rules.delimiter.encode("utf-8")
        self._answer = re.compile(rules.answer_pattern) if rules.answer_pattern else None
        self._generated_before = generated_before
        self._stops = [s.encode("utf-8") for s in rules.stop if s]
        self._longest_stop = max((len(s) for s in self._stops), default=0)
        self._window: deque[float] | None = None
        if rules.min_confidence is not None:
            self._window = deque(recent_logprobs, maxlen=rules.confidence_window)
        self.data = bytearray()
        self.n_tokens = 0

    def push(self, piece: bytes, is_eog: bool, logprob: float = 0.0) -> StepEnd | None:
        """Add one generated token; returns why the step ended, or None to keep going."""
        start = max(0, len(self.data) - len(self._delimiter) + 1)
        self.data += piece
        self.n_tokens += 1
        if self._window is not None:
            self._window.append(logprob)
        if is_eog:
            return StepEnd.EOG
        if self._stops and piece:
            tail_from = max(0, len(self.data) - len(piece) - self._longest_stop + 1)
            if any(self.data.find(s, tail_from) >= 0 for s in self._stops):
                return StepEnd.STOP
        if self._answer is not None and piece and self._answer.search(self.text):
            return StepEnd.ANSWER
        if self._low_confidence():
            return StepEnd.LOW_CONFIDENCE
        if piece and self.data.find(self._delimiter, start) >= 0:
            return StepEnd.DELIMITER
        if self._generated_before + self.n_tokens >= self._rules.max_new_tokens:
            return StepEnd.LENGTH
        if self.n_tokens >= self._rules.max_step_tokens:
            return StepEnd.STEP_LIMIT
        return None

    def _low_confidence(self) -> bool:
        """A full window whose mean log-probability is under the floor (summed afresh per token:
        a few floats, next to a decode, and no running sum drifting with rounding)."""
        window, floor = self._window, self._rules.min_confidence
        return (window is not None and floor is not None and len(window) == window.maxlen
                and math.fsum(window) / len(window) < floor)

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")
