"""A benchmark run folder: its configuration, and one JSONL record per (question, strategy).

Records are appended one line at a time, flushed and fsynced, so a Ctrl-C or a power loss
loses at most the record being written; a torn last line is left out when records are read, and
cut off the file when the run is resumed. The configuration (options, the sha256 of the models
and of the data file, the meter) is written once, atomically; reopening a folder with a different
one is an error rather than a silent mix of two runs. One process writes a run at a time (a lock),
never through a symbolic link; a record read twice counts once.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edge_adapt.energy.meters import BUSY_LABEL
from edge_adapt.errors import EdgeAdaptError
from edge_adapt.files import atomic_write_text

log = logging.getLogger(__name__)

CONFIG = "config.json"
ENVIRONMENT = "environment.json"
RECORDS = "records.jsonl"
LOCK = ".lock"  # held (flock) by the process writing the run

# What a record holds that differs between two runs of the same configuration and seed: time
# and energy. Everything else (answers, candidates, decisions, token counts) must match.
VOLATILE_COST_FIELDS = ("wall_s", "generation_s", "prm_s", "joules")


class RunFolderError(EdgeAdaptError):
    """The run folder cannot be used as asked (a different configuration, unreadable records)."""


# What every record must hold for the summary and for resuming.
RECORD_FIELDS: dict[str, type | tuple[type, ...]] = {
    "question_id": str, "strategy": str, "correct": bool, "cost": dict, "decisions": list, "candidates": int,
    "candidates_correct": int, "question_quantiles": (list, type(None)),  # None: run without a PRM
}
COST_FIELDS = ("generated_tokens", "prm_tokens", "prm_calls", "samples", "wall_s", "prm_s")


class RunFolder:
    """A run folder. Writing (:meth:`open`, :meth:`append`, :meth:`close`) holds an exclusive lock,
    so two processes never write one run; reading (:meth:`records`) never changes a file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock: int | None = None

    @property
    def records_path(self) -> Path:
        return self.path / RECORDS

    def config(self) -> dict[str, Any]:
        file = self.path / CONFIG
        if not file.is_file():
            raise RunFolderError(f"{self.path}: not a benchmark run folder (no {CONFIG}); run `edge-adapt bench` first")
        return _read_json_object(file)

    def lock(self) -> set[tuple[str, str]]:
        """Create the folder if needed, take the writing lock, and return the (question, strategy)
        pairs already recorded (a torn last record cut off)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise RunFolderError(f"{self.path} exists and is not a folder; give --out a folder") from None
        except OSError as exc:
            raise RunFolderError(f"cannot create the run folder {self.path}: {exc.strerror or exc}") from None
        for name in (CONFIG, ENVIRONMENT, RECORDS, LOCK):
            if (self.path / name).is_symlink():
                raise RunFolderError(f"{self.path / name} is a symbolic link; a run folder's files must be its own "
                                     "(remove the link or use another --out folder)")
        self._acquire_lock()
        return {(r["question_id"], r["strategy"]) for r in self.records(repair=True)}

    def open(self, config: dict[str, Any], environment: dict[str, Any]) -> set[tuple[str, str]]:
        """Lock the folder for writing, create it or check it holds the same run, and return the
        (question, strategy) pairs already recorded, so a resumed run skips them."""
        done = self.lock()
        file = self.path / CONFIG
        if file.is_file():
            existing = _read_json_object(file)
            if existing != config:
                changed = sorted(k for k in set(existing) | set(config) if existing.get(k) != config.get(k))
                self.close()
                raise RunFolderError(
                    f"{self.path} holds a run with a different configuration ({', '.join(changed)} differ); "
                    "resume it with the same options, models, data and meter, or give a new --out folder"
                )
        else:
            atomic_write_text(file, json.dumps(config, indent=2, sort_keys=True) + "\n")
        self.write_environment(environment)
        return done

    def environment(self) -> dict[str, Any]:
        file = self.path / ENVIRONMENT
        return _read_json_object(file) if file.is_file() else {}

    def write_environment(self, environment: dict[str, Any]) -> None:
        """Where the run ran (replaced atomically; a cluster run adds its workers' throughput)."""
        atomic_write_text(self.path / ENVIRONMENT, json.dumps(environment, indent=2, default=str) + "\n")

    def append(self, record: dict[str, Any]) -> None:
        """One record, appended and fsynced (never through a symbolic link)."""
        if self._lock is None:
            raise RunFolderError(f"{self.path}: open the run folder before appending to it")
        line = json.dumps(record, default=str, sort_keys=True)
        fd = os.open(self.records_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def close(self) -> None:
        """Release the writing lock (also released by the system when the process dies)."""
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            os.close(self._lock)
            self._lock = None

    def records(self, *, repair: bool = False) -> list[dict[str, Any]]:
        """Every complete record, once per (question, strategy). A torn last line (an interrupted
        write) is left out, and cut off the file only with ``repair`` (by the run that resumes)."""
        if not self.records_path.is_file():
            return []
        raw = self.records_path.read_bytes()
        lines = raw.split(b"\n")
        records: list[dict[str, Any]] = []
        seen: set[tuple[str, str]] = set()
        good_bytes = 0
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                good_bytes += len(line) + 1
                continue
            try:
                record = json.loads(line)
            except (ValueError, RecursionError) as exc:  # JSON or UTF-8
                if number >= len(lines) - 1:  # the last line: a write cut short
                    log.warning("%s: %s a torn last record (line %d)", self.records_path,
                                "cutting off" if repair else "leaving out", number)
                    if repair:
                        with open(self.records_path, "r+b") as f:
                            f.truncate(good_bytes)
                    break
                raise RunFolderError(f"{self.records_path}:{number}: not a JSON record ({exc}); fix or remove that line") from exc
            _check_shape(record, f"{self.records_path}:{number}")
            key = (record["question_id"], record["strategy"])
            if key in seen:
                log.warning("%s:%d: a second record of question %s with %s, left out", self.records_path, number, *key)
            else:
                seen.add(key)
                records.append(record)
            good_bytes += len(line) + 1
        return records

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records())

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _acquire_lock(self) -> None:
        if self._lock is not None:
            return
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunFolderError(f"{self.path} is being written by {holder}; wait for it to finish, or give another "
                                 "--out folder") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"edge-adapt bench (pid {os.getpid()})".encode())
        self._lock = fd


