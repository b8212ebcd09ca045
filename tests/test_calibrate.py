"""`edge-adapt calibrate` on the shipped 3.5M-parameter generator through the real llama.cpp, with torch
unimportable: an interrupted calibration resumes to the same file; solve and stacks find the file
beside the generator, refuse one fitted for another generator, and run the adaptive vote and the
no-PRM baselines."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from without_modules import run_cli_without

from edge_adapt import StackSettings, open_stack
from edge_adapt.bench.calibrate import draw_samples, fit_and_judge, sampling_config
from edge_adapt.bench.records import RunFolder
from edge_adapt.cli import main
from edge_adapt.errors import ModelLoadError
from edge_adapt.models import load_default_models, sha256_of
from edge_adapt.search.calibration.vote_model import VoteModel
from edge_adapt.search.spec import parse_spec
from edge_adapt.settings import MeterSettings, ModelSettings, RunSettings, calibration_path
from edge_adapt.tasks import ArithmeticTask

ARGS = ["--task", "default", "--limit", "60", "-n", "4", "--parallel", "1"]  # one at a time: exactly reproducible


@pytest.fixture(scope="module")
def generator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the shipped generator in its own folder (the calibration is written beside it)."""
    folder = tmp_path_factory.mktemp("gen")
    return Path(shutil.copy(load_default_models().generator, folder / "generator.gguf"))


@pytest.fixture(scope="module")
def calibrated(generator: Path) -> VoteModel:
    result = run_cli_without(("torch", "transformers"), "calibrate", "-m", str(generator), *ARGS)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "vote model" in result.stdout
    assert "does the table keep its promises?" in result.stdout
    assert "majority:n=4" in result.stdout
    assert "(default)" in result.stdout
    return VoteModel.load(calibration_path(generator))


def test_calibration_records_what_it_was_fitted_for(calibrated: VoteModel, generator: Path) -> None:
    made = calibrated.provenance
    assert made["generator_sha256"] == sha256_of(load_default_models().generator)
    assert made["task"] == "arithmetic"
    assert made["temperature"] == 0.7
    assert made["questions"] + made["held_out_questions"] == 60
    report = calibrated.report
    assert report["feature"] in ("mean", "lowest", "tail")
    assert set(report["held_out"]["fixed"]) == {"1", "2", "3", "4"}
    assert calibrated.max_measured == 4


def test_an_interrupted_calibration_resumes_to_the_same_file(calibrated: VoteModel, generator: Path, tmp_path: Path) -> None:
    config = sampling_config(ModelSettings(generator), "default", None, samples=4, limit=60)

    class Stop(Exception):
        pass

    def stop_after_20(done: int, total: int, record: dict | None) -> None:
        if done >= 20:
            raise Stop

    with pytest.raises(Stop):
        draw_samples(config, tmp_path / "samples", stop_after_20, parallel=1)
    folder = draw_samples(config, tmp_path / "samples", lambda *a: None, parallel=1)
    resumed = fit_and_judge(folder, config, tmp_path / "model.json").model
    same = {**resumed.to_dict(), "provenance": None}
    assert same == {**calibrated.to_dict(), "provenance": None}


def test_a_calibration_for_another_generator_is_refused(calibrated: VoteModel, generator: Path, tmp_path: Path) -> None:
    other = Path(shutil.copy(generator, tmp_path / "other.gguf"))
    forged = VoteModel(calibrated.feature, calibrated.table, calibrated.max_measured, calibrated.price,
                       {**calibrated.provenance, "generator_sha256": "0" * 64})
    forged.save(calibration_path(other))
    settings = StackSettings(RunSettings(ModelSettings(other), meter=MeterSettings("estimate")), ArithmeticTask(),
                             (parse_spec("adaptive_vote"),))
    with pytest.raises(ModelLoadError, match="calibrated for another generator"):
        with open_stack(settings):
            pass
    result = CliRunner().invoke(main, ["solve", "--index", "3", "-m", str(other), "--task", "default"])
    assert result.exit_code == 1
    assert "calibrated for another generator" in result.output


@pytest.mark.parametrize("spec", ["adaptive_vote:price=8", "consistency:n_max=8", "esc:window=2,n_max=8", "cisc:n=4",
                                  "deepconf:n=4"])
