"""The project's exception types.

Every error a user can cause is raised as one of these, at the boundary where the cause is
known, with a message that names the file or setting involved and says what to do. The CLI
turns them into a one-line message and a non-zero exit code instead of a traceback.
"""

from __future__ import annotations


class EdgeAdaptError(Exception):
    """Base class: an error the user can act on (bad input, missing file, impossible setting)."""


class ModelLoadError(EdgeAdaptError):
    """A model file is missing, corrupt, truncated, or not a format the runtime can read."""


class ContextOverflowError(EdgeAdaptError):
    """A prompt (or a prompt plus the text forced after it) does not fit the context window."""


class BranchCapacityError(EdgeAdaptError):
    """More live branches were requested than the context was created to hold."""


class SamplingConfigError(EdgeAdaptError):
    """Sampling or step settings are out of range (negative temperature, empty delimiter...)."""


class UnsupportedModelError(EdgeAdaptError):
    """A Hugging Face checkpoint uses an architecture or feature the exporter does not handle."""


class TokenizerError(EdgeAdaptError):
    """A tokenizer is missing, of an unsupported kind, or does not round-trip after export."""


class VerificationError(EdgeAdaptError):
    """An exported file does not reproduce its source model within the stated tolerance."""


class QuantizationError(EdgeAdaptError):
    """Quantization was asked for an unknown type, or llama.cpp's quantizer failed."""


class MissingDependencyError(EdgeAdaptError):
    """An optional dependency (an extra such as ``[export]`` or ``[cpu]``) is not installed."""


class MeterError(EdgeAdaptError):
    """A power or energy meter is missing, unreadable, or gave a value that makes no sense."""


class BudgetError(EdgeAdaptError):
    """A compute budget cannot be met at all (too small for even one greedy answer), or is malformed."""


class TextError(EdgeAdaptError):
    """Text that cannot reach a model as given: a NUL, a lone surrogate."""
