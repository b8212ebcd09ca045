"""Tasks: problems, prompts and graders (the default arithmetic task, GSM8K- and MATH-style files)."""

from edge_adapt.tasks.arithmetic import ArithmeticTask, Level
from edge_adapt.tasks.base import Problem, Task
from edge_adapt.tasks.chat import ChatTask
from edge_adapt.tasks.grading import answers_equal, extract_answer
from edge_adapt.tasks.registry import TASK_NAMES, get_task

__all__ = ["TASK_NAMES", "ArithmeticTask", "ChatTask", "Level", "Problem", "Task", "answers_equal", "extract_answer", "get_task"]
