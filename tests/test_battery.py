"""`edge-adapt battery` on the shipped models: one battery over a set of questions, paced so the
total is never overspent, resumable, with even spending beside it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_adapt.bench import BenchConfig, RunFolder
from edge_adapt.bench.battery import PACED, run_battery
from edge_adapt.cli import main
from edge_adapt.models import load_default_models
from edge_adapt.settings import MeterSettings, ModelSettings, RunSettings


@pytest.fixture(scope="module")
def config() -> BenchConfig:
    models = load_default_models()
    run = RunSettings(ModelSettings(models.generator, models.prm, threads=2), meter=MeterSettings("estimate"))
    return BenchConfig(run, limit=12, question_seed=2)


class Stop(Exception):
    pass


def test_a_battery_is_paced_never_overspent_and_resumes(config: BenchConfig, tmp_path: Path) -> None:
    def stop_after_5(done: int, total: int) -> None:
        if done == 5:
            raise Stop
    with pytest.raises(Stop):
        run_battery(config, 12.0, tmp_path / "run", parallel=2, progress=stop_after_5)
    assert len(RunFolder(tmp_path / "run" / "paced").records()) == 5
    report = run_battery(config, 12.0, tmp_path / "run", parallel=2)
    records = RunFolder(tmp_path / "run" / "paced").records()
    assert sorted(r["question_id"] for r in records) == sorted({r["question_id"] for r in records})
    assert len(records) == 12
    assert all(r["strategy"] == PACED and r["price"] > 0 for r in records)
    assert report.spent_joules <= 12.0 * 1.05  # the battery is a promise (a last sample may run a little over)
    assert report.questions == 12
    assert report.correct == sum(r["correct"] for r in records)
    assert len({round(r["price"], 6) for r in records}) > 1  # the pacer moved the price
    saved = json.loads((tmp_path / "run" / "battery.json").read_text())
    assert saved["spent_joules"] == pytest.approx(report.spent_joules)
    assert saved["even_samples"] == report.even_samples
    if report.even_samples >= 1:
        assert report.even_correct is not None
        assert len(RunFolder(tmp_path / "run" / "even").records()) == 12


def test_the_battery_command_prints_both_plans(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["battery", "-o", str(tmp_path / "b"), "--joules", "40", "--limit", "6", "--meter",
                                       "estimate", "--threads", "2", "--parallel", "2"])
    assert result.exit_code == 0, result.output
    assert "paced to 40 J over 6 questions" in result.output
    assert "battery.json" in result.output
    again = CliRunner().invoke(main, ["battery", "-o", str(tmp_path / "b"), "--joules", "41", "--limit", "6", "--meter",
                                      "estimate", "--threads", "2"])
    assert again.exit_code != 0
    assert "battery_joules" in again.output  # another battery is another run
