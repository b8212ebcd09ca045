"""Value-aware sampling's maths against hand-computed values: the wrong answers' restaurant
process, the answer posterior, the exact lookahead, the round rule, and the offline fit (prior,
concentration, gain curves). Pure functions: no models."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from edge_adapt.budget.allocation import PluralityVote
from edge_adapt.errors import ModelLoadError, SamplingConfigError
from edge_adapt.search.calibration.answer_model import (
    GRID_SIZE,
    MODEL_FILE,
    AnswerModel,
    GainCurve,
    QuestionModel,
    ScoreEvidence,
    p_grid,
)
from edge_adapt.search.calibration.selector import (
    CalibrationQuestion,
    ScoredSolution,
    fit_answer_model,
    fit_concentration,
    gain_curve,
)
from edge_adapt.search.posterior import Evidence, Group, Moments, _log_crp, expected_accuracy, outcomes, posterior
from edge_adapt.search.spec import format_spec, parse_spec
from edge_adapt.search.strategies.adaptive import ValueSampling, next_round
from edge_adapt.tasks.grading import answers_equal

P_INDEX = 20  # grid point 0.5125
P = float(p_grid()[P_INDEX])


def point_prior(index: int = P_INDEX) -> np.ndarray:
    prior = np.zeros(GRID_SIZE)
    prior[index] = 1.0
    return prior


def model(alpha: float = 1.0, **kw) -> QuestionModel:
    return QuestionModel(point_prior(), alpha, **kw)


def test_restaurant_process_matches_the_sequential_seating() -> None:
    # sizes [2, 1], alpha 1: new (1), join the first (1/2), new (1/3) -> 1/6
    assert math.exp(_log_crp([2, 1], 1.0)) == pytest.approx(1 / 6)
    # alpha 3: new, new (3/4), join one (1/5) ... sizes [2, 1]: 1 * 3/4 * ... use the closed form
    assert math.exp(_log_crp([2, 1], 3.0)) == pytest.approx(3 * 3 * 1 / (3 * 4 * 5))
    assert _log_crp([], 2.0) == 0.0


def test_moments_are_the_prior_expectations() -> None:
    prior = np.random.default_rng(0).random(GRID_SIZE)
    m = Moments(prior, 6)
    grid = p_grid()
    expected = (prior / prior.sum() * grid**2 * (1 - grid) ** 3).sum()
    assert math.exp(m.log(2, 3)) == pytest.approx(expected)


def test_one_sample_is_right_with_the_prior_probability() -> None:
    post = posterior(Evidence((Group(1),)), Moments(point_prior(), 5), 1.0)
    assert post.right[0] == pytest.approx(P)
    assert post.none == pytest.approx(1 - P)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 4.0])
def test_agreement_and_disagreement(alpha: float) -> None:
    m = Moments(point_prior(), 5)
    agree = posterior(Evidence((Group(2),)), m, alpha)
    assert agree.right[0] == pytest.approx(P**2 / (P**2 + (1 - P) ** 2 / (1 + alpha)))
    split = posterior(Evidence((Group(1), Group(1))), m, alpha)
    each = P * (1 - P)
    assert split.right[0] == pytest.approx(each / (2 * each + (1 - P) ** 2 * alpha / (1 + alpha)))
    assert split.right[0] == pytest.approx(split.right[1])


def test_score_evidence_multiplies_the_odds() -> None:
    m = Moments(point_prior(), 5)
    post = posterior(Evidence((Group(1, math.log(3.0)),)), m, 1.0)
    odds = post.right[0] / post.none
    assert odds == pytest.approx(3.0 * P / (1 - P))


def test_a_groups_scores_count_once() -> None:
    """Agreeing samples are mostly one solution scored alike: their evidence is the mean, so three
    low scores weigh like one, and the votes still count."""
    m = Moments(point_prior(), 8)
    one = posterior(Evidence((Group(1, -2.0),)), m, 1.0)
    three = posterior(Evidence((Group(3, -6.0),)), m, 1.0)
    assert one.right[0] / one.none == pytest.approx(math.exp(-2.0) * P / (1 - P))
    assert three.right[0] / three.none == pytest.approx(math.exp(-2.0) * P**3 / ((1 - P) ** 3 / 3))  # CRP([3]) at alpha 1: 2/6


def test_scores_are_interpolated_between_bin_centers() -> None:
    mdl = model(score_edges=(0.5,), score=ScoreEvidence((0.25, 0.75), (0.75, 0.25)), score_centers=(0.2, 0.8))
    assert mdl.evidence_of(0.5) == pytest.approx(0.0)
    assert mdl.evidence_of(0.0) == pytest.approx(math.log(1 / 3))
    assert mdl.evidence_of(1.0) == pytest.approx(math.log(3))
    assert mdl.evidence_of(None) == 0.0


def test_outcomes_are_a_distribution() -> None:
    mdl = model(score_edges=(0.5,), score=ScoreEvidence((0.2, 0.8), (0.7, 0.3)))
    ev = Evidence((Group(2, 0.3), Group(1, -0.5)), unanswered=1)
    m = Moments(np.linspace(1, 2, GRID_SIZE), 8)
    outs = outcomes(ev, posterior(ev, m, mdl.concentration), mdl)
    assert sum(p for p, _ in outs) == pytest.approx(1.0)
    assert len(outs) == 3 * 2  # join either group or a new one, times two score bins


def test_a_second_vote_only_ties() -> None:
    """Without score evidence and with p known, a second sample cannot change the pick's accuracy:
    agreeing it confirms what was picked, disagreeing it makes a tie."""
    mdl, m = model(2.0), Moments(point_prior(), 6)
    ev = Evidence((Group(1),))
    assert expected_accuracy(ev, m, mdl, 1) == pytest.approx(P)
    assert expected_accuracy(ev, m, mdl, 2) > P + 0.05


def test_three_votes_with_distinct_wrong_answers_are_a_plurality_vote() -> None:
    mdl, m = model(1e9), Moments(point_prior(), 6)
    assert expected_accuracy(Evidence(), m, mdl, 3) == pytest.approx(PluralityVote().accuracy(P, 3), abs=1e-6)


def test_round_rule() -> None:
    m = Moments(point_prior(), 20)
    mdl = model(2.0)
    st = ValueSampling(price=0.0, n_max=4)
    assert next_round(Evidence(), m, mdl, st, 0.0).draw == 1
    d = next_round(Evidence((Group(1),)), m, mdl, st, 50.0)
    assert d.draw == 2
    assert d.reason == "gain"
    assert d.gains[0] == pytest.approx(0.0, abs=1e-12)
    # a price above what two samples can earn stops the search
    expensive = ValueSampling(price=1000.0, n_max=4)
    stop = next_round(Evidence((Group(1),)), m, mdl, expensive, 50.0)
    assert (stop.draw, stop.reason) == (0, "not_worth")
    assert next_round(Evidence((Group(4),)), m, mdl, ValueSampling(price=0.0, n_max=4), 50.0).reason == "n_max"
    assert next_round(Evidence((Group(3),)), Moments(point_prior(39), 20), mdl, st, 50.0).reason == "confident"


@pytest.mark.parametrize("bad", ["adaptive:price=-1", "adaptive:n_max=0", "adaptive:stop_at=0.2", "adaptive:lookahead=5",
                                 "adaptive:use_prm=maybe"])
def test_bad_settings_are_refused(bad: str) -> None:
    with pytest.raises(SamplingConfigError):
        parse_spec(bad)


def test_spec_round_trip() -> None:
    st = parse_spec("adaptive:price=2.5,n_max=8,use_prm=false")
    assert isinstance(st, ValueSampling)
    assert st.price == 2.5
    assert st.n_max == 8
    assert st.use_prm is False
    assert st.name == "adaptive:price=2.5,n_max=8,use_prm=false"
    assert format_spec(parse_spec(st.name)) == st.name
    assert parse_spec("adaptive").name == "adaptive:price=8"


def _sol(answer: str, correct: bool, median: float | None = None) -> ScoredSolution:
    return ScoredSolution(answer, correct, median)


def test_gain_curve_averages_subsets_and_is_monotone() -> None:
    q = CalibrationQuestion(0.5, (_sol("1", False), _sol("2", True), _sol("2", True)))
    # n=1: 2/3; n=2: (w,r) tie -> earliest (wrong), (w,r) -> wrong, (r,r) -> right: 1/3; n=3: right.
    # pool-adjacent-violators: [2/3, 1/3] -> [1/2, 1/2]
    curve = gain_curve([q], "majority", answers_equal)
    assert curve.accuracy == pytest.approx((0.5, 0.5, 1.0), abs=1e-4)
    prm = gain_curve([CalibrationQuestion(0.5, (_sol("1", False, 0.9), _sol("2", True, 0.2)))], "prm", answers_equal)
    assert prm.accuracy == pytest.approx((0.25, 0.25))  # [0.5, 0.0] pooled
    assert curve.at(0) == 0.0
    assert curve.at(10) == curve.accuracy[-1]


def test_concentration_is_recovered_from_simulated_wrong_answers() -> None:
    rng = random.Random(0)
    questions = []
    for _ in range(400):
        groups: list[int] = []
        answers = []
        for _ in range(6):  # a restaurant process with alpha = 2
            r = rng.random() * (2.0 + len(answers))
            acc = 0.0
            for g, size in enumerate(groups):
                acc += size
                if r < acc:
                    groups[g] += 1
                    answers.append(str(g))
                    break
            else:
                groups.append(1)
                answers.append(str(len(groups) - 1))
        questions.append(CalibrationQuestion(0.5, tuple(_sol(f"w{a}", False) for a in answers)))
    assert fit_concentration(questions, answers_equal) == pytest.approx(2.0, rel=0.2)


def test_fit_answer_model_orders_priors_and_scores() -> None:
    rng = random.Random(1)
    questions = []
    for i in range(60):
        p = 0.9 if i % 2 else 0.1
        sols = []
        for _ in range(8):
            right = rng.random() < p
            sols.append(_sol("42" if right else str(rng.randrange(1000)), right,
                             rng.uniform(0.5, 1) if right else rng.uniform(0, 0.6)))
        questions.append(CalibrationQuestion(p + rng.uniform(-0.05, 0.05), tuple(sols)))
    mdl = fit_answer_model(questions, answers_equal, provenance={"test": True})
    grid = p_grid()
    means = [float(np.dot(pr, grid)) for pr in mdl.priors]
    assert means[0] < 0.3 < 0.7 < means[-1]
    for median in (0.1, 0.9):  # in both question bins, a high score is evidence for a right answer
        qm = mdl.for_question([median], [0.5])
        ratios = [qm.log_ratio(b) for b in range(qm.score_bins)]
        assert ratios[0] < 0 < ratios[-1]
    assert set(mdl.gains) == {"prm", "majority", "weighted"}
    assert mdl.selector in mdl.gains
    easy = mdl.gain_curve("majority", 0.9)
    assert easy is not None
    assert easy.at(1) > 0.8


def test_model_file_round_trip_and_fallback(tmp_path, caplog) -> None:
    mdl = AnswerModel((0.5,), (tuple(point_prior(5)), tuple(point_prior(30))), 1.5, score_edges=(0.3,), score_centers=(0.1, 0.7),
                      scores=(ScoreEvidence((0.4, 0.6), (0.7, 0.3)), ScoreEvidence((0.2, 0.8), (0.6, 0.4))),
                      gains={"majority": (GainCurve((0.2, 0.3), 4), GainCurve((0.9, 0.95), 5))})
    mdl.save(tmp_path)
    assert AnswerModel.for_prm(tmp_path) == mdl
    hard, easy = mdl.for_question([0.1, 0.3, 0.6], [0.1, 0.5, 0.9]), mdl.for_question([0.1, 0.8, 0.9], [0.1, 0.5, 0.9])
    assert easy.prior.argmax() == 30
    assert hard.prior.argmax() == 5
    assert easy.score.right == (0.2, 0.8)
    assert hard.score.right == (0.4, 0.6)
    fallback = AnswerModel.for_prm(tmp_path / "nothing")
    assert not fallback.calibrated
    assert "export selector" in caplog.text
    prior = fallback.for_question([0.1, 0.5, 0.9], [0.1, 0.5, 0.9]).prior
    assert prior.sum() == pytest.approx(1.0)
    assert prior[4] == pytest.approx(0.3)
    assert prior[20] == pytest.approx(0.4)
    (tmp_path / MODEL_FILE).write_text('{"version": 1, "priors": []}')
    with pytest.raises(ModelLoadError, match="export selector"):
        AnswerModel.for_prm(tmp_path)
