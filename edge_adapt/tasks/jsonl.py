"""Reading benchmark JSONL files the user has, with every bad line reported by its number."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from edge_adapt.errors import EdgeAdaptError

T = TypeVar("T")


def load_jsonl(
    path: str | os.PathLike[str], parse: Callable[[dict[str, Any], int], T], required: Sequence[str]
) -> list[T]:
    """Parse every line with ``parse(row, line_number)``; lines that are not JSON objects, lack
    a ``required`` field or fail ``parse`` (ValueError) are collected and reported together."""
    file = Path(path)
    if not file.is_file():
        raise EdgeAdaptError(f"{file}: no such file")
    items: list[T] = []
    problems: list[str] = []
    with open(file, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not a JSON object")
                missing = [k for k in required if not isinstance(row.get(k), str) or not row[k].strip()]
                if missing:
                    raise ValueError(f"missing or empty field(s) {', '.join(missing)}")
                items.append(parse(row, number))
            except (json.JSONDecodeError, ValueError) as exc:
                problems.append(f"line {number}: {exc}")
    if problems:
        shown = "; ".join(problems[:10]) + (f"; ... {len(problems) - 10} more" if len(problems) > 10 else "")
        raise EdgeAdaptError(f"{file}: {len(problems)} malformed line(s): {shown}")
    if not items:
        raise EdgeAdaptError(f"{file}: no problems in the file")
    return items
