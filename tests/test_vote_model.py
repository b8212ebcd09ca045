"""The generator-only vote model against hand-computed values: the leader rule, the state, the value
table's fit by replay (exact cell means without shrinkage, the shrinkage formula with it), the
round rule with and without a model, replays of fixed and adaptive votes, the file's round trip.
Synthetic samples with known answers: no models."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from edge_adapt.errors import ModelLoadError
from edge_adapt.search.calibration.cells import CellTable, ValueCell
from edge_adapt.search.calibration.vote_fit import available_features, fit_table, fit_vote_model
from edge_adapt.search.calibration.vote_model import (
    Sample,
    VoteModel,
    VoteState,
    VoteTable,
    cell_keys,
    leader,
    vote_round,
    vote_state,
)
from edge_adapt.search.calibration.vote_replay import CalibrationSample, VoteQuestion, judge, replay_adaptive, replay_fixed
from edge_adapt.search.spec import parse_spec
from edge_adapt.search.voting import majority_confidence


def question(qid: str, answers: list[str | None], gold: str, conf: float, tokens: int = 10,
             level: int | None = None) -> VoteQuestion:
    return VoteQuestion(qid,
                        tuple(CalibrationSample(a, a == gold, tokens, {"mean": conf, "lowest": conf, "tail": conf, "prm": None})
                                   for a in answers), level)


def easy(i: int) -> VoteQuestion:  # every sample right, confident
    return question(f"easy{i}", ["r"] * 4, "r", -0.1, level=1)


def hopeless(i: int) -> VoteQuestion:  # every sample a different wrong answer, unsure
    return question(f"hard{i}", ["w0", "w1", "w2", "w3"], "r", -2.0, level=2)


def test_the_leader_has_most_votes_then_the_higher_confidence_then_comes_first() -> None:
    samples = [Sample("a", -1.0), Sample("b", -0.5), Sample("a", -1.0), Sample("b", -0.2), Sample(None, 0.0)]
    assert leader(samples) == ("b", [1, 3])  # 2 votes each; b's mean confidence is higher
    assert leader([Sample("a", -1.0), Sample("b", -1.0)]) == ("a", [0])
    assert leader([Sample(None, 0.0)]) == (None, [])
    state = vote_state(samples)
    assert state == VoteState(n=5, votes=2, runner_up=2, distinct=2, confidence=pytest.approx(-0.35))


def test_adaptive_consistency_stops_once_the_beta_posterior_settles_the_leader() -> None:
    # P(leader ahead) with 3 votes to 0 is 15/16 < 0.95: one more; with 4 to 0 it is 31/32
    three, four = VoteState(3, 3, 0, 1, -0.1), VoteState(4, 4, 0, 1, -0.1)
    assert majority_confidence([3, 0]) == pytest.approx(15 / 16)
    assert vote_round(three, None, price=8, work=10, n_max=16) .draw == 1
    stop = vote_round(four, None, price=8, work=10, n_max=16)
    assert (stop.draw, stop.reason, stop.right) == (0, "settled", pytest.approx(31 / 32))
    assert vote_round(VoteState(16, 5, 5, 6, -1.0), None, price=8, work=10, n_max=16).reason == "n_max"
    assert vote_round(VoteState(0, 0, 0, 0, 0.0), None, price=8, work=10, n_max=16).reason == "first"


def model_with(gains: tuple[float, ...], right: float = 0.5, questions: int = 50, max_measured: int = 16) -> VoteModel:
    return VoteModel("mean", VoteTable((), CellTable({"*": ValueCell(questions, right, gains)}, 10, "*")), max_measured, 8.0)


def test_the_calibrated_rule_draws_the_round_whose_gain_beats_its_price() -> None:
    state = VoteState(2, 1, 1, 2, -0.5)
    # price 8 points per 1,000 tokens, 50 tokens a sample: one sample costs 0.004, two 0.008
    one = vote_round(state, model_with((0.010, 0.012)), price=8, work=50, n_max=16)
    assert (one.draw, one.reason) == (1, "gain")  # nets 0.006 against 0.004
    two = vote_round(state, model_with((0.005, 0.020)), price=8, work=50, n_max=16)
    assert two.draw == 2  # nets 0.001 against 0.012
    none = vote_round(state, model_with((0.003, 0.007)), price=8, work=50, n_max=16)
    assert (none.draw, none.reason, none.questions) == (0, "not_worth", 50)
    assert vote_round(state, model_with((0.5, 0.5), right=0.99), price=8, work=50, n_max=16).reason == "confident"
    assert vote_round(state, model_with((0.5, 0.5), max_measured=2), price=8, work=50, n_max=16).reason == "past_calibration"


def test_the_table_reads_the_finest_cell_enough_questions_reached() -> None:
    state = VoteState(1, 1, 0, 1, -0.1)
    fine, mid, *_ = cell_keys(state, (-1.0,))
    cells = {fine: ValueCell(3, 0.9, ()), mid: ValueCell(12, 0.7, ()), "*": ValueCell(40, 0.5, ())}
    table = VoteTable((-1.0,), CellTable(cells, 10, "*"))
    assert table.lookup(state) == (mid, ValueCell(12, 0.7, ()))


def test_without_shrinkage_each_cell_is_the_replayed_mean() -> None:
    questions = [easy(i) for i in range(10)] + [hopeless(i) for i in range(10)]
    table = fit_table(questions, "mean", prior_questions=0.0)
    root = table.table.cells["*"]
    # every state of an easy question is right, none of a hopeless one; more samples change nothing
    assert root.support == 20
    assert root.right == pytest.approx(0.5)
    assert root.gains == (0.0, 0.0)
    confident = next(c for k, c in table.table.cells.items() if k.count(",") == 2 and c.support == 10 and c.right == 1.0)
    assert confident.gains == (0.0, 0.0)
    assert any(k.count(",") == 2 and c.right == 0.0 for k, c in table.table.cells.items())


def test_a_cell_few_questions_reached_is_pulled_toward_its_parent() -> None:
    questions = [easy(i) for i in range(10)] + [hopeless(i) for i in range(2)]
    table = fit_table(questions, "mean", prior_questions=4.0)
    # n = 1 with one distinct answer, the unsure bin: the 2 hopeless questions (all wrong) alone
    key = cell_keys(VoteState(1, 1, 0, 1, -2.0), table.confidence_edges)[1]
    parent = table.table.cells[key.rsplit(",", 1)[0]]
    assert table.table.cells[key].support == 2
    assert table.table.cells[key].right == pytest.approx((0.0 + 4.0 * parent.right) / (2 + 4.0), abs=1e-5)


def test_replays_of_fixed_and_adaptive_votes_count_samples_tokens_and_levels() -> None:
    questions = [easy(i) for i in range(5)] + [hopeless(i) for i in range(5)]
    fixed = replay_fixed(questions, 3, "mean", orderings=4)
    assert (fixed.accuracy, fixed.tokens, fixed.samples) == (50.0, 30.0, 3.0)
    assert fixed.per_level == {"1": (100.0, 30.0, 3.0), "2": (0.0, 30.0, 3.0)}
    # Adaptive-Consistency: four agreeing samples settle an easy question (4 drawn, all there are);
    # a hopeless one never settles and runs out of samples
    replayed, stops = replay_adaptive(questions, None, 8.0, "mean", n_max=4, orderings=2)
    assert (replayed.accuracy, replayed.samples, replayed.tokens) == (50.0, 4.0, 40.0)
    assert len(stops) == 20


def test_fitting_chooses_feature_and_price_out_of_fold_and_judges_on_held_out_questions() -> None:
    questions = [easy(i) for i in range(15)] + [hopeless(i) for i in range(15)]
    model = fit_vote_model(questions, provenance={"generator_sha256": "x"})
    assert model.feature in available_features(questions)
    assert "prm" not in available_features(questions)
    # more samples never help here, so the cheapest price (the highest) is within the tolerance
    assert model.price == max(float(p) for p in model.report["price_replays"])
    judged = judge(model, [easy(100 + i) for i in range(5)] + [hopeless(100 + i) for i in range(5)])
    assert judged.adaptive[model.price].accuracy == 50.0
    assert judged.adaptive[model.price].samples == 1.0
    assert judged.fixed[4].accuracy == 50.0
    assert sum(n for _, n, _, _ in judged.reliability) == 10 * 16  # every replayed stop has a bin


def test_the_file_round_trips_and_a_damaged_one_is_refused(tmp_path) -> None:
    model = fit_vote_model([easy(i) for i in range(12)] + [hopeless(i) for i in range(12)], provenance={"generator_sha256": "x"})
    path = model.save(tmp_path / "g.gguf.calibration.json")
    assert VoteModel.load(path) == model
    poisoned = model.to_dict()
    poisoned["table"]["cells"]["*"]["right"] = float("nan")
    path.write_text(json.dumps(poisoned))
    with pytest.raises(ModelLoadError, match="not finite"):
        VoteModel.load(path)
    path.write_text('{"version": 1, "feature": "mean"}')
    with pytest.raises(ModelLoadError, match="rebuild it with `edge-adapt calibrate`"):
        VoteModel.load(path)


@pytest.mark.parametrize("spec", ["adaptive_vote:price=4", "consistency:n_max=8", "esc:window=3,n_max=12", "cisc:n=8",
                                  "deepconf:n=8"])
def test_the_new_strategies_round_trip_as_specs(spec: str) -> None:
    assert parse_spec(spec).name == spec
    assert not parse_spec(spec).needs_prm


def test_records_become_questions_with_answers_grouped_as_the_task_compares_them() -> None:
    from edge_adapt.bench.calibrate import is_held_out, questions_from_records

    conf = {"mean": -0.5, "lowest": -1.0, "tail": -0.2}
    record = {"question_id": "q1", "level": 2, "samples": [
        {"answer": "12", "correct": True, "tokens": 9, "confidence": conf, "prm_median": None},
        {"answer": "12.0", "correct": True, "tokens": 11, "confidence": conf, "prm_median": None},
        {"answer": None, "correct": False, "tokens": 128, "confidence": conf, "prm_median": None},
        {"answer": "13", "correct": False, "tokens": 10, "confidence": conf, "prm_median": 0.4}]}
    (q,) = questions_from_records([record])
    assert [s.answer for s in q.samples] == ["a0", "a0", None, "a1"]
    assert q.level == 2
    assert q.right("a0")
    assert not q.right("a1")
    assert not q.right(None)
    assert q.samples[3].features == {"mean": -0.5, "lowest": -1.0, "tail": -0.2, "prm": 0.4}
    held = [i for i in range(1000) if is_held_out(f"gsm8k-{i:05d}", 0.2)]
    assert 150 < len(held) < 250
    assert held == [i for i in range(1000) if is_held_out(f"gsm8k-{i:05d}", 0.2)]


def test_a_prm_feature_is_chosen_only_where_it_predicts_better_and_keeps_a_generator_only_table(tmp_path) -> None:
    def scored(q: VoteQuestion, prm: float) -> VoteQuestion:  # token confidence says nothing; the PRM tells them apart
        return VoteQuestion(q.id, tuple(CalibrationSample(s.answer, s.correct, s.tokens, {"mean": -1.0, "lowest": -1.0,
                                                                                           "tail": -1.0, "prm": prm})
                                        for s in q.samples), q.level)

    questions = [scored(easy(i), 0.9) for i in range(30)] + [scored(hopeless(i), 0.1) for i in range(30)]
    model = fit_vote_model(questions)
    assert model.feature == "prm"
    assert model.needs_prm
    assert model.report["feature_log_loss"]["prm"] < min(model.report["feature_log_loss"][f] for f in ("mean", "lowest", "tail"))
    own = model.without_prm()
    assert own is not None
    assert own.feature in ("mean", "lowest", "tail")
    assert not own.needs_prm
    assert VoteModel.load(model.save(tmp_path / "m.json")) == model
    assert fit_vote_model([easy(i) for i in range(15)] + [hopeless(i) for i in range(15)]).without_prm() is not None
    # the same PRM when scoring a sample costs as much as generating ten thousand tokens: it does not pay
    dear = fit_vote_model(questions, prm_work=10_000.0)
    assert dear.feature in ("mean", "lowest", "tail")
    assert not dear.needs_prm
    assert dear.generator_only is None
    declined = dear.report["prm_declined"]
    assert declined["prm_work_per_sample"] == 10_000.0
    assert declined["with_prm"]["samples"] >= 1
    assert dear.report["feature_log_loss"] == model.report["feature_log_loss"]  # what predicted better is still said


def test_the_default_search_reads_a_prm_only_through_a_vote_model_calibrated_with_it(tmp_path) -> None:
    from edge_adapt.defaults import DEFAULT_SPEC
    from edge_adapt.defaults import search_default as default_search
    from edge_adapt.models import prm_fingerprint
    from edge_adapt.settings import ModelSettings

    prm, other = tmp_path / "prm", tmp_path / "other"
    for folder, text in ((prm, "{}"), (other, '{"rebuilt": 1}')):
        folder.mkdir()
        (folder / "prm_config.json").write_text(text)
    fitted = fit_vote_model([easy(i) for i in range(15)] + [hopeless(i) for i in range(15)])

    def with_prm(folder) -> VoteModel:  # the same table, as `calibrate --prm FOLDER` would record it
        return VoteModel(fitted.feature, fitted.table, fitted.max_measured, 4.0, {"prm_sha256": prm_fingerprint(folder)})

    alone, gguf = VoteModel(fitted.feature, fitted.table, fitted.max_measured, 4.0), tmp_path / "g.gguf"
    assert default_search(ModelSettings(gguf), None)[0] == "consistency:n_max=16"
    assert default_search(ModelSettings(gguf), alone)[0] == "adaptive_vote:price=4"
    assert default_search(ModelSettings(gguf, prm), alone)[0] == DEFAULT_SPEC  # calibrated without this PRM
    assert default_search(ModelSettings(gguf, prm), with_prm(other))[0] == DEFAULT_SPEC  # with another one
    spec, why = default_search(ModelSettings(gguf, prm), with_prm(prm))
    assert spec == "adaptive_vote:price=4"
    assert "calibrated with this PRM" in why
    assert "did not earn its keep" in why
    reads_it = replace(with_prm(prm), feature="prm", generator_only=("tail", fitted.table))
    spec, why = default_search(ModelSettings(gguf, prm), reads_it)
    assert spec == "adaptive_vote:price=4"
    assert "evidence: its scores" in why
    # without the PRM it was calibrated with: the file's generator-only table, or Adaptive-Consistency without one
    reads_prm = VoteModel("prm", fitted.table, fitted.max_measured, 4.0, {}, {}, ("tail", fitted.table))
    spec, why = default_search(ModelSettings(gguf), reads_prm)
    assert spec == "adaptive_vote:price=4"
    assert "evidence: tail" in why
    spec, why = default_search(ModelSettings(gguf), replace(reads_prm, generator_only=None))
    assert spec == "consistency:n_max=16"
    assert "recalibrate" in why


def test_both_models_write_one_cell_form_and_read_the_forms_they_wrote_before(tmp_path) -> None:
    from edge_adapt.models import load_default_models
    from edge_adapt.search.calibration.answer_model import AnswerModel
    from edge_adapt.settings import calibration_path

    shipped = load_default_models()
    written_before = json.loads(calibration_path(shipped.generator).read_text())  # the shipped file predates the form
    assert "questions" in next(iter(written_before["table"]["cells"].values()))
    vote = VoteModel.from_dict(written_before)
    again = VoteModel.from_dict(json.loads(json.dumps(vote.to_dict())))
    assert again == vote
    assert set(next(iter(vote.to_dict()["table"]["cells"].values()))) == {"support", "right", "gains"}
    answer = AnswerModel.for_prm(shipped.prm)
    assert answer.values
    assert AnswerModel.from_dict(json.loads(json.dumps(answer.to_dict()))) == answer
    assert set(next(iter(answer.to_dict()["values"][0]["cells"].values()))) == {"support", "right", "gains"}


def test_the_give_up_count_is_the_fewest_samples_whose_stop_loses_almost_no_calibration_question() -> None:
    from edge_adapt.search.calibration.vote_fit import GIVE_UP_LOSS, choose_give_up

    answered = [easy(i) for i in range(40)]
    k, lost = choose_give_up(answered)
    assert k == 1  # every sample holds an answer: one without is reason enough
    assert lost["1"] == 0.0
    # questions whose right answer comes late, after samples with none: stopping early loses them
    late = [question(f"late{i}", [None, None, None, "r"], "r", -0.5) for i in range(10)]
    k, lost = choose_give_up(answered + late)
    assert k == 4
    assert lost["3"] > GIVE_UP_LOSS
    assert lost["4"] == 0.0
    assert fit_vote_model(answered + late).report["give_up_after"] == 4
