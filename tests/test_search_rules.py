"""The IAS sizing rules, K/M re-allocation, voting and the early-stopping criterion, against
hand-computed values and the paper's example."""

from __future__ import annotations

import math

import pytest

from edge_adapt.errors import SamplingConfigError
from edge_adapt.generator import StepEnd, StepRules
from edge_adapt.prm import Quantiles
from edge_adapt.search import BestOfN, IASBeamSearch, ValueSampling, kv_cells_needed, sequences_needed
from edge_adapt.search.ias import (
    CONFIDENCE_LADDER,
    achieved_confidence,
    beams_to_keep,
    clip_probability,
    expansion_width,
    n_samples,
)
from edge_adapt.search.strategy import MAX_LIVE_PATHS
from edge_adapt.search.types import Candidate
from edge_adapt.search.voting import best_scored, group_answers, majority_confidence, majority_vote, weighted_vote
from edge_adapt.tasks.grading import answers_equal


@pytest.mark.parametrize(
    ("p", "confidence", "n"),
    [
        (0.5, 0.99, 7),  # the paper's example: log(0.01)/log(0.5) = 6.64
        (0.9, 0.99, 2),  # log(0.01)/log(0.1) = 2 exactly
        (0.99, 0.99, 1),
        (0.1, 0.99, 44),  # 43.7
        (0.3, 0.9, 7),  # log(0.1)/log(0.7) = 6.46
        (0.0, 0.99, 46050),  # clipped to 1e-4
        (1.0, 0.99, 1),  # clipped to 1 - 1e-4
    ],
)
def test_n_samples(p: float, confidence: float, n: int) -> None:
    assert n_samples(p, confidence) == n
    q = clip_probability(p)
    assert 1 - (1 - q) ** n >= confidence - 1e-12  # N samples reach the confidence...
    if n > 1:
        assert 1 - (1 - q) ** (n - 1) < confidence  # ...and N - 1 do not


def test_n_samples_rejects_bad_confidence() -> None:
    for c in (0.0, 1.0, 1.5):
        with pytest.raises(SamplingConfigError):
            n_samples(0.5, c)


def test_beams_to_keep_and_expansion_width_by_hand() -> None:
    # N(0.9) = 2 <= 1 * 8: one clearly good prefix suffices
    assert beams_to_keep([0.9, 0.5, 0.1], m_max=8, k_max=8) == 1
    # N(0.3) = 13 > 8; N(0.2) = 21 > 16; N(0.01) = 459 > 24: none qualifies, keep all 3 (< K_max)
    assert beams_to_keep([0.3, 0.2, 0.01], m_max=8, k_max=8) == 3
    # N(0.4) = 10 > 4, N(0.35) = 11 <= 8? no (2*4 = 8 < 11); N(0.3) = 13 > 12; N(0.3) = 13 <= 16
    assert [n_samples(p) for p in (0.4, 0.35, 0.3)] == [10, 11, 13]
    assert beams_to_keep([0.4, 0.35, 0.3, 0.3, 0.1], m_max=4, k_max=8) == 4
    # hopeless prefixes: capped at K_max
    assert beams_to_keep([0.01] * 20, m_max=4, k_max=6) == 6
    assert beams_to_keep([], m_max=4, k_max=6) == 0
    with pytest.raises(ValueError, match="sorted"):
        beams_to_keep([0.1, 0.5], m_max=4, k_max=4)
    # M = min(ceil(N(min p_kept) / K_max), M_max)
    assert expansion_width(0.5, k_max=8, m_max=8) == 1  # ceil(7/8)
    assert expansion_width(0.1, k_max=8, m_max=8) == 6  # ceil(44/8)
    assert expansion_width(0.01, k_max=8, m_max=8) == 8  # ceil(459/8) capped
    assert expansion_width(0.99, k_max=8, m_max=8) == 1


def cand(answer: str | None, median: float) -> Candidate:
    return Candidate(steps=(f"A:{answer}",), answer=answer, end=StepEnd.EOG,
                     final=Quantiles((0.1, 0.5, 0.9), (median / 2, median, median)))


