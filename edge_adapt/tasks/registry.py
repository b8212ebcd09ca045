"""Tasks by name, for the command line."""

from __future__ import annotations

import os

from edge_adapt.errors import EdgeAdaptError
from edge_adapt.tasks.arithmetic import ArithmeticTask
from edge_adapt.tasks.base import Task

TASK_NAMES = ("default", "arithmetic", "gsm8k", "math")


def get_task(name: str, data: str | os.PathLike[str] | None = None) -> Task:
    """``default``/``arithmetic`` (generated, no file), ``gsm8k`` or ``math`` (a JSONL file you have)."""
    if name in ("default", "arithmetic"):
        if data is not None:
            raise EdgeAdaptError("the default task generates its problems; it takes no --data file")
        return ArithmeticTask()
    if name in ("gsm8k", "math"):
        if data is None:
            raise EdgeAdaptError(f"the {name} task reads your JSONL file: pass --data PATH")
        if name == "gsm8k":
            from edge_adapt.tasks.gsm8k import GSM8KTask

            return GSM8KTask(data)
        from edge_adapt.tasks.math_problems import MATHTask

        return MATHTask(data)
    raise EdgeAdaptError(f"unknown task {name!r}; choose one of {', '.join(TASK_NAMES)}")
