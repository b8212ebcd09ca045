"""The composition root builds a whole stack (tiny real generator and PRM, the estimate meter)
with every part handed to the searcher at construction, joules counted without a budget."""

from __future__ import annotations

import pytest

from edge_adapt import Budget, BudgetError, SamplingParams, StackSettings, open_stack
from edge_adapt.search import BestOfN, ValueSampling, kv_cells_needed, sequences_needed
from edge_adapt.settings import MeterSettings, ModelSettings, RunSettings

from model_factory import TINY_ARITHMETIC


def test_a_stack_is_sized_for_its_strategies_and_measures_joules_without_a_budget(step_gguf, llama_prm) -> None:
    strategies = (BestOfN(n=6), ValueSampling())
    run = RunSettings(ModelSettings(step_gguf, llama_prm.export.path), sampling=SamplingParams(temperature=1.0), max_steps=8,
                      meter=MeterSettings("estimate"))
    settings = StackSettings(run, TINY_ARITHMETIC, strategies)
    with open_stack(settings) as stack:
        assert stack.generator.ctx.n_seq_max == sequences_needed(BestOfN(n=6))
        assert stack.generator.n_ctx >= max(kv_cells_needed(s, TINY_ARITHMETIC.step_rules) for s in strategies)
        assert stack.searcher.policy is stack.policy
        assert stack.policy.budget.unlimited
        problem = TINY_ARITHMETIC.problems("test", 1)[0]
        result = stack.searcher.run(BestOfN(n=6), problem, seed=1)
        assert result.cost.samples == 6
        assert result.cost.joules > 0
        assert result.cost.energy_source in ("estimate:cpu-time", "estimate:cpu-time+busy")
        # the meter reads the work done from the generator and the PRM, not from the searcher
        before = stack.meter.read().joules
        stack.searcher.run(BestOfN(n=2), problem, seed=2)
        assert stack.meter.read().joules > before


def test_an_impossible_budget_is_refused_by_the_stack(step_gguf, llama_prm) -> None:
    run = RunSettings(ModelSettings(step_gguf, llama_prm.export.path), max_steps=8, meter=MeterSettings("estimate"),
                      budget=Budget(energy_j=1e-6))
    settings = StackSettings(run, TINY_ARITHMETIC, (BestOfN(n=4),))
    with open_stack(settings) as stack:
        problem = TINY_ARITHMETIC.problems("test", 1)[0]
        stack.searcher.warm_up(problem)
        with pytest.raises(BudgetError, match="cannot buy one answer"):
            stack.searcher.run(BestOfN(n=4), problem)