def test_votes_and_ranking() -> None:
    cands = [cand("12", 0.2), cand("12.0", 0.1), cand("7", 0.5), cand(None, 0.95), cand("12", 0.3)]
    assert group_answers(cands, answers_equal) == [[0, 1, 4], [2]]  # 12 == 12.0; no answer: no group
    assert majority_vote(cands, answers_equal) == 0  # three votes for 12
    assert best_scored(cands) == 2  # the PRM likes the answerless one best, but it has no answer to give
    assert best_scored([cand(None, 0.4), cand(None, 0.9)]) == 1  # none has one: the best-scored still
    # weighted: 12 gets 0.2 + 0.1 + 0.3 = 0.6 > 0.5 for 7; the group's best-scored member is returned
    assert weighted_vote(cands, answers_equal) == 4
    # one confident 7 outweighs two unsure 12s
    assert weighted_vote([cand("12", 0.2), cand("12", 0.2), cand("7", 0.9)], answers_equal) == 2
    assert majority_vote([], answers_equal) is None
    assert weighted_vote([cand(None, 0.5)], answers_equal) is None


@pytest.mark.parametrize(
    ("votes", "expected"),
    [
        ([4, 0], 31 / 32),  # n = 5: sum_{j<=4} C(5, j) / 32
        ([3, 1], 26 / 32),
        ([2, 2], 0.5),
        ([5], 63 / 64),
        ([1, 1, 1], 0.5),
    ],
)
def test_majority_confidence(votes: list[int], expected: float) -> None:
    assert majority_confidence(votes) == pytest.approx(expected)


def test_majority_confidence_grows_with_agreement() -> None:
    values = [majority_confidence([k, 1]) for k in range(1, 12)]
    assert values == sorted(values)
    assert values[-1] > 0.99
    assert math.isclose(majority_confidence([0]), 0.5)


# -- strategy specs -------------------------------------------------------------------------------


def test_specs_round_trip_and_reject_nonsense() -> None:
    from edge_adapt.search import BeamSearch, BestOfN, EarlyStop, IASBeamSearch, IASBestOfN
    from edge_adapt.search.spec import parse_spec

    assert parse_spec("best_of_n:n=16") == BestOfN(n=16, name="best_of_n:n=16")
    assert parse_spec("weighted:n=8+es=0.9") == BestOfN(n=8, select="weighted", early_stop=EarlyStop(threshold=0.9),
                                                         name="weighted:n=8+es=0.9")
    assert parse_spec("ias_best_of_n").n_max == 32
    assert parse_spec("ias_best_of_n").name == "ias_best_of_n:n_max=32"
    assert isinstance(parse_spec("ias_beam:k_max=2,m_max=8"), IASBeamSearch)
    beam = parse_spec("beam:n=16,width=4,score_every=2")
    assert isinstance(beam, BeamSearch)
    assert beam.score_every == 2
    assert parse_spec(beam.name) == beam
    assert isinstance(parse_spec("ias_majority:n_max=8"), IASBestOfN)
    for bad, message in (("best_of_k:n=3", "unknown strategy"), ("best_of_n:n=x", "must be a int"),
                         ("beam:n=16,depth=3", "beam takes n, width, score_every"), ("beam:n=8+es", "best-of-N strategies only")):
        with pytest.raises(SamplingConfigError, match=message):
            parse_spec(bad)


def test_generator_capacity_follows_the_strategy_and_the_task() -> None:
    rules = StepRules(max_new_tokens=256)
    # best-of-16: 16 paths live at once, each with a parent, plus the root; KV: the prompt once plus 16 longest solutions
    assert sequences_needed(BestOfN(n=16)) == 34
    assert kv_cells_needed(BestOfN(n=16), rules) == 512 + 16 * 256
    # adaptive search draws at most `lookahead` at once and releases finished samples: a small pool, floored
    assert sequences_needed(ValueSampling(lookahead=2)) == 6
    assert kv_cells_needed(ValueSampling(lookahead=2), rules) == 2048
    assert kv_cells_needed(IASBeamSearch(k_max=4, m_max=4), StepRules(max_new_tokens=1024)) == 512 + 16 * 1024
    assert sequences_needed(BestOfN(n=MAX_LIVE_PATHS)) == 256  # llama.cpp's limit, hence the cap on samples
    with pytest.raises(SamplingConfigError, match="1..127"):
        BestOfN(n=MAX_LIVE_PATHS + 1)


@pytest.mark.parametrize("p", [0.01, 0.1, 0.37, 0.9])
def test_the_samples_ias_asks_for_reach_their_target(p: float) -> None:
    assert achieved_confidence(0.5, 2) == pytest.approx(0.75)
    for confidence in CONFIDENCE_LADDER:
        n = n_samples(p, confidence)
        assert achieved_confidence(p, n) >= confidence
        assert n == 1 or achieved_confidence(p, n - 1) < confidence