def test_the_vote_strategies_run_without_a_prm(calibrated: VoteModel, generator: Path, spec: str) -> None:
    strategy = parse_spec(spec)
    task = ArithmeticTask()
    run = RunSettings(ModelSettings(generator), meter=MeterSettings("estimate"))
    with open_stack(StackSettings(run, task, (strategy,))) as stack:
        assert stack.searcher.vote_model == calibrated
        for index in (0, 250, 450):
            problem = task.problem("test", index)
            result = stack.searcher.run(strategy, problem, seed=index)
            assert 1 <= result.cost.samples <= 8
            assert result.cost.prm_calls == 0
            assert result.answer is None or result.chosen in result.candidates
            if spec.startswith(("adaptive_vote", "consistency")):
                summary = next(d for d in result.decisions if d.kind == "adaptive_vote")
                wanted = "calibrated:" + calibrated.feature if spec.startswith("adaptive") else "adaptive-consistency"
                assert summary.rule == wanted
                assert summary.samples == result.cost.samples
                if spec.startswith("consistency") and summary.stop == "settled":
                    assert summary.votes[0] >= 4  # Adaptive-Consistency cannot settle on fewer than four agreeing


def test_solve_with_a_generator_alone_runs_the_adaptive_vote_and_says_which(calibrated: VoteModel, generator: Path) -> None:
    result = CliRunner().invoke(main, ["solve", "--index", "3", "-m", str(generator), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["strategy"] == f"adaptive_vote:price={calibrated.price:g}"
    assert any(d["kind"] == "adaptive_vote" and d["detail"]["rule"].startswith("calibrated:") for d in data["decisions"])
    bare = Path(shutil.copy(generator, generator.with_name("bare.gguf")))
    result = CliRunner().invoke(main, ["solve", "--index", "3", "-m", str(bare), "--task", "default"])
    assert result.exit_code == 0, result.output
    assert "consistency:n_max=16" in result.output
    assert "Adaptive-Consistency" in result.output


def test_a_fit_that_reads_the_prm_keeps_the_generator_only_table_through_the_held_out_report(
        calibrated: VoteModel, generator: Path, tmp_path: Path) -> None:
    """The calibration's own samples, each given a PRM score that knows the answer: the fit reads the
    PRM, and the file it writes still holds the table a stack without that PRM runs."""
    drawn = Path(str(calibration_path(generator)) + ".samples")
    folder = tmp_path / "scored"
    folder.mkdir()
    shutil.copy(drawn / "config.json", folder / "config.json")
    with open(folder / "records.jsonl", "w") as out:
        for line in (drawn / "records.jsonl").read_text().splitlines():
            record = json.loads(line)
            record["samples"] = [{**s, "prm_median": 0.9 if s["correct"] else 0.1} for s in record["samples"]]
            out.write(json.dumps(record) + "\n")
    config = sampling_config(ModelSettings(generator), "default", None, samples=4, limit=60)
    model = fit_and_judge(RunFolder(folder), config, tmp_path / "model.json").model
    assert model.feature == "prm"
    assert "held_out" in model.report
    saved = VoteModel.load(tmp_path / "model.json")
    own = saved.without_prm()
    assert own is not None
    assert own.feature in ("mean", "lowest", "tail")
    assert not own.needs_prm


def test_a_calibration_written_elsewhere_is_read_where_solve_is_told(calibrated: VoteModel, generator: Path,
                                                                       tmp_path: Path) -> None:
    """`calibrate -o FILE` for a generator in a folder one cannot write: solve reads FILE with --calibration."""
    bare = Path(shutil.copy(generator, tmp_path / "bare.gguf"))
    elsewhere = Path(shutil.copy(calibration_path(generator), tmp_path / "mine.json"))
    result = CliRunner().invoke(main, ["solve", "--index", "3", "-m", str(bare), "--calibration", str(elsewhere), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["strategy"] == f"adaptive_vote:price={calibrated.price:g}"
    result = CliRunner().invoke(main, ["solve", "--index", "3", "-m", str(bare), "--calibration", str(tmp_path / "none.json")])
    assert result.exit_code == 2
    assert "none.json" in result.output
    assert "does not exist" in result.output
