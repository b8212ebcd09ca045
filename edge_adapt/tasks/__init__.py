"""Tasks: problems, prompts and graders (the default arithmetic task; more in later issues)."""

from edge_adapt.tasks.arithmetic import ArithmeticTask, Level
from edge_adapt.tasks.base import Problem, Task

__all__ = ["ArithmeticTask", "Level", "Problem", "Task"]
