"""Every search strategy end to end on tiny real models: budgets, reproducibility, accounting."""

from __future__ import annotations

import pytest

from edge_adapt.search import (
    BeamSearch,
    BestOfN,
    EarlyStop,
    IASBeamSearch,
    IASBestOfN,
    Searcher,
    n_samples,
)
from edge_adapt.search.spec import parse_spec

from model_factory import TINY_ARITHMETIC


@pytest.fixture(scope="module")
def problems():
    return TINY_ARITHMETIC.problems("test", 2)


def assert_clean(searcher: Searcher) -> None:
    """Nothing left behind: every node released, every KV cell freed."""
    assert searcher.generator.kv_cells_used == 0
    assert searcher.generator.free_sequences == searcher.generator.ctx.n_seq_max


@pytest.mark.parametrize("select", ["prm", "weighted", "majority"])
def test_best_of_n_accounting(searcher, problems, select: str) -> None:
    gen0, prm0 = searcher.generator.usage, searcher.prm.stats
    result = searcher.run(BestOfN(n=6, select=select), problems[0], seed=1)
    assert result.cost.samples == len(result.candidates) == 6
    assert result.cost.generated_tokens == sum(c.n_tokens for c in result.candidates)
    assert result.cost.generated_tokens == (searcher.generator.usage - gen0).generated_tokens
    # all candidates in one call; a plain vote reads no PRM score, so it makes none
    assert result.cost.prm_calls == (searcher.prm.stats - prm0).calls == (0 if select == "majority" else 1)
    assert result.cost.prompt_tokens == len(searcher.generator.vocab.tokenize(TINY_ARITHMETIC.prompt(problems[0])))
    assert result.chosen in result.candidates
    assert result.answer == result.chosen.answer
    if select == "prm":
        assert result.chosen.final.median == max(c.final.median for c in result.candidates)
    if select == "majority":
        assert all(c.final is None for c in result.candidates)
        assert result.cost.prm_tokens == 0
    assert [d.kind for d in result.decisions] == ["n_samples", "select"]
    assert_clean(searcher)


def test_a_seed_reproduces_every_strategy(searcher, problems) -> None:
    for strategy in (BestOfN(n=4), IASBestOfN(n_max=6), BeamSearch(n=4, width=2), IASBeamSearch(k_max=2, m_max=2)):
        a, b = (searcher.run(strategy, problems[1], seed=5) for _ in range(2))
        assert [c.steps for c in a.candidates] == [c.steps for c in b.candidates], strategy.name
        assert a.answer == b.answer
        assert a.decisions == b.decisions
    runs = {tuple(c.steps for c in searcher.run(BestOfN(n=4), problems[1], seed=s).candidates) for s in range(4)}
    assert len(runs) > 1


def test_ias_best_of_n_sizes_n_by_the_question_score(searcher, problems) -> None:
    for problem in problems[:3]:
        q = searcher.prm.score_question(problem.question)
        result = searcher.run(IASBestOfN(n_max=5, confidence=0.9), problem)
        decision = result.decisions[0].detail
        assert decision["n"] == min(n_samples(q.low, 0.9), 5) == result.cost.samples
        assert decision["p_low"] == pytest.approx(q.low)
        assert decision["capped_at_n_max"] == (n_samples(q.low, 0.9) > 5)
        assert result.cost.prm_calls == 2  # the question once, the candidates once
    assert_clean(searcher)


def test_early_stopping_stops_once_answers_agree(searcher, problems) -> None:
    # the leading answer is at least as likely the majority as not (confidence >= 0.5, even with no
    # answer yet): a threshold of 0.5 must stop after the first round, every time
    for problem in problems[:3]:
        result = searcher.run(BestOfN(n=12, select="majority", early_stop=EarlyStop(threshold=0.5, round_size=3)), problem)
        stops = [d for d in result.decisions if d.kind == "early_stop"]
        assert len(stops) == 1
        assert result.cost.samples == stops[0].detail["after"] == 3
        assert stops[0].detail["confidence"] >= 0.5
    # a stricter threshold stops later or not at all, never before its own criterion holds
    strict = searcher.run(BestOfN(n=12, select="majority", early_stop=EarlyStop(threshold=0.8, round_size=3)), problems[0])
    stops = [d for d in strict.decisions if d.kind == "early_stop"]
    assert strict.cost.samples == (stops[0].detail["after"] if stops else 12)
    assert all(d.detail["confidence"] >= 0.8 for d in stops)
    never = searcher.run(BestOfN(n=6, early_stop=EarlyStop(threshold=1.0, round_size=2)), problems[0])
    assert never.cost.samples == 6
    assert not [d for d in never.decisions if d.kind == "early_stop"]


