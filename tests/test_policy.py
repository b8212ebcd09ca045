"""The energy-aware policy steering real searches on tiny real models: budgets are never
exceeded, tight budgets lower IAS's target instead of failing, impossible ones are clear errors."""

from __future__ import annotations

import pytest

from edge_adapt.budget.guard import Budget
from edge_adapt.budget.online_costs import CostEstimates
from edge_adapt.budget.policy import EnergyPolicy
from edge_adapt.energy import CostModel, EstimateMeter
from edge_adapt.errors import BudgetError
from edge_adapt.search import BeamSearch, BestOfN, IASBeamSearch, IASBestOfN, Searcher

from model_factory import TINY_ARITHMETIC

# No idle term: the estimate then depends on token counts only, not on how busy this shared
# machine happens to be (wall-time effects are measured by benchmarks/bench_energy.py).
COST = CostModel("test", idle_w=0.0, j_per_prompt_token=0.01, j_per_generated_token=0.1, j_per_prm_token=0.001)


def with_policy(searcher: Searcher, budget: Budget) -> Searcher:
    meter = EstimateMeter(COST, searcher.usage)
    policy = EnergyPolicy(meter, budget, searcher.usage)
    guarded = Searcher(searcher.generator, searcher.prm, searcher.task, searcher.settings, policy=policy)
    for problem in TINY_ARITHMETIC.problems("train", 3):  # learn this device's costs: a settled estimate
        guarded.run(BestOfN(n=4), problem, budget=Budget())
    return guarded


@pytest.fixture(scope="module")
def problems():
    return TINY_ARITHMETIC.problems("test", 2)


def test_energy_budget_is_never_exceeded_and_caps_are_recorded(searcher, problems) -> None:
    guarded = with_policy(searcher, Budget(energy_j=15.0))
    capped = 0
    for strategy in (BestOfN(n=32), IASBestOfN(n_max=32, confidence=0.999), BeamSearch(n=16, width=4),
                     IASBeamSearch(k_max=4, m_max=4)):
        for problem in problems[:3]:
            result = guarded.run(strategy, problem, seed=3)
            assert result.cost.energy_estimated
            assert result.cost.energy_source == "estimate:test"
            assert 0 < result.cost.joules <= 15.0, (strategy.name, result.cost)
            capped += any(d.kind == "budget_cap" and d.detail["limit"] == "energy" for d in result.decisions)
    assert capped >= 3  # the budget really bound: 32 samples cost far more than 15 J here


def test_token_budget_lowers_ias_confidence_instead_of_failing(searcher, problems) -> None:
    guarded = with_policy(searcher, Budget(tokens=120))
    result = guarded.run(IASBestOfN(n_max=32, confidence=0.9999), problems[0])
    assert result.cost.generated_tokens <= 120
    lowered = [d.detail for d in result.decisions if d.kind == "lowered_confidence"]
    assert lowered
    assert lowered[0]["to"] < 0.9999
    assert lowered[0]["limit"] == "tokens"
    # it still answered: the samples the lowered target affords, and one of them picked
    assert 1 <= result.cost.samples == lowered[0]["n"]
    assert result.chosen is not None


def test_latency_budget_caps_the_samples(searcher, problems) -> None:
    # Whether a latency budget is *met* is timing, checked by benchmarks/bench_energy.py on the
    # default models; here: the policy turns it into fewer samples and says so.
    guarded = with_policy(searcher, Budget())
    for problem in problems[:2]:
        # about four answers at this machine's speed as the policy estimates it now (the estimate
        # learns from every sample, so a budget fixed once could become infeasible on a loaded
        # machine); one answer is a sample plus the scoring after it
        _, _, seconds_per_sample = guarded.policy.estimates.unit_cost("sample")
        result = guarded.run(BestOfN(n=48), problem,
                             budget=Budget(latency_s=4 * seconds_per_sample + guarded.policy.tail_seconds))
        caps = [d.detail for d in result.decisions if d.kind == "budget_cap"]
        assert caps
        assert caps[0]["limit"] == "latency"
        assert caps[0]["granted"] < 48
        assert 1 <= result.cost.samples < 48


