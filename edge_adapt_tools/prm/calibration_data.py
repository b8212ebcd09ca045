"""The calibration dataset: Monte-Carlo success rates of reasoning prefixes, as JSONL.

One line per (question, prefix); every line is self-contained::

    {"question_id": "calibration-L2-00003", "question": "93+42*5", "answer": "675", "level": 2,
     "prefix": ["93+42=135\\n\\n"], "complete": false, "n_rollouts": 8, "n_correct": 5,
     "generator": {"file": "gen-Q4_K_M.gguf", "sha256": "...", "temperature": 0.7, "top_p": 1.0,
                   "top_k": 0, "seed": 0, "task": "arithmetic"}}

- ``prefix``: the first steps of a sampled solution, each with its delimiter as generated; the
  empty prefix is the question alone (its rate is the question-level success probability).
- ``n_correct / n_rollouts``: the fraction of the generator's continuations from that prefix that
  reached the right answer. For the empty prefix the rollouts are the N sampled solutions; for a
  partial prefix, M fresh continuations; a ``complete`` prefix is a whole solution, graded as it
  stands (``n_rollouts`` counts the sampled solutions that were identical to it).
- ``origin``: ``"sample"`` for the records above; ``"continuation"`` for a whole solution that one
  of the M continuations produced (distinct ones only, none equal to a sampled solution), graded
  exactly like a complete sampled one. They are extra training labels for the PRM; calibration
  is measured on the ``"sample"`` records, as the paper defines it.
- ``generator``: provenance, identical on every line of a file (a run refuses to append to a file
  built with another generator or other settings).
- ``question_lines``: how many lines the question has; a question's lines are written together and
  flushed, and on resume a trailing question with missing or torn lines is dropped and redone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_adapt.errors import EdgeAdaptError

log = logging.getLogger(__name__)

ORIGINS = ("sample", "continuation")


@dataclass(frozen=True)
class CalibrationRecord:
    question_id: str
    question: str
    answer: str
    prefix: tuple[str, ...]
    n_rollouts: int
    n_correct: int
    complete: bool = False
    level: int | None = None
    generator: dict[str, Any] = field(default_factory=dict)
    question_lines: int = 1  # lines this question has in the file: resume detects a half-written question
    # "sample": a point of one of the N sampled solutions (the calibration set proper);
    # "continuation": a whole solution one of the M continuations of a prefix produced
    origin: str = "sample"

    @property
    def success_rate(self) -> float:
        return self.n_correct / self.n_rollouts

    def to_json(self) -> str:
        data = asdict(self)
        data["prefix"] = list(self.prefix)
        return json.dumps(data, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CalibrationRecord:
        record = cls(
            question_id=str(data["question_id"]),
            question=str(data["question"]),
            answer=str(data["answer"]),
            prefix=tuple(data["prefix"]),
            n_rollouts=int(data["n_rollouts"]),
            n_correct=int(data["n_correct"]),
            complete=bool(data.get("complete", False)),
            level=data.get("level"),
            generator=dict(data.get("generator") or {}),
            question_lines=int(data.get("question_lines", 1)),
            origin=str(data.get("origin", "sample")),
        )
        if record.n_rollouts < 1 or not 0 <= record.n_correct <= record.n_rollouts:
            raise ValueError(f"n_correct={record.n_correct} / n_rollouts={record.n_rollouts} is not a success count")
        if record.origin not in ORIGINS or (record.origin == "continuation" and not record.complete):
            raise ValueError(f"origin {record.origin!r} is not one of {ORIGINS} (a continuation is a complete solution)")
        return record


def read_records(path: str | os.PathLike[str]) -> list[CalibrationRecord]:
    """Every record of a file; a malformed line is an error naming its line number."""
    records, torn_at = _parse(Path(path))
    if torn_at is not None:
        raise EdgeAdaptError(f"{path}: the last line is incomplete (an interrupted run); resume the run to repair it")
    return records


def _parse(path: Path) -> tuple[list[CalibrationRecord], int | None]:
    """Whole questions' records, and the byte offset where an incomplete trailing question
    (torn line, or fewer lines than ``question_lines``) starts; None if the file ends cleanly."""
    data = path.read_bytes()
    parsed: list[tuple[int, CalibrationRecord]] = []
    lines = data.split(b"\n")
    offset = 0
    for i, line in enumerate(lines, start=1):
        start, offset = offset, offset + len(line) + 1
        if not line.strip():
            continue
        try:
            parsed.append((start, CalibrationRecord.from_dict(json.loads(line))))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
            if all(not rest.strip() for rest in lines[i:]):
                return _drop_trailing_group(parsed, torn_at=start)
            raise EdgeAdaptError(f"{path}:{i}: not a calibration record ({exc})") from exc
    return _drop_trailing_group(parsed, torn_at=None)


def _drop_trailing_group(
    parsed: list[tuple[int, CalibrationRecord]], torn_at: int | None
) -> tuple[list[CalibrationRecord], int | None]:
    if not parsed:
        return [], torn_at
    last_id = parsed[-1][1].question_id
    group = [(o, r) for o, r in parsed if r.question_id == last_id]
    if len(group) == group[0][1].question_lines:
        return [r for _, r in parsed], torn_at  # the last question is whole; at most a torn line follows
    cut = group[0][0]
    return [r for o, r in parsed if o < cut], cut


@contextlib.contextmanager
def writing_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """The one writer of a calibration file: an exclusive lock on ``<file>.lock`` while it writes
    (released by the system if the process dies)."""
    path = Path(path)
    if path.is_dir():
        raise EdgeAdaptError(f"{path} is a folder; give the calibration file's path (a .jsonl file)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as exc:
        raise EdgeAdaptError(f"cannot write the calibration file {path}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EdgeAdaptError(f"{path} is being written by another process; wait for it, or write another file") from None
        yield
    finally:
        os.close(fd)


def recorded_questions(path: str | os.PathLike[str]) -> set[str]:
    """The questions a calibration file holds whole (what a resumed run skips)."""
    path = Path(path)
    return {r.question_id for r in _parse(path)[0]} if path.is_file() else set()


class CalibrationWriter:
    """Appends questions' records to a JSONL file, resuming a previous run of the same settings
    (hold :func:`writing_lock` while writing)."""

    def __init__(self, path: str | os.PathLike[str], generator: dict[str, Any]) -> None:
        self.path = Path(path)
        self.generator = generator
        self.done: set[str] = set()
        if self.path.is_dir():
            raise EdgeAdaptError(f"{self.path} is a folder; give the calibration file's path (a .jsonl file)")
        if not self.path.exists():
            try:  # created now, so that a path that cannot be written fails before any rollout
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.path.touch()
            except OSError as exc:
                raise EdgeAdaptError(f"cannot write the calibration file {self.path}: {exc.strerror or exc}") from None
            return
        records, torn_at = _parse(self.path)
        for record in records:
            if record.generator != generator:
                raise EdgeAdaptError(
                    f"{self.path} was built with other settings ({record.generator}); "
                    "write to a new file, or resume with the same generator and sampling settings."
                )
            self.done.add(record.question_id)
        if torn_at is not None:
            log.warning("%s: dropping the half-written last question of an interrupted run", self.path)
            with open(self.path, "r+b") as f:
                f.truncate(torn_at)

    def write_question(self, records: Iterable[CalibrationRecord]) -> None:
        """Append one question's records in a single write, flushed to disk."""
        records = list(records)
        records = [dataclasses.replace(r, question_lines=len(records)) for r in records]
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(r.to_json() + "\n" for r in records))
            f.flush()
            os.fsync(f.fileno())
        self.done.update(r.question_id for r in records)
