"""A run folder under abuse: killed at random moments, written by two processes at once, resumed
after its data file was edited, or handed a symbolic link. Nothing is lost, nothing duplicated,
nothing outside the folder touched."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from edge_adapt.bench import BenchConfig, RunFolder, RunFolderError, run_bench, stable_view
from edge_adapt.settings import MeterSettings, ModelSettings, RunSettings

# the shipped default models: a real bench through the real CLI in a few seconds
# one question at a time: the records of a resumed run equal an uninterrupted one's exactly
ARGS = ["--limit", "12", "-s", "best_of_n:n=4", "-s", "majority:n=4", "--meter", "estimate", "--threads", "1", "--no-plots",
        "--parallel", "1"]
EXPECTED = 24


def bench(out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "edge_adapt.cli", "bench", "-o", str(out), *ARGS],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(out: Path) -> list[dict]:
    proc = bench(out)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return RunFolder(out).records()


def by_key(records: list[dict]) -> dict[tuple[str, str], dict]:
    return {(r["question_id"], r["strategy"]): stable_view(r) for r in records}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], dict]:
    records = finished(tmp_path_factory.mktemp("reference") / "run")
    assert len(records) == EXPECTED
    return by_key(records)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_sigkill_at_a_random_moment_loses_and_duplicates_nothing(seed: int, reference, tmp_path: Path) -> None:
    out = tmp_path / "run"
    rng = random.Random(seed)
    after = rng.randint(0, EXPECTED - 2)  # records written before the kill (0: while loading the models)
    proc = bench(out)
    records = out / "records.jsonl"
    deadline = time.monotonic() + 120
    if after == 0:
        time.sleep(rng.uniform(0.2, 1.0))
    while after and time.monotonic() < deadline and proc.poll() is None:
        if records.is_file() and records.read_bytes().count(b"\n") >= after:
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = records.read_bytes().count(b"\n") if records.is_file() else 0
    assert written < EXPECTED, "the run finished before it was killed"
    resumed = finished(out)
    assert by_key(resumed) == reference
    lines = [line for line in (out / "records.jsonl").read_text().splitlines() if line.strip()]
    assert len(lines) == EXPECTED  # no torn line left, no record written twice


def test_a_second_bench_on_the_same_folder_is_refused_while_the_first_writes(reference, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = bench(out)
    deadline = time.monotonic() + 60
    while not ((out / "records.jsonl").is_file() and (out / "records.jsonl").stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.05)
    second = subprocess.run([sys.executable, "-m", "edge_adapt.cli", "bench", "-o", str(out), *ARGS],
                            capture_output=True, text=True, timeout=120)
    first_err = first.communicate(timeout=300)[1]
    assert first.returncode == 0, first_err
    said = " ".join(second.stderr.split())
    assert second.returncode == 1, said
    assert "is being written by edge-adapt bench (pid" in said, said
    assert by_key(RunFolder(out).records()) == reference
    assert len((out / "records.jsonl").read_text().splitlines()) == EXPECTED


@pytest.fixture(scope="module")
def tiny_config(step_gguf, llama_prm) -> BenchConfig:
    run = RunSettings(ModelSettings(step_gguf, llama_prm.export.path, threads=2), max_steps=1, meter=MeterSettings("estimate"))
    return BenchConfig(run, task="gsm8k", strategies=("best_of_n:n=1",), limit=2, seed=0)


def test_a_resume_after_the_data_file_changed_is_refused(tiny_config: BenchConfig, tmp_path: Path) -> None:
    data = tmp_path / "gsm.jsonl"
    rows = [{"question": f"{a}+{a}?", "answer": f"#### {2 * a}"} for a in (3, 4)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = replace(tiny_config, data=str(data))
    run_bench(config, tmp_path / "run")
    rows[1]["answer"] = "#### 9"  # the file is edited: its old records no longer hold
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(RunFolderError, match="data_sha256"):
        run_bench(config, tmp_path / "run")


def test_a_symlinked_records_file_is_refused_and_its_target_untouched(tiny_config: BenchConfig, tmp_path: Path) -> None:
    data = tmp_path / "gsm.jsonl"
    data.write_text(json.dumps({"question": "2+2?", "answer": "#### 4"}) + "\n")
    config = replace(tiny_config, data=str(data))
    outside = tmp_path / "precious.txt"
    outside.write_text("the user's own file\n")
    run = tmp_path / "run"
    run.mkdir()
    os.symlink(outside, run / "records.jsonl")
    with pytest.raises(RunFolderError, match="symbolic link"):
        run_bench(config, run)
    assert outside.read_text() == "the user's own file\n"


def test_records_read_twice_count_once(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run")
    folder.open({"task": "x"}, {})
    record = {"question_id": "q", "strategy": "s", "correct": True, "candidates": 1, "candidates_correct": 1,
              "question_quantiles": [0.1, 0.5, 0.9], "decisions": [],
              "cost": {"generated_tokens": 1, "prm_tokens": 1, "prm_calls": 1, "samples": 1, "wall_s": 0.1, "prm_s": 0.0}}
    folder.append(record)
    folder.append({**record, "correct": False})  # what a second writer would have added
    folder.close()
    assert [r["correct"] for r in folder.records()] == [True]