def test_a_feasible_question_always_gets_its_first_sample(searcher, problems) -> None:
    # A budget just above one answer's estimated cost: the safety margin alone would grant
    # nothing, and a question that passed the feasibility check must still get an answer.
    guarded = with_policy(searcher, Budget())
    _, joules_per_sample, _ = guarded.policy.estimates.unit_cost("sample")
    one_answer = joules_per_sample + guarded.policy.tail_joules
    budget = Budget(energy_j=1.05 * one_answer)
    assert budget.safety * one_answer > budget.energy_j
    result = guarded.run(BestOfN(n=8), problems[0], budget=budget)
    caps = [d.detail for d in result.decisions if d.kind == "budget_cap"]
    assert caps[0]["granted"] == 1
    assert caps[0]["floor"] == "first unit of a feasible question"
    assert result.cost.samples == 1
    assert result.candidates
    # and later rounds get no such floor: the budget is spent
    assert all(c["granted"] == 0 for c in caps[1:])


def test_a_budget_without_a_policy_is_refused(searcher, problems) -> None:
    assert searcher.policy is None
    with pytest.raises(BudgetError, match="needs a policy"):
        searcher.run(BestOfN(n=2), problems[0], budget=Budget(tokens=10))


def test_impossible_budget_is_a_clear_error(searcher, problems) -> None:
    guarded = with_policy(searcher, Budget(energy_j=0.01))
    with pytest.raises(BudgetError, match="cannot buy one answer.*raise the budget"):
        guarded.run(BestOfN(n=4), problems[0])
    # and nothing is left allocated after the refusal
    assert searcher.generator.kv_cells_used == 0