@pytest.mark.parametrize("strategy",
                         [BeamSearch(n=8, width=2), BeamSearch(n=6, width=3, score_every=2), IASBeamSearch(k_max=3, m_max=2)])
def test_beam_search_respects_its_budget(searcher, problems, strategy) -> None:
    budget = strategy.n if isinstance(strategy, BeamSearch) else strategy.k_max * strategy.m_max
    for problem in problems[:4]:
        result = searcher.run(strategy, problem, seed=2)
        assert 1 <= result.cost.samples <= budget
        allocations = [d.detail for d in result.decisions if d.kind == "beam_allocation"]
        for a in allocations:
            if isinstance(strategy, BeamSearch):
                assert a["kept"] <= -(-budget // strategy.width)
            else:
                assert 1 <= a["K"] <= strategy.k_max
                assert 1 <= a["M"] <= strategy.m_max
        # one PRM call per scoring step (all live branches batched), one for the finished ones
        scoring_steps = len(allocations)
        ias_question = 1 if isinstance(strategy, IASBeamSearch) else 0
        assert result.cost.prm_calls == scoring_steps + 1 + ias_question
        assert_clean(searcher)


def test_identical_solutions_are_scored_once(searcher, problems) -> None:
    result = searcher.run(BestOfN(n=8), problems[0], seed=2)
    distinct = {c.steps for c in result.candidates}
    assert result.cost.prm_prefixes == len(distinct) <= 8
    by_text = {}
    for c in result.candidates:  # equal texts, equal scores
        assert by_text.setdefault(c.steps, c.final) == c.final


def _value_decision(result) -> dict:
    (decision,) = [d.detail for d in result.decisions if d.kind == "value_sampling"]
    return decision


def test_adaptive_search_with_the_fallback_model(searcher, problems) -> None:
    """The tiny PRM folder holds no selector_model.json: adaptive search runs on the documented
    fallback (the question's quantiles as the prior, votes, the model's own lookahead)."""
    for problem in problems[:2]:
        result = searcher.run(parse_spec("adaptive:price=0,n_max=5"), problem, seed=3)
        d = _value_decision(result)
        assert d["calibrated_model"] is False
        assert d["picked_by"] == "posterior"
        assert 1 <= result.cost.samples == len(result.candidates) == sum(d["rounds"]) <= 5
        assert d["stop"] in ("confident", "not_worth", "n_max")
        assert result.chosen in result.candidates
        assert result.answer == result.chosen.answer
        again = searcher.run(parse_spec("adaptive:price=0,n_max=5"), problem, seed=3)
        assert [c.steps for c in again.candidates] == [c.steps for c in result.candidates]
        assert again.decisions == result.decisions
        assert_clean(searcher)
    # a price no gain can pay stops after the first sample
    cheap = searcher.run(parse_spec("adaptive:price=1000000"), problems[0], seed=3)
    assert cheap.cost.samples == 1
    assert _value_decision(cheap)["stop"] in ("not_worth", "confident")


def test_adaptive_search_with_a_calibrated_model(searcher, problems) -> None:
    """Fit the answer model on the tiny generator's own samples of calibration questions, then
    search with it: decisions come from its value table and the pick from its best selector."""
    from edge_adapt.search.calibration.selector import CalibrationQuestion, ScoredSolution, fit_answer_model
    from edge_adapt.search.voting import pick
    from edge_adapt.tasks.grading import answers_equal

    questions = []
    for i, problem in enumerate(TINY_ARITHMETIC.problems("calibration", 8)):
        r = searcher.run(BestOfN(n=6), problem, seed=100 + i)
        q = searcher.prm.score_question(problem.question)
        questions.append(CalibrationQuestion(q.median, tuple(
            ScoredSolution(c.answer, TINY_ARITHMETIC.is_correct(c.text, problem), c.final.median) for c in r.candidates)))
    model = fit_answer_model(questions, answers_equal, min_per_bin=8)
    assert model.calibrated
    assert model.values
    assert model.max_measured == 6
    assert model.selector in ("prm", "weighted", "majority")
    calibrated = Searcher(searcher.generator, searcher.prm, TINY_ARITHMETIC, searcher.settings, answer_model=model)
    for price in (0.0, 50.0):
        result = calibrated.run(parse_spec(f"adaptive:price={price:g},n_max=12"), problems[1], seed=4)
        d = _value_decision(result)
        assert d["calibrated_model"] is True
        assert d["picked_by"] == model.selector
        assert 1 <= result.cost.samples <= 6  # the replays measured no more than 6 samples of a question
        # the answer is the calibrated picker's, by the same rule the replays measured
        index = pick(model.selector, [c.answer for c in result.candidates], [c.final.median for c in result.candidates],
                     answers_equal)
        assert result.chosen is result.candidates[index]
        assert_clean(searcher)
