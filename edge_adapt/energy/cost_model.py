"""The energy cost model used when nothing is measurable, and its fit on a device that has a meter.

    joules = idle_w * wall_s + w_per_busy_core * cpu_s
             + j_prompt * prompt_tokens + j_generated * generated_tokens + j_prm * prm_tokens

``cpu_s`` is the CPU time this process used (every thread: llama.cpp's, ONNX Runtime's), so the
CPU default charges what this device measurably did with whatever model runs: a 135M model's
token costs what its seconds of busy cores cost, not what a 3.5M model's would. Per-token
coefficients depend on the model sizes as much as on the device; the Jetson and GPU defaults
(whose work is not CPU time) are rough figures for the shipped default models. ``fit_cost_model``
(and ``edge-adapt energy fit``) replaces either with least-squares coefficients from measured runs.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edge_adapt.errors import MeterError
from edge_adapt.files import atomic_write_text


@dataclass(frozen=True)
class Usage:
    """Work done: the token counts the cost model charges for."""

    prompt_tokens: int = 0
    generated_tokens: int = 0
    prm_tokens: int = 0

    def __sub__(self, other: Usage) -> Usage:
        return Usage(self.prompt_tokens - other.prompt_tokens, self.generated_tokens - other.generated_tokens,
                     self.prm_tokens - other.prm_tokens)

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.prompt_tokens + other.prompt_tokens, self.generated_tokens + other.generated_tokens,
                     self.prm_tokens + other.prm_tokens)


@dataclass(frozen=True)
class CostModel:
    device_class: str
    idle_w: float
    j_per_prompt_token: float
    j_per_generated_token: float
    j_per_prm_token: float
    fitted: bool = False  # True when fitted on this device against a real meter
    w_per_busy_core: float = 0.0  # watts a fully busy core adds over idle

    def __post_init__(self) -> None:
        for name in ("idle_w", "j_per_prompt_token", "j_per_generated_token", "j_per_prm_token", "w_per_busy_core"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise MeterError(f"cost model {name} must be a finite number >= 0, got {value!r}; refit it with `edge-adapt "
                                 f"energy fit`")

    @property
    def basis(self) -> str:
        """What the estimate charges, for its label: fitted coefficients, busy CPU time, or tokens."""
        if self.fitted:
            return "fitted"
        return "cpu-time" if self.w_per_busy_core > 0 else "tokens"

    def joules(self, wall_s: float, usage: Usage, cpu_s: float = 0.0) -> float:
        return (self.idle_w * wall_s + self.w_per_busy_core * cpu_s + self.j_per_prompt_token * usage.prompt_tokens
                + self.j_per_generated_token * usage.generated_tokens + self.j_per_prm_token * usage.prm_tokens)

    def save(self, path: str | os.PathLike[str]) -> None:
        atomic_write_text(Path(path), json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CostModel:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise TypeError("not a JSON object")
            return cls(**data)
        except FileNotFoundError as exc:
            raise MeterError(f"{path}: no such cost-model file; fit one with `edge-adapt energy fit`") from exc
        except (ValueError, TypeError, RecursionError) as exc:  # JSON, UTF-8, fields
            raise MeterError(f"{path}: not a cost-model file ({exc}); fit one with `edge-adapt energy fit`") from exc
        except OSError as exc:
            raise MeterError(f"{path}: cannot be read ({exc.strerror or exc})") from exc


# Rough defaults: a CPU laptop or desktop (idle package power, and what a busy core adds: a
# 15-45 W mobile part over 4-8 cores), a Jetson Orin module and a discrete NVIDIA GPU box (per
# token, for the shipped default models of a few million parameters). Fit your own for anything else.
DEFAULT_COST_MODELS: dict[str, CostModel] = {
    "cpu": CostModel("cpu", idle_w=6.0, j_per_prompt_token=0.0, j_per_generated_token=0.0, j_per_prm_token=0.0,
                     w_per_busy_core=5.0),
    "jetson": CostModel("jetson", idle_w=5.0, j_per_prompt_token=0.001, j_per_generated_token=0.006, j_per_prm_token=0.0005),
    "gpu": CostModel("gpu", idle_w=30.0, j_per_prompt_token=0.0005, j_per_generated_token=0.004, j_per_prm_token=0.0002),
}


@dataclass(frozen=True)
class CostSample:
    """One measured run: what it did and the joules a real meter saw."""

    wall_s: float
    usage: Usage
    joules: float


def fit_cost_model(samples: list[CostSample], device_class: str) -> CostModel:
    """Non-negative least squares of joules on (wall, prompt, generated, PRM tokens).

    Active-set elimination: solve, drop the most negative coefficient, repeat. Four unknowns do
    not justify a SciPy dependency on the device.
    """
    if len(samples) < 4:
        raise MeterError(f"fitting the cost model needs at least 4 measured runs, got {len(samples)}")
    x = np.array([[s.wall_s, s.usage.prompt_tokens, s.usage.generated_tokens, s.usage.prm_tokens] for s in samples], dtype=float)
    y = np.array([s.joules for s in samples], dtype=float)
    active = list(range(4))
    coef = np.zeros(4)
    while active:
        sol, *_ = np.linalg.lstsq(x[:, active], y, rcond=None)
        if (sol >= 0).all():
            coef[:] = 0
            coef[active] = sol
            break
        active.pop(int(np.argmin(sol)))
    return CostModel(device_class, *(float(c) for c in coef), fitted=True)
