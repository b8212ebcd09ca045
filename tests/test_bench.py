"""Benchmark runs on tiny real models: records appended as they go, an interrupted run resumed
into exactly the records of an uninterrupted one, summaries rebuilt from the records alone."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
from click.testing import CliRunner

from edge_adapt.bench import BenchConfig, RunFolder, RunFolderError, run_bench, stable_view, summarise
from edge_adapt.bench.summary import StrategySummary, savings
from edge_adapt.cli import main
from edge_adapt.generator import SamplingParams
from edge_adapt.settings import MeterSettings, ModelSettings, RunSettings

from model_factory import TINY_ARITHMETIC

STRATEGIES = ("best_of_n:n=3", "ias_best_of_n:n_max=4", "beam:n=4,width=2")


@pytest.fixture(scope="module")
def config(step_gguf, llama_prm) -> BenchConfig:
    run = RunSettings(ModelSettings(step_gguf, llama_prm.export.path, threads=2), sampling=SamplingParams(temperature=1.0),
                      max_steps=6, meter=MeterSettings("estimate"))
    return BenchConfig(run, task="tiny", strategies=STRATEGIES, seed=7)


@pytest.fixture(scope="module")
def problems():
    return TINY_ARITHMETIC.problems("test", 2)[:4]


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_to_the_same_records(config, problems, tmp_path) -> None:
    # one question at a time: searches batched with others can differ in the last bits of their logits
    whole = run_bench(config, tmp_path / "whole", task=TINY_ARITHMETIC, problems=problems, parallel=1)
    expected = whole.records()
    assert len(expected) == len(problems) * len(STRATEGIES)

    def stop_after_five(done: int, total: int, record: dict | None) -> None:
        if record is not None and done == 5:
            raise Interrupt  # what Ctrl-C does mid-run
    with pytest.raises(Interrupt):
        run_bench(config, tmp_path / "cut", stop_after_five, task=TINY_ARITHMETIC, problems=problems, parallel=1)
    cut = RunFolder(tmp_path / "cut")
    assert len(cut.records()) == 5
    # a power loss mid-write leaves a torn line: it is dropped, not fatal
    with open(cut.records_path, "a") as f:
        f.write('{"question_id": "test-L2-0000')
    seen = []
    run_bench(config, tmp_path / "cut", lambda done, total, record: seen.append(done), task=TINY_ARITHMETIC, problems=problems,
              parallel=1)
    assert seen[0] == 5  # resumed where it stopped
    resumed = cut.records()
    key = lambda r: (r["question_id"], r["strategy"])
    assert sorted(map(key, resumed)) == sorted(map(key, expected))
    assert sorted((stable_view(r) for r in resumed), key=key) == sorted((stable_view(r) for r in expected), key=key)
    # every record carries what a measurement run needs
    r = resumed[0]
    # "+busy" where other processes kept a core of this machine busy meanwhile
    assert r["cost"]["energy_source"] in ("estimate:cpu-time", "estimate:cpu-time+busy")
    assert r["cost"]["energy_estimated"] is True
    assert r["cost"]["joules"] > 0
    assert r["decisions"]
    assert set(r["question_quantiles"])
    assert "level" in r


def test_questions_run_in_parallel_resume_and_record_how_many_ran_at_once(config, problems, tmp_path) -> None:
    def stop_after_three(done: int, total: int, record: dict | None) -> None:
        if record is not None and done == 3:
            raise Interrupt
    with pytest.raises(Interrupt):
        run_bench(config, tmp_path / "par", stop_after_three, task=TINY_ARITHMETIC, problems=problems, parallel=3)
    folder = RunFolder(tmp_path / "par")
    assert len(folder.records()) == 3  # what finished is kept, what was in flight is not written
    run_bench(config, tmp_path / "par", task=TINY_ARITHMETIC, problems=problems, parallel=3)
    records = folder.records()
    keys = sorted((r["question_id"], r["strategy"]) for r in records)
    assert keys == sorted({(p.id, s) for p in problems for s in STRATEGIES})
    assert folder.environment()["parallel"] == {"searches": 3, "why": "--parallel"}
    assert all(r["cost"]["joules"] > 0 for r in records)


def test_a_folder_with_another_configuration_is_refused(config, problems, tmp_path) -> None:
    run_bench(config, tmp_path / "run", task=TINY_ARITHMETIC, problems=problems[:1])
    other = replace(config, seed=8)
    with pytest.raises(RunFolderError, match="seed"):
        run_bench(other, tmp_path / "run", task=TINY_ARITHMETIC, problems=problems[:1])
    # the same paths holding rebuilt models: refused too, not mixed into the run
    rebuilt = tmp_path / "prm"
    shutil.copytree(config.run.models.prm, rebuilt)
    at_rebuilt = replace(config, run=replace(config.run, models=replace(config.run.models, prm=rebuilt)))
    run_bench(at_rebuilt, tmp_path / "run2", task=TINY_ARITHMETIC, problems=problems[:1])
    (rebuilt / "prm_config.json").write_text((rebuilt / "prm_config.json").read_text().replace("{", "{ ", 1))
    with pytest.raises(RunFolderError, match="models_sha256"):
        run_bench(at_rebuilt, tmp_path / "run2", task=TINY_ARITHMETIC, problems=problems[:1])


def test_report_rebuilds_tables_and_plots_from_records(config, problems, tmp_path) -> None:
    folder = run_bench(config, tmp_path / "run", task=TINY_ARITHMETIC, problems=problems)
    summaries = summarise(folder.records())
    assert [s.strategy for s in summaries] == list(STRATEGIES)
    for s in summaries:
        assert s.questions == len(problems)
        assert 0 <= s.accuracy <= 1
        assert s.tokens_per_question > 0
        assert s.latency_p50_s <= s.latency_p95_s
        assert s.joules_per_question > 0
    result = CliRunner().invoke(main, ["report", str(folder.path)])
    assert result.exit_code == 0, result.output
    for name in ("summary.md", "summary.csv", "summary.json", "accuracy_vs_tokens.png", "accuracy_vs_joules.png",
                 "per_level.png", "reliability.png"):
        assert (folder.path / name).stat().st_size > 0, name
    md = (folder.path / "summary.md").read_text()
    assert "ias_best_of_n:n_max=4 vs best_of_n:n=3" in md
    assert "| strategy | L1 | L2 |" in md
    assert json.loads((folder.path / "summary.json").read_text())[0]["strategy"] == STRATEGIES[0]
    empty = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert empty.exit_code == 1
    assert "not a benchmark run folder" in " ".join(empty.output.split())


def _summary(strategy: str, accuracy: float, tokens: float) -> StrategySummary:
    return StrategySummary(strategy, 100, accuracy, tokens, tokens / accuracy, None, None, None, 0.1, 0.2, 1.0, None, 1.0)


def test_savings_compare_ias_with_each_fixed_budget_of_its_kind_and_early_stopping() -> None:
    lines = savings([
        _summary("best_of_n:n=16", 0.40, 800), _summary("best_of_n:n=32", 0.35, 1600),
        _summary("weighted:n=16", 0.55, 800), _summary("weighted:n=32+es", 0.56, 1200),
        _summary("ias_best_of_n:n_max=32", 0.42, 400), _summary("ias_weighted:n_max=32+es", 0.57, 600),
    ])
    assert lines == [
        "ias_best_of_n:n_max=32 vs best_of_n:n=32: 25% of the generated tokens, accuracy +7.0 points",
        "ias_best_of_n:n_max=32 vs best_of_n:n=16: 50% of the generated tokens, accuracy +2.0 points",
        "ias_weighted:n_max=32+es vs weighted:n=32+es: 50% of the generated tokens, accuracy +1.0 points",
    ]


def test_limit_spreads_over_every_level() -> None:
    from edge_adapt.bench.runner import spread
    from edge_adapt.tasks import Problem

    split = [Problem(f"q{i}", str(i), "0", level=1 + i // 84 if i < 420 else 6) for i in range(500)]  # 84 x 5 + 80
    chosen = spread(split, 150)
    counts = {lv: sum(p.level == lv for p in chosen) for lv in range(1, 7)}
    assert counts == dict.fromkeys(range(1, 7), 25)
    assert [p.id for p in chosen] == sorted((p.id for p in chosen), key=lambda x: int(x[1:]))  # original order
    assert len({p.id for p in chosen}) == 150
    small = spread([p for p in split if p.level != 6] + split[-3:], 30)  # a level with fewer than its share
    assert sum(p.level == 6 for p in small) == 3
    assert len(small) == 30
    assert spread(split[:10], 50) == split[:10]


def test_paired_comparison_counts_who_alone_was_right_with_a_sign_test() -> None:
    from edge_adapt.bench.paired import neighbours, paired, sign_test

    def record(strategy: str, q: int, correct: bool, tokens: int) -> dict:
        return {"question_id": f"q{q}", "strategy": strategy, "correct": correct, "cost": {"generated_tokens": tokens}}

    records = [record("adaptive_vote:price=8", q, q < 6, 50) for q in range(10)] + \
              [record("majority:n=4", q, q < 3 or q == 6, 100) for q in range(10)]
    result = paired(records, "adaptive_vote:price=8", "majority:n=4")
    assert (result.only_mine, result.only_other, result.questions) == (3, 1, 10)
    assert result.difference == pytest.approx(20.0)
    assert result.token_ratio == pytest.approx(0.5)
    assert result.p == pytest.approx(2 * 5 / 16) == sign_test(3, 1)
    assert result.low <= 20.0 <= result.high
    summaries = [_summary("adaptive_vote:price=8", 0.6, 50), _summary("majority:n=4", 0.4, 100)]
    assert [p.other for p in neighbours(records, summaries)] == ["majority:n=4"]