def _read_json_object(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:
        raise RunFolderError(f"{file}: not a readable JSON file ({exc}); restore it, or start a new run folder") from None
    if not isinstance(data, dict):
        raise RunFolderError(f"{file}: not a run configuration (a JSON object); restore it, or start a new run folder")
    return data


def _check_shape(record: Any, where: str) -> None:
    if not isinstance(record, dict):
        raise RunFolderError(f"{where}: not a benchmark record (a JSON object); fix or remove that line")
    wrong = [k for k, kind in RECORD_FIELDS.items() if not isinstance(record.get(k), kind)]
    if isinstance(record.get("cost"), dict):
        wrong += [f"cost.{k}" for k in COST_FIELDS
                  if isinstance(record["cost"].get(k), bool) or not isinstance(record["cost"].get(k), (int, float))]
    if wrong:
        raise RunFolderError(f"{where}: not a benchmark record ({', '.join(wrong)} missing or of the wrong type); "
                             "fix or remove that line")


def stable_view(record: dict[str, Any]) -> dict[str, Any]:
    """A record without the fields that legitimately differ between identical runs."""
    out = dict(record)
    out["cost"] = {k: v for k, v in record.get("cost", {}).items() if k not in VOLATILE_COST_FIELDS}
    if isinstance(source := out["cost"].get("energy_source"), str):  # whether the machine was busy meanwhile varies
        out["cost"]["energy_source"] = source.removesuffix(BUSY_LABEL)
    return out
