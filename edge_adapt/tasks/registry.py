"""Tasks by name, for the command line."""

from __future__ import annotations

import os

from edge_adapt.errors import EdgeAdaptError
from edge_adapt.tasks.arithmetic import ArithmeticTask
from edge_adapt.tasks.base import Task

TASK_NAMES = ("default", "arithmetic", "gsm8k", "math", "chat")


def get_task(name: str, data: str | os.PathLike[str] | None = None, prompt_template: str | None = None) -> Task:
    """``default``/``arithmetic`` (generated, no file), ``chat`` (people's turns as typed),
    ``gsm8k`` or ``math`` (a JSONL file you have,
    prompted with its default template or ``prompt_template``, which holds ``{question}``; without
    a file, questions come one at a time, as ``solve`` gives them)."""
    if name in ("default", "arithmetic"):
        if data is not None:
            raise EdgeAdaptError("the default task generates its problems; it takes no --data file")
        if prompt_template is not None:
            raise EdgeAdaptError("the default task's prompt is the notation its models were trained on; a prompt "
                                 "template is for --task gsm8k/math (write your questions to a JSONL file for another prompt)")
        return ArithmeticTask()
    if name in ("gsm8k", "math"):
        # without a file the task still prompts, reads and grades one question (solve, serve)
        if name == "gsm8k":
            from edge_adapt.tasks.gsm8k import GSM8KTask

            return GSM8KTask(data, prompt_template)
        from edge_adapt.tasks.math_problems import MATHTask

        return MATHTask(data, prompt_template)
    if name == "chat":
        if data is not None or prompt_template is not None:
            raise EdgeAdaptError("the chat task answers turns as they are typed: it takes no --data file or prompt template")
        from edge_adapt.tasks.chat import ChatTask

        return ChatTask()
    raise EdgeAdaptError(f"unknown task {name!r}; choose one of {', '.join(TASK_NAMES)}")