def test_round_costs_split_into_a_fixed_part_and_a_part_per_token() -> None:
    # rounds that each pay 0.2 s of fixed work plus 1 ms per token: a per-token average would
    # price a 20-token round at 11 ms/token; the affine fit recovers both parts
    est = CostEstimates()
    for tokens in (20, 640, 40, 320, 20, 1280):
        est.update("sample", max(1, tokens // 20), tokens, joules=2.0 + 0.01 * tokens, seconds=0.2 + 0.001 * tokens)
    fixed_s, per_token_s = est.seconds.coefficients()
    assert fixed_s == pytest.approx(0.2, rel=1e-6)
    assert per_token_s == pytest.approx(0.001, rel=1e-6)
    tokens, joules, seconds = est.round_cost("sample", 4)
    assert tokens == 80
    assert joules == pytest.approx(2.0 + 0.8)
    assert seconds == pytest.approx(0.2 + 0.08)
    # one round size only: the cost cannot be split, so it is all per token
    single = CostEstimates()
    single.update("sample", 1, 50, joules=1.0, seconds=0.1)
    assert single.seconds.coefficients() == (0.0, pytest.approx(0.002))


def test_a_noisy_slope_cannot_price_tokens_above_their_average_cost() -> None:
    est = CostEstimates()
    for tokens, seconds in ((300, 0.05), (305, 0.30), (310, 0.05), (302, 0.31)):  # similar sizes, noisy times
        est.update("sample", 1, tokens, joules=1.0, seconds=seconds)
    fixed_s, per_token_s = est.seconds.coefficients()
    average = est.seconds.average()
    assert 0.25 * average <= per_token_s <= average
    assert fixed_s >= 0


class Clock:
    """A monotonic clock the test moves by hand (the estimates' staleness is in seconds)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fresh_policy(searcher: Searcher, clock: Clock) -> Searcher:
    meter = EstimateMeter(COST, searcher.usage)
    policy = EnergyPolicy(meter, Budget(), searcher.usage)
    policy.estimates = CostEstimates(clock=clock)
    return Searcher(searcher.generator, searcher.prm, searcher.task, searcher.settings, policy=policy)


def test_a_budget_refused_after_a_slow_sample_is_accepted_again_once_the_estimate_recovers(searcher, problems) -> None:
    clock = Clock()
    guarded = fresh_policy(searcher, clock)
    # what one real sample costs here, learnt by a question without a budget
    guarded.run(BestOfN(n=1), problems[0], seed=1)
    _, one_sample_j, _ = guarded.policy.estimates.cheapest_unit("sample")
    budget = Budget(energy_j=3 * one_sample_j + guarded.policy.tail_joules)
    # a slow moment (a cold start, another process on every core): the same sample at 100x the joules,
    # three times in a row, and now the only rounds the estimate remembers
    guarded.policy.estimates.rounds.clear()
    for _ in range(3):
        guarded.policy.estimates.update("sample", 1, 30, joules=100 * one_sample_j, seconds=1.0)
    with pytest.raises(BudgetError, match=r"cannot buy one answer.*3 recent round\(s\).*probed again"):
        guarded.run(BestOfN(n=4), problems[0], budget=budget)
    # a refusal draws nothing, so the estimate cannot learn from it; once it is stale the next
    # request is a probe of one sample ...
    clock.now += 61
    probe = guarded.run(BestOfN(n=4), problems[0], budget=budget, seed=2)
    caps = [d.detail for d in probe.decisions if d.kind == "budget_cap"]
    assert caps[0]["limit"] == "probe"
    assert caps[0]["granted"] == 1
    assert "not settled" in caps[0]["floor"]
    assert probe.chosen is not None
    assert probe.cost.joules <= budget.energy_j
    # ... whose cheap sample the estimate believes: the same budget is accepted and searches again
    again = guarded.run(BestOfN(n=4), problems[0], budget=budget, seed=3)
    assert not any(d.detail["limit"] == "probe" for d in again.decisions if d.kind == "budget_cap")
    assert again.cost.samples >= 1
    assert again.cost.joules <= budget.energy_j


def test_one_slow_round_among_many_does_not_set_the_price() -> None:
    est = CostEstimates()
    for _ in range(6):
        est.update("sample", 1, 40, joules=0.5, seconds=0.05)
    est.update("sample", 1, 40, joules=30.0, seconds=3.0)  # a slow moment, the newest round
    assert est.joules.kept() == [0, 1, 2, 3, 4, 5]
    assert est.unit_cost("sample")[1] == pytest.approx(0.5)
    assert est.settledness().discounted == 1
    # a device that stays slow is believed: once slow rounds are most of the recent ones they set the price
    for _ in range(6):
        est.update("sample", 1, 40, joules=30.0, seconds=3.0)
    assert est.unit_cost("sample")[1] > 20



def test_a_hard_cap_ends_the_samples_in_flight_where_its_energy_runs_out(searcher, problems) -> None:
    # Joules from this process's CPU time, read at every decode. The estimate is told a sample
    # costs a fiftieth of what one really does, so the guard grants a sample a third of its cost.
    cost = CostModel("test", idle_w=0.0, w_per_busy_core=10.0, j_per_prompt_token=0.0, j_per_generated_token=0.0,
                     j_per_prm_token=0.0)

    def guarded() -> Searcher:
        policy = EnergyPolicy(EstimateMeter(cost, searcher.usage), Budget(), searcher.usage)
        return Searcher(searcher.generator, searcher.prm, searcher.task, searcher.settings, policy=policy)

    one = BestOfN(n=1, select="majority")
    whole = guarded().run(one, problems[0], seed=1, budget=Budget())
    assert whole.candidates[0].end != "budget"
    cap = whole.cost.joules / 3
    per_token = whole.cost.joules / whole.cost.generated_tokens
    for hard in (True, False):
        capped = guarded()
        for _ in range(3):
            capped.policy.estimates.update("sample", 1, 2, whole.cost.joules / 50, whole.cost.wall_s / 50)
        result = capped.run(one, problems[0], seed=1,
                            budget=Budget(energy_j=cap, first_unit_floor=not hard))
        assert result.cost.samples == 1
        if hard:
            assert result.candidates[0].end == "budget"
            assert result.cost.generated_tokens < whole.cost.generated_tokens
            assert result.cost.joules <= cap + 3 * per_token  # stopped within a decode or two of the cap
        else:  # a soft budget lets its first sample finish
            assert result.candidates[0].end == whole.candidates[0].end
            assert result.cost.generated_tokens == whole.cost.generated_tokens
