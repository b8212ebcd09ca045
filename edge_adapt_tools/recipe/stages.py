"""The recipe's stages: each runs once and is stamped with its settings (a rerun skips a stage
whose stamp matches), or is taken from models a recipe shipped before (``--from-shipped``)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_adapt.errors import EdgeAdaptError
from edge_adapt.files import atomic_write_text
from edge_adapt.models import MANIFEST, sha256_of
from edge_adapt.tasks import ArithmeticTask
from edge_adapt_tools.prm.calibration_data import read_records

if TYPE_CHECKING:
    from edge_adapt_tools.recipe.build import RecipeSettings

GENERATOR_FILE = "generator-{quant}.gguf"
PRM_DIR = "prm"
CALIBRATION_FILE = "calibration.jsonl"



def stamp(settings: Any) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Stages:
    """Runs stages once: a stage whose stamp matches its settings is skipped on a rerun."""

    def __init__(self, work: Path, log: Callable[[str], None]) -> None:
        self.work = work
        self.log = log
        self.seconds: dict[str, float] = {}
        self.taken: list[str] = []  # stages whose results came from shipped models (their times are that build's)

    def run(self, name: str, settings: Any, body: Callable[[], Any]) -> Any:
        stamp_file = self.work / f"{name}.done.json"
        key = stamp(settings)
        if stamp_file.is_file():
            done = json.loads(stamp_file.read_text())
            if done.get("stamp") == key:
                self.log(f"stage {name}: done in an earlier run ({done['seconds']:.0f}s), skipped")
                self.seconds[name] = done["seconds"]
                if done.get("from_shipped"):
                    self.taken.append(name)
                return done.get("result")
        started = time.perf_counter()
        self.log(f"stage {name}: started")
        result = body()
        seconds = time.perf_counter() - started
        atomic_write_text(stamp_file, json.dumps({"stamp": key, "seconds": seconds, "result": result}, default=str))
        self.seconds[name] = seconds
        self.log(f"stage {name}: {seconds:.0f}s")
        return result

    def record(self, name: str, settings: Any, result: Any, seconds: float) -> None:
        """Mark a stage done with a result obtained elsewhere (the shipped models)."""
        payload = {"stamp": stamp(settings), "seconds": seconds, "result": result, "from_shipped": True}
        atomic_write_text(self.work / f"{name}.done.json", json.dumps(payload, default=str))


# generator settings added after the first manifests, with the behaviour those manifests had
_GENERATOR_SETTINGS_BEFORE_THEY_EXISTED: dict[str, Any] = {"level_weights": None, "bf16": False}


def task_levels(task: ArithmeticTask) -> list[dict[str, int]]:
    return [dataclasses.asdict(level) for level in task.levels]


def stage_keys(settings: RecipeSettings, training: Any = None, exported: Any = None) -> dict[str, Any]:
    """What each of the first stages is stamped with (a stage reruns when its key changes)."""
    return {
        # the task's levels too: changing them must retrain the generator in an existing work dir
        "1-train-generator": [settings.seed, dataclasses.asdict(settings.generator), task_levels(ArithmeticTask())],
        "2-export-generator": [training, settings.quant],
        "3-rollouts": [exported["sha256"] if exported else None, settings.calibration_per_level,
                       dataclasses.asdict(settings.rollouts), settings.seed],
    }


def take_shipped_stages(out: Path, work: Path, settings: RecipeSettings, stages: Stages) -> None:
    """Stamp stages 1-3 done from ``out``'s manifest after checking that the shipped generator and
    calibration set are the ones it describes and were built with these settings."""
    manifest_file = out / MANIFEST
    if not manifest_file.is_file():
        raise EdgeAdaptError(f"{manifest_file}: missing; --from-shipped rebuilds on models that a recipe wrote.")
    manifest = json.loads(manifest_file.read_text())
    gen, trained = manifest["generator"], dict(manifest["generator"]["training"])
    final_loss, seconds = trained.pop("final_loss"), trained.pop("seconds")
    # a manifest written before a setting existed was built with that setting's value of the time
    # (not today's default); both sides go through JSON so tuples compare as the manifest holds them
    trained = json.loads(json.dumps({**_GENERATOR_SETTINGS_BEFORE_THEY_EXISTED, **trained}))
    wanted = json.loads(json.dumps(dataclasses.asdict(settings.generator)))
    if (manifest["recipe"]["seed"] != settings.seed or gen["quantization"] != settings.quant or trained != wanted
            or manifest["task"]["levels"] != task_levels(ArithmeticTask())):
        raise EdgeAdaptError(f"{manifest_file}: the shipped generator was built with other settings (seed, quantization, "
                             "training or the task's levels); run the whole recipe instead of --from-shipped.")
    shipped = {f["path"]: f["sha256"] for f in manifest["files"]}
    for name in (gen["file"], CALIBRATION_FILE, f"{PRM_DIR}/tokenizer.json"):
        if not (out / name).is_file() or sha256_of(out / name) != shipped.get(name):
            raise EdgeAdaptError(f"{out / name}: missing or changed since the manifest was written; cannot build on it.")
    calib = manifest["calibration"]
    provenance = read_records(out / CALIBRATION_FILE)[0].generator
    if (calib["n_solutions"], calib["n_continuations"], calib["questions"], provenance.get("record_continuations", False)) != (
            settings.rollouts.n_solutions, settings.rollouts.n_continuations,
            settings.calibration_per_level * len(manifest["task"]["levels"]), settings.rollouts.record_continuations):
        raise EdgeAdaptError(f"{out / CALIBRATION_FILE}: rolled out with other settings (solutions, continuations, questions, "
                             "or whether continuations were kept); run the whole recipe instead.")
    shutil.copy(out / CALIBRATION_FILE, work / CALIBRATION_FILE)
    shutil.copy(out / PRM_DIR / "tokenizer.json", work / "tokenizer.json")
    training = {"steps": trained["steps"], "n_params": gen["n_params"], "final_loss": final_loss, "seconds": seconds,
                "settings": trained}
    keys = stage_keys(settings, training, gen["export"])
    took = manifest["recipe"]["stage_seconds"]
    stages.record("1-train-generator", keys["1-train-generator"], training, took["1-train-generator"])
    stages.record("2-export-generator", keys["2-export-generator"], gen["export"], took["2-export-generator"])
    stages.record("3-rollouts", keys["3-rollouts"], calib["rollouts"], took["3-rollouts"])
    stages.log(f"stages 1-3 taken from the shipped models in {out} (generator {gen['export']['sha256'][:12]}...)")
