"""An exported quantile PRM folder: everything the device needs, described by ``prm_config.json``.

::

    my-prm/
      prm_config.json      quantile levels, input format, model variants, provenance, metrics
      tokenizer.json       read with the `tokenizers` library (no transformers on the device)
      model.onnx           fp32; token-classification logits [batch, sequence, n_quantiles]
      model_int8.onnx      optional: dynamic int8, shipped only if it passed the calibration check
      model_fp16.onnx      optional: for GPU providers
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_adapt.errors import EdgeAdaptError, ModelLoadError
from edge_adapt.files import atomic_write_text
from edge_adapt.prm.format import PRMFormat

CONFIG_FILE = "prm_config.json"
TOKENIZER_FILE = "tokenizer.json"
BUNDLE_VERSION = 1
VARIANTS = ("fp32", "int8", "fp16")


@dataclass(frozen=True)
class PRMBundle:
    path: Path
    quantile_levels: tuple[float, ...]
    format: PRMFormat
    models: dict[str, str]  # variant -> file name in the folder
    cpu_variant: str = "fp32"  # what runs on CPU: "int8" only when it passed the calibration check
    generator: dict[str, Any] = field(default_factory=dict)  # the generator it was calibrated for
    source: dict[str, Any] = field(default_factory=dict)  # backbone / base PRM it was built from
    metrics: dict[str, Any] = field(default_factory=dict)  # held-out calibration report

    def model_path(self, variant: str) -> Path:
        return self.path / self.models[variant]

    @property
    def tokenizer_path(self) -> Path:
        return self.path / TOKENIZER_FILE

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PRMBundle:
        root = Path(path)
        if not root.is_dir():
            raise ModelLoadError(
                f"{root}: not a PRM folder (expected a directory with {CONFIG_FILE}, {TOKENIZER_FILE} and model.onnx)."
            )
        config_path = root / CONFIG_FILE
        if not config_path.is_file():
            raise ModelLoadError(f"{root}: no {CONFIG_FILE}; export the PRM with `edge-adapt export prm`.")
        try:
            data = json.loads(config_path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise TypeError("not a JSON object")
            levels = tuple(float(q) for q in data["quantile_levels"])
            if not isinstance(data["models"], dict):
                raise TypeError("'models' must map variants to file names")
            models = {str(k): str(v) for k, v in data["models"].items()}
            bundle = cls(
                path=root,
                quantile_levels=levels,
                format=PRMFormat.from_dict(data.get("format", {})),
                models=models,
                cpu_variant=str(data.get("cpu_variant", "fp32")),
                generator=dict(data.get("generator") or {}),
                source=dict(data.get("source") or {}),
                metrics=dict(data.get("metrics") or {}),
            )
        except (KeyError, TypeError, ValueError, RecursionError, AttributeError, EdgeAdaptError) as exc:  # JSON, UTF-8, fields
            raise ModelLoadError(f"{config_path}: malformed PRM config ({exc!r}); re-export the PRM with "
                                 "`edge-adapt export prm`.") from exc
        if list(levels) != sorted(levels) or not all(0.0 < q < 1.0 for q in levels):
            raise ModelLoadError(f"{config_path}: quantile_levels must be increasing and inside (0, 1), got {levels}.")
        if "fp32" not in models or bundle.cpu_variant not in models:
            raise ModelLoadError(f"{config_path}: needs an fp32 model and the cpu_variant {bundle.cpu_variant!r} in 'models'.")
        outside = [name for name in models.values() if Path(name).name != name or name in ("", ".", "..")]
        if outside:
            raise ModelLoadError(f"{config_path}: model files must be plain file names inside the PRM folder, got "
                                 f"{', '.join(map(repr, outside))}.")
        missing = [name for name in [*models.values(), TOKENIZER_FILE] if not (root / name).is_file()]
        if missing:
            raise ModelLoadError(f"{root}: files listed by {CONFIG_FILE} are missing: {', '.join(missing)}.")
        return bundle

    def save(self) -> None:
        data = {
            "bundle_version": BUNDLE_VERSION,
            "quantile_levels": list(self.quantile_levels),
            "format": self.format.to_dict(),
            "models": self.models,
            "cpu_variant": self.cpu_variant,
            "generator": self.generator,
            "source": self.source,
            "metrics": self.metrics,
        }
        atomic_write_text(self.path / CONFIG_FILE, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
