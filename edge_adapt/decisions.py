"""Decisions: what search and the budget policy chose, and why, as recorded in every result.

Below both layers (search records its own, the policy's guard records budget caps and pacing
into the same ordered list), so neither imports the other for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Decision:
    """A choice the search (or the budget policy) made, and why."""

    kind: str  # e.g. "n_samples", "rank", "beam_allocation", "early_stop", "budget_cap"
    detail: dict[str, Any] = field(default_factory=dict)
