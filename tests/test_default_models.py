"""The shipped default models: the files the manifest lists, loaded through the real runtimes,
clearing bars that a broken or untrained model cannot clear by accident."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_adapt import Generator, GeneratorConfig, QuantilePRM, SamplingParams
from edge_adapt.cli import main
from edge_adapt.models import load_default_models
from edge_adapt.tasks import ArithmeticTask
from edge_adapt.tasks.arithmetic import TEST_PER_LEVEL, solve
from edge_adapt.tasks.expressions import to_chain

TASK = ArithmeticTask()


@pytest.fixture(scope="module")
def models():
    return load_default_models(verify=True)  # every file's sha256 and size against manifest.json


@pytest.fixture(scope="module")
def test_problems(models):
    return TASK.problems("test", list(TEST_PER_LEVEL), seed=models.manifest["recipe"]["seed"])


@pytest.fixture(scope="module")
def generator(models):
    with Generator(models.generator, GeneratorConfig(n_ctx=4096, n_seq_max=32)) as gen:
        yield gen


@pytest.fixture(scope="module")
def prm(models):
    return QuantilePRM(models.prm)


def test_manifest_describes_what_ships(models) -> None:
    m = models.manifest
    paths = {f["path"] for f in m["files"]}
    assert m["generator"]["file"] in paths
    assert f"{m['prm']['dir']}/prm_config.json" in paths
    assert m["generator"]["export"]["f32_greedy_match"]
    assert m["generator"]["export"]["fallbacks"] == 0
    assert m["prm"]["quantile_levels"] == [0.1, 0.5, 0.9]
    assert m["task"]["levels"]
    assert m["metrics"]["generator_and_prm_on_test"]["overall"]["problems"] == 500
    assert (models.root / "MODEL_CARD.md").read_text().count("| ") > 20


def test_greedy_decoding_solves_the_easiest_test_problems(generator, test_problems) -> None:
    easy = [p for p in test_problems if p.level == 1][:30]
    correct = 0
    for p in easy:
        leaves, _ = generator.complete([generator.prefill(TASK.prompt(p))], 1, sampling=SamplingParams(temperature=0.0),
                                       rules=TASK.step_rules)
        correct += TASK.is_correct(leaves[0].solution_text(), p)
    generator.reset()
    assert correct >= 20, f"{correct}/30"  # an untrained model solves none; the model card has the real rate


def _steps(lines: list[str], answer: int) -> list[str]:
    return [line + "\n\n" for line in lines] + [f"A:{answer}"]


def _right_and_corrupted(problem) -> tuple[list[str], list[str]]:
    """The reference solution, and one whose first result is off by one, carried on consistently
    through the remaining steps: only the arithmetic of step 1 gives it away."""
    chain = solve(problem.question)
    right = _steps([f"{a}{op}{b}={r}" for a, op, b, r in chain], chain[-1][3])
    a, op, b, r = chain[0]
    acc, lines = r + 1, [f"{a}{op}{b}={r + 1}"]
    for _, op, b, _ in chain[1:]:
        nxt = acc + b if op == "+" else acc - b if op == "-" else acc * b
        lines.append(f"{acc}{op}{b}={nxt}")
        acc = nxt
    return right, _steps(lines, acc)


def test_prm_ranks_a_correct_solution_above_a_corrupted_one(prm, test_problems) -> None:
    easy = [p for p in test_problems if p.level in (1, 2)][:40]
    wins = 0
    for p in easy:
        right, wrong = _right_and_corrupted(p)
        s_right, s_wrong = prm.score(p.question, [right, wrong])
        wins += s_right.final.median > s_wrong.final.median
    assert wins >= 32, f"{wins}/40"


def test_prm_knows_easy_questions_from_hard_ones(prm, test_problems) -> None:
    by_level = {lv: [prm.score_question(p.question).median for p in test_problems if p.level == lv][:20] for lv in (1, 6)}
    assert sum(by_level[1]) / 20 > sum(by_level[6]) / 20 + 0.3


def test_the_question_score_is_not_optimistic(generator, prm, test_problems) -> None:
    """The recipe's evaluation sets the PRM's score of the question alone beside the share of right
    samples. A likelihood combination whose bias also applied to the question scored the middle
    levels 0.72 / 0.73 where 0.47 / 0.45 of the samples were right, and adaptive search, which
    sizes N by that score, under-sampled them; the pooled held-out figures did not show it."""
    from edge_adapt_tools.recipe.model_card import question_score_summary
    from edge_adapt_tools.recipe.model_eval import evaluate_models

    middle = [p for level in (3, 4) for p in [q for q in test_problems if q.level == level][:20]]
    evaluation = evaluate_models(generator, prm, TASK, middle, samples=8)
    generator.reset()
    levels = evaluation.by_level
    assert set(levels) == {3, 4}
    assert evaluation.question_calibration["n"] == len(middle)
    for level, stats in levels.items():
        assert stats.question_median < stats.pass_at_1 + 0.12, f"level {level}: {stats}"
    assert "coverage q10 / q50 / q90" in question_score_summary(evaluation.to_dict())


def test_solve_is_the_main_job(models) -> None:
    # the README's main command, with the Makefile's question: it must be one the shipped generator
    # can answer (a question outside the task's levels, such as 37+48*3, gets copied wrong)
    makefile = (Path(__file__).parents[1] / "Makefile").read_text().splitlines()
    question = next(line.split("?=")[1].strip() for line in makefile if line.startswith("QUESTION"))
    result = CliRunner().invoke(main, ["solve", question])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "Cost" in text
    assert "PRM P(success)" in text
    assert f"Answer {solve(to_chain(question))[-1][3]} correct" in text
    assert f"Question {question}" in text
    result = CliRunner().invoke(main, ["solve", "--index", "3", "-n", "4", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["strategy"] == "best_of_n:n=4"
    assert len(data["candidates"]) == 4
    # one PRM call for the four candidates, one for the question's score solve shows: both in the cost
    assert data["cost"]["generated_tokens"] > 0
    assert data["cost"]["prm_calls"] == 2
    assert [d["kind"] for d in data["decisions"]] == ["n_samples", "select"]
    assert all(0 <= v <= 1 for v in data["question_quantiles"]["values"])
    assert data["gold"] == TASK.problem("test", 3, seed=models.manifest["recipe"]["seed"]).answer
    assert data["level"] == 1
    bad = CliRunner().invoke(main, ["solve", "what is love"])
    assert bad.exit_code == 2
    assert "not a default-task question" in bad.output


def test_solve_with_budgets_reports_energy_and_caps(models) -> None:
    result = CliRunner().invoke(main, ["solve", "--index", "450", "-s", "best_of_n:n=32", "--tokens", "400", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["cost"]["generated_tokens"] <= 400
    assert data["cost"]["energy_source"].startswith(("estimate", "rapl", "battery"))
    assert any(d["kind"] == "budget_cap" and d["detail"]["limit"] == "tokens" for d in data["decisions"])
    impossible = CliRunner().invoke(main, ["solve", "37+48*3", "--energy", "0.0001"])
    assert impossible.exit_code == 1
    assert "cannot buy one answer" in impossible.output
    # 37+48*3 has two-digit operands in a chain, unlike every level: solve says so before answering
    assert "unlike every level" in " ".join(impossible.output.split())


def test_ias_samples_less_on_easy_questions_than_on_hard_ones(generator, prm, test_problems) -> None:
    from edge_adapt.search import IASBestOfN, Searcher, SearchSettings

    searcher = Searcher(generator, prm, TASK, SearchSettings())
    samples = {lv: [searcher.run(IASBestOfN(n_max=32), p).cost.samples for p in [q for q in test_problems if q.level == lv][:8]]
               for lv in (1, 6)}
    assert sum(samples[1]) < sum(samples[6]), samples


def test_bench_runs_and_reports_on_the_default_models(models, tmp_path) -> None:
    out = tmp_path / "run"
    args = ["bench", "-o", str(out), "--limit", "6", "-s", "best_of_n:n=4", "-s", "ias_best_of_n:n_max=8"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(records) == 12
    assert {r["strategy"] for r in records} == {"best_of_n:n=4", "ias_best_of_n:n_max=8"}
    assert "ias_best_of_n:n_max=8 vs best_of_n:n=4" in (out / "summary.md").read_text()
    again = CliRunner().invoke(main, args)  # everything recorded: nothing reruns, nothing is lost
    assert again.exit_code == 0
    assert len((out / "records.jsonl").read_text().splitlines()) == 12
    other = CliRunner().invoke(main, [*args, "--seed", "3"])
    assert other.exit_code == 1
    assert "different configuration" in other.output


def test_the_recipe_can_rebuild_the_prm_on_the_shipped_generator(models, tmp_path) -> None:
    """``--from-shipped`` stamps the generator's stages done from the manifest (their work is not
    redone) after checking the files, and refuses models it cannot vouch for."""
    import shutil

    from edge_adapt_tools.recipe.build import RecipeSettings
    from edge_adapt_tools.recipe.stages import Stages, stage_keys, take_shipped_stages

    shipped = models.root
    stages = Stages(tmp_path / "work", log=lambda m: None)
    (tmp_path / "work").mkdir()
    settings = RecipeSettings(seed=models.manifest["recipe"]["seed"])
    take_shipped_stages(shipped, tmp_path / "work", settings, stages)

    def must_not_run() -> None:
        raise AssertionError("a stage taken from the shipped models ran again")

    training = stages.run("1-train-generator", stage_keys(settings)["1-train-generator"], must_not_run)
    exported = stages.run("2-export-generator", stage_keys(settings, training)["2-export-generator"], must_not_run)
    assert exported["sha256"] == models.manifest["generator"]["export"]["sha256"]
    stages.run("3-rollouts", stage_keys(settings, training, exported)["3-rollouts"], must_not_run)
    assert (tmp_path / "work" / "calibration.jsonl").read_bytes() == (shipped / "calibration.jsonl").read_bytes()
    assert stages.taken == ["1-train-generator", "2-export-generator", "3-rollouts"]  # the manifest will say so

    from edge_adapt.errors import EdgeAdaptError

    keeping = dataclasses.replace(settings, rollouts=dataclasses.replace(settings.rollouts, record_continuations=True))
    with pytest.raises(EdgeAdaptError, match="whether continuations were kept"):  # the shipped set has none
        take_shipped_stages(shipped, tmp_path / "w2", keeping, Stages(tmp_path / "w2", log=lambda m: None))

    other = tmp_path / "other"
    other.mkdir()
    manifest = json.loads((shipped / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps({**manifest, "recipe": {**manifest["recipe"], "seed": 7}}))
    with pytest.raises(EdgeAdaptError, match="other settings"):
        take_shipped_stages(other, tmp_path / "w2", settings, Stages(tmp_path / "w2", log=lambda m: None))
    easier = [{**level, "max_value": 99} for level in manifest["task"]["levels"]]  # built for other levels
    (other / "manifest.json").write_text(json.dumps({**manifest, "task": {**manifest["task"], "levels": easier}}))
    with pytest.raises(EdgeAdaptError, match="the task's levels"):
        take_shipped_stages(other, tmp_path / "w2", settings, Stages(tmp_path / "w2", log=lambda m: None))
    # a manifest from before level weights and bf16 existed was built without them, not with today's defaults
    older = {k: v for k, v in manifest["generator"]["training"].items() if k not in ("level_weights", "bf16")}
    (other / "manifest.json").write_text(json.dumps({**manifest, "generator": {**manifest["generator"], "training": older}}))
    with pytest.raises(EdgeAdaptError, match="other settings"):
        take_shipped_stages(other, tmp_path / "w2", settings, Stages(tmp_path / "w2", log=lambda m: None))
    (other / "manifest.json").write_text(json.dumps(manifest))
    shutil.copy(shipped / "calibration.jsonl", other / "calibration.jsonl")
    with pytest.raises(EdgeAdaptError, match="missing or changed"):  # no generator there
        take_shipped_stages(other, tmp_path / "w2", settings, Stages(tmp_path / "w2", log=lambda m: None))


def test_generator_training_draws_levels_by_weight_and_refuses_bad_weights(tmp_path) -> None:
    import random

    from edge_adapt.errors import EdgeAdaptError
    from edge_adapt_tools.recipe.train_generator import GeneratorTrainSettings, _examples, char_tokenizer, train_generator

    task = ArithmeticTask()
    tok = char_tokenizer(task)
    hardest_only = _examples(task, tok, random.Random(0), 20, level_weights=(0, 0, 0, 0, 0, 1))
    questions = [tok.decode(ids[:prompt_len], skip_special_tokens=True) for ids, prompt_len in hardest_only]
    assert all(len(solve(q.strip()[2:])) == task.levels[-1].n_ops for q in questions), questions
    uniform = _examples(task, tok, random.Random(0), 60)
    assert {len(solve(tok.decode(ids[:n], skip_special_tokens=True).strip()[2:])) for ids,
            n in uniform} == {lv.n_ops for lv in task.levels}
    with pytest.raises(EdgeAdaptError, match="one non-negative weight per level"):
        train_generator(task, tmp_path / "never", GeneratorTrainSettings(steps=1, level_weights=(1, 1)))
    assert not (tmp_path / "never").exists()


def test_the_root_reads_the_shipped_answer_model_and_warns_when_search_samples_at_another_temperature(caplog) -> None:
    from edge_adapt import StackSettings, ValueSampling, open_stack
    from edge_adapt.models import load_default_models
    from edge_adapt.settings import ModelSettings

    shipped = load_default_models()
    settings = StackSettings(ModelSettings(shipped.generator, shipped.prm, threads=2), TASK, (ValueSampling(),))
    with caplog.at_level("WARNING", logger="edge_adapt"), open_stack(settings) as stack:
        model = stack.searcher.answer_model
    assert model.calibrated
    assert model.provenance["temperature"] == settings.run.sampling.temperature  # the default temperature: no warning
    assert not [r for r in caplog.records if "fitted on samples at temperature" in r.getMessage()]
    with caplog.at_level("WARNING", logger="edge_adapt"), \
            open_stack(replace(settings, run=replace(settings.run, sampling=SamplingParams(temperature=1.0)))) as hotter:
        assert hotter.searcher.answer_model.calibrated
    assert any("fitted on samples at temperature 0.7, search samples at 1" in r.getMessage() for r in caplog.records)
