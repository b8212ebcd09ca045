"""The shipped default models: where they are, and proof they are the files the manifest lists.

``models/manifest.json`` lists every shipped file with its sha256 and size, the training
settings and the measured metrics; it is written by the recipe (``edge-adapt export recipe``).
The folder is found through ``$EDGE_ADAPT_MODELS``, else ``models/`` next to the package in a
checkout.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_adapt.errors import ModelLoadError
from edge_adapt.prm.bundle import CONFIG_FILE as PRM_CONFIG

MANIFEST = "manifest.json"
ENV_VAR = "EDGE_ADAPT_MODELS"


def models_dir() -> Path:
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else Path(__file__).resolve().parent.parent / "models"


def sha256_of(path: str | os.PathLike[str]) -> str:
    """The file's sha256, hashed once per process while its size and modification time stay the same."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return _sha256(resolved, stat.st_size, stat.st_mtime_ns)


def prm_fingerprint(prm: Path) -> str:
    """The sha256 of a PRM folder's prm_config.json (its fitted numbers change with every rebuild)."""
    return sha256_of(prm / PRM_CONFIG)


@functools.lru_cache(maxsize=64)
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class DefaultModels:
    root: Path
    generator: Path  # the GGUF generator
    prm: Path  # the exported PRM folder
    manifest: dict[str, Any]

    def check_files(self) -> list[str]:
        """Problems with the shipped files (missing, wrong size, wrong hash); empty if all match."""
        problems = []
        for entry in self.manifest.get("files", []):
            path = self.root / entry["path"]
            if not path.is_file():
                problems.append(f"{entry['path']}: missing")
            elif path.stat().st_size != entry["size_bytes"]:
                problems.append(f"{entry['path']}: {path.stat().st_size} bytes, manifest says {entry['size_bytes']}")
            elif sha256_of(path) != entry["sha256"]:
                problems.append(f"{entry['path']}: sha256 differs from the manifest")
        return problems


def load_default_models(root: str | os.PathLike[str] | None = None, *, verify: bool = False) -> DefaultModels:
    """The default generator and PRM; ``verify`` also checks every file against the manifest."""
    folder = Path(root) if root is not None else models_dir()
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise ModelLoadError(
            f"{folder}: no {MANIFEST}, so no default models here. Rebuild them with "
            f"`edge-adapt export recipe --out {folder}`, set ${ENV_VAR}, or pass your own models."
        )
    try:
        manifest = json.loads(manifest_path.read_text())
        models = DefaultModels(
            root=folder,
            generator=folder / manifest["generator"]["file"],
            prm=folder / manifest["prm"]["dir"],
            manifest=manifest,
        )
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"{manifest_path}: malformed manifest ({exc}).") from exc
    if verify:
        problems = models.check_files()
        if problems:
            raise ModelLoadError(f"{folder}: the shipped models do not match {MANIFEST}: {'; '.join(problems)}.")
    return models
