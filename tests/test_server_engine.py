"""The server's engine in process, on tiny real models: what a refused job leaves behind."""

from __future__ import annotations

from dataclasses import replace

import pytest

pytest.importorskip("fastapi")

from edge_adapt import Budget, StackSettings, open_stack
from edge_adapt.errors import ContextOverflowError
from edge_adapt.search import BestOfN
from edge_adapt.server.engine import Engine, Job
from edge_adapt.server.errors import APIError
from edge_adapt.server.serving import _outcome
from edge_adapt.settings import ModelSettings, RunSettings

from model_factory import TINY_ARITHMETIC


def test_a_job_refused_for_its_prompt_holds_none_of_its_frames(step_gguf, llama_prm) -> None:
    # A server refusing a stream of prompts over the context grew until a full garbage
    # collection: the error kept the frames that held the prompt's tokens, and re-raising
    # it added the frame that held the future holding the error (a cycle). A refusal's message
    # says everything; its frames go with the job.
    settings = StackSettings(RunSettings(ModelSettings(step_gguf, llama_prm.export.path), max_steps=4), TINY_ARITHMETIC,
                             (BestOfN(n=2),))
    with open_stack(settings) as stack:
        engine = Engine(stack, max_waiting=1)
        try:
            problem = TINY_ARITHMETIC.problems("test", 1)[0]
            long = replace(problem, question=problem.question + "+1" * 5000)  # far over the tiny model's context
            future = engine.submit(Job(long, BestOfN(n=2), stack.searcher.settings, seed=0, budget=Budget()))
            error = future.exception(timeout=60)
            with pytest.raises(APIError) as refused:
                _outcome(future)
            assert refused.value.status == 400
            assert refused.value.code == "context_length_exceeded"
            assert isinstance(error, ContextOverflowError)
            assert error.__traceback__ is None
        finally:
            engine.close()
