"""The calibration file format and the Monte-Carlo rollout tool, on a real GGUF generator."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import pytest

from edge_adapt.errors import EdgeAdaptError
from edge_adapt.generator import SamplingParams
from edge_adapt_tools.prm.calibration_data import CalibrationRecord, CalibrationWriter, read_records
from edge_adapt_tools.prm.rollouts import RolloutSettings, build_calibration_set

from model_factory import TINY_ARITHMETIC

PROVENANCE = {"file": "g.gguf", "sha256": "abc", "temperature": 0.7}


def record(qid: str, prefix: tuple[str, ...] = (), n: int = 8, k: int = 3) -> CalibrationRecord:
    return CalibrationRecord(qid, "3+4", "7", prefix, n, k, generator=PROVENANCE)


def test_records_round_trip_and_resume_drops_a_half_written_question(tmp_path: Path) -> None:
    path = tmp_path / "calib.jsonl"
    writer = CalibrationWriter(path, PROVENANCE)
    writer.write_question([record("q1"), record("q1", ("3+4=7\n\n",), k=8)])
    writer.write_question([record("q2"), record("q2", ("3+4=8\n\n",), k=0), record("q2", ("3+4=8\n\n", "A:8"), n=1, k=0)])
    whole = path.read_bytes()
    assert [(r.question_id, r.question_lines) for r in read_records(path)] == [("q1", 2), ("q1", 2), ("q2", 3),
                                                                               ("q2", 3), ("q2", 3)]

    # power cut in the middle of q2: its first line made it, the second is torn
    lines = whole.split(b"\n")
    path.write_bytes(b"\n".join(lines[:3]) + b"\n" + lines[3][:10])
    with pytest.raises(EdgeAdaptError, match="incomplete"):
        read_records(path)
    resumed = CalibrationWriter(path, PROVENANCE)
    assert resumed.done == {"q1"}
    assert path.read_bytes() == b"\n".join(lines[:2]) + b"\n"  # q2's partial lines are gone

    # cut exactly at a line boundary: no torn line, but q2 is still incomplete
    path.write_bytes(b"\n".join(lines[:3]) + b"\n")
    assert CalibrationWriter(path, PROVENANCE).done == {"q1"}


def test_malformed_lines_and_other_settings_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "calib.jsonl"
    path.write_text(record("q1").to_json() + "\n{not json}\n" + record("q2").to_json() + "\n")
    with pytest.raises(EdgeAdaptError, match=r"calib.jsonl:2: not a calibration record"):
        read_records(path)
    path.write_text(record("q1").to_json() + "\n")
    with pytest.raises(EdgeAdaptError, match="other settings"):
        CalibrationWriter(path, {**PROVENANCE, "temperature": 1.0})
    with pytest.raises(ValueError):
        CalibrationRecord.from_dict({**record("q").__dict__, "n_correct": 9})
    with pytest.raises(ValueError, match="origin"):
        CalibrationRecord.from_dict({**record("q").__dict__, "origin": "continuation"})  # only whole solutions


def test_rollouts_measure_success_per_prefix(step_gguf: Path, tmp_path: Path) -> None:
    problems = TINY_ARITHMETIC.problems("calibration", 2)
    settings = RolloutSettings(n_solutions=6, n_continuations=4, sampling=SamplingParams(temperature=1.0), seed=3,
                               record_continuations=True)
    report = build_calibration_set(step_gguf, TINY_ARITHMETIC, problems, tmp_path / "c.jsonl", settings)
    assert report.questions == len(problems)
    assert report.resumed == 0
    assert report.generated_tokens > 0
    assert report.cut_by_context == 0
    assert report.prompt_tokens < 20 * len(problems)  # each question's prompt once, prefixes never re-evaluated
    records = read_records(tmp_path / "c.jsonl")
    assert report.records == len(records)
    by_q = {p.id: [r for r in records if r.question_id == p.id] for p in problems}
    for problem in problems:
        recs = by_q[problem.id]
        empty = [r for r in recs if not r.prefix]
        assert len(empty) == 1
        assert empty[0].n_rollouts == 6  # the N solutions are the question's rollouts
        complete = [r for r in recs if r.complete and r.origin == "sample"]
        assert sum(r.n_rollouts for r in complete) == 6
        assert sum(r.n_correct for r in complete) == empty[0].n_correct
        continued = [r for r in recs if r.origin == "continuation"]
        for r in complete + continued:  # a whole solution is graded as it stands
            assert r.complete
            assert r.n_correct in (0, r.n_rollouts)
            assert (r.n_correct > 0) == TINY_ARITHMETIC.is_correct("".join(r.prefix), problem)
        partial = [r for r in recs if r.prefix and not r.complete]
        assert partial
        assert all(r.n_rollouts == 4 for r in partial)
        # every continuation that is not one of the sampled solutions is kept, once
        assert continued
        assert sum(r.n_rollouts for r in continued) <= 4 * len(partial)
        assert not {r.prefix for r in continued} & {r.prefix for r in complete}
        assert all(any(r.prefix[: len(p.prefix)] == p.prefix for p in partial) for r in continued)
        assert len({r.prefix for r in recs}) == len(recs)  # distinct prefixes only
        assert all(r.prefix[-1].endswith("\n\n") for r in partial)
        assert all(r.generator["sha256"] == recs[0].generator["sha256"] for r in recs)
    assert Counter(r.level for r in records if not r.prefix) == Counter(p.level for p in problems)


def test_an_interrupted_run_resumes_to_the_same_file(step_gguf: Path, tmp_path: Path) -> None:
    problems = TINY_ARITHMETIC.problems("calibration", 1)
    settings = RolloutSettings(n_solutions=4, n_continuations=3, seed=7)
    whole = tmp_path / "whole.jsonl"
    build_calibration_set(step_gguf, TINY_ARITHMETIC, problems, whole, settings)
    assert {r.origin for r in read_records(whole)} == {"sample"}  # continuations are only counted by default

    interrupted = tmp_path / "interrupted.jsonl"
    build_calibration_set(step_gguf, TINY_ARITHMETIC, problems[:2], interrupted, settings)
    text = interrupted.read_bytes()
    interrupted.write_bytes(text[: len(text) - 40])  # the last question is cut mid-line
    report = build_calibration_set(step_gguf, TINY_ARITHMETIC, problems, interrupted, settings)
    assert report.resumed == 1
    assert report.questions == len(problems) - 1
    assert interrupted.read_bytes() == whole.read_bytes()

    with pytest.raises(EdgeAdaptError, match="other settings"):
        build_calibration_set(step_gguf, TINY_ARITHMETIC, problems, whole, RolloutSettings(seed=8))
    with pytest.raises(EdgeAdaptError, match="other settings"):  # a file without continuations is another file
        build_calibration_set(step_gguf, TINY_ARITHMETIC, problems, whole,
                              dataclasses.replace(settings, record_continuations=True))
