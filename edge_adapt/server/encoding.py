"""JSON out of the server: every number finite, whatever a strategy setting did to it.

JSON has no NaN or Infinity (``json.dumps`` writes them anyway, and clients choke), so a body
is checked at the boundary: a non-finite number becomes ``null`` and the server log says where
(a bug or an absurd setting upstream, never a 500 to the client).
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from fastapi.responses import JSONResponse

log = logging.getLogger(__name__)


def finite(value: Any, path: str = "") -> Any:
    """``value`` with every non-finite float replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        log.warning("a response held a non-finite number at %s (%r); sent as null", path or "(top)", value)
        return None
    if isinstance(value, dict):
        return {k: finite(v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def to_json(value: Any) -> str:
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except ValueError:  # a NaN or an infinity somewhere: rare, so checked only then
        return json.dumps(finite(value), allow_nan=False, separators=(",", ":"))


class FiniteJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return to_json(content).encode()
