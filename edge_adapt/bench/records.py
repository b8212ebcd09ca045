"""A benchmark run folder: its configuration, and one JSONL record per (question, strategy).

Records are appended one line at a time, flushed and fsynced, so a Ctrl-C or a power loss
loses at most the record being written; a torn last line is dropped (and the file repaired)
when the run is opened again. The configuration is written once, atomically; reopening a
folder with a different configuration is an error rather than a silent mix of two runs.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edge_adapt.errors import EdgeAdaptError
from edge_adapt.files import atomic_write_text

log = logging.getLogger(__name__)

CONFIG = "config.json"
ENVIRONMENT = "environment.json"
RECORDS = "records.jsonl"

# What a record holds that differs between two runs of the same configuration and seed: time
# and energy. Everything else (answers, candidates, decisions, token counts) must match.
VOLATILE_COST_FIELDS = ("wall_s", "generation_s", "prm_s", "joules")


class RunFolderError(EdgeAdaptError):
    """The run folder cannot be used as asked (a different configuration, unreadable records)."""


class RunFolder:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @property
    def records_path(self) -> Path:
        return self.path / RECORDS

    def config(self) -> dict[str, Any]:
        file = self.path / CONFIG
        if not file.is_file():
            raise RunFolderError(f"{self.path}: not a benchmark run folder (no {CONFIG}); run `edge-adapt bench` first")
        return json.loads(file.read_text())

    def open(self, config: dict[str, Any], environment: dict[str, Any]) -> set[tuple[str, str]]:
        """Create the folder, or check it holds the same run; returns the (question, strategy)
        pairs already recorded, so a resumed run skips them."""
        self.path.mkdir(parents=True, exist_ok=True)
        file = self.path / CONFIG
        if file.is_file():
            existing = json.loads(file.read_text())
            if existing != config:
                changed = sorted(k for k in set(existing) | set(config) if existing.get(k) != config.get(k))
                raise RunFolderError(
                    f"{self.path} holds a run with a different configuration ({', '.join(changed)} differ); "
                    "resume it with the same options, or give a new --out folder"
                )
        else:
            atomic_write_text(file, json.dumps(config, indent=2, sort_keys=True) + "\n")
        atomic_write_text(self.path / ENVIRONMENT, json.dumps(environment, indent=2, default=str) + "\n")
        return {(r["question_id"], r["strategy"]) for r in self.records()}

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, default=str, sort_keys=True)
        with open(self.records_path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def records(self) -> list[dict[str, Any]]:
        """Every complete record; a torn last line (an interrupted write) is dropped and cut off."""
        if not self.records_path.is_file():
            return []
        raw = self.records_path.read_bytes()
        lines = raw.split(b"\n")
        records, good_bytes = [], 0
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                good_bytes += len(line) + 1
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                if number >= len(lines) - 1:  # the last line: a write cut short
                    log.warning("%s: dropping a torn last record (line %d)", self.records_path, number)
                    with open(self.records_path, "r+b") as f:
                        f.truncate(good_bytes)
                    break
                raise RunFolderError(f"{self.records_path}:{number}: not a JSON record ({exc}); fix or remove that line") from exc
            good_bytes += len(line) + 1
        return records

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records())


def stable_view(record: dict[str, Any]) -> dict[str, Any]:
    """A record without the fields that legitimately differ between identical runs."""
    out = dict(record)
    out["cost"] = {k: v for k, v in record.get("cost", {}).items() if k not in VOLATILE_COST_FIELDS}
    return out
