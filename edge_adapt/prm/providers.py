"""Which ONNX Runtime execution providers really run on this machine.

``onnxruntime.get_available_providers()`` lists what the wheel was built with, not what
works: a CUDA provider without cuDNN, or TensorRT without its libraries, is listed, fails to
initialise, and ONNX Runtime quietly runs everything on the CPU instead. A provider counts
here only if a session created with it keeps it *and* computes the right numbers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from edge_adapt.errors import MissingDependencyError

PROBE_MODEL = Path(str(resources.files("edge_adapt") / "data" / "probe.onnx"))
# The probe computes sigmoid(x @ W + b) with these constants.
PROBE_WEIGHT = np.linspace(-1.0, 1.0, 32, dtype=np.float32).reshape(8, 4)
PROBE_BIAS = np.array([0.1, -0.2, 0.3, -0.4], dtype=np.float32)

# Listed by CPU wheels but not compute devices: they send requests elsewhere.
_NOT_PROBED = {"AzureExecutionProvider": "remote-inference provider, nothing to run locally"}


@dataclass(frozen=True)
class ProviderCheck:
    name: str
    works: bool
    detail: str


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingDependencyError(
            "onnxruntime is not installed: pip install 'edge-adapt[cpu]' (or '[gpu]' for "
            "onnxruntime-gpu; never both, they overwrite each other)."
        ) from exc
    return onnxruntime


class ProviderFellBack(RuntimeError):
    """ONNX Runtime accepted the provider but runs the session on the CPU instead."""


def open_session(model_path: str | Path, provider: str, options=None):
    """A session on ``provider``, the CPU as its only fallback for unsupported operators; raises
    :class:`ProviderFellBack` when the provider itself failed to initialise (the case ONNX
    Runtime only logs)."""
    ort = import_onnxruntime()
    chain = [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
    session = ort.InferenceSession(str(model_path), sess_options=options, providers=chain)
    if provider not in session.get_providers():
        raise ProviderFellBack("listed, but failed to initialise (missing libraries?); ONNX Runtime fell back to CPU")
    return session


def probe_expected(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(x @ PROBE_WEIGHT + PROBE_BIAS)))


def check_provider(name: str) -> ProviderCheck:
    """Create a session on ``name`` alone (CPU as the required fallback) and run the probe."""
    ort = import_onnxruntime()
    if name in _NOT_PROBED:
        return ProviderCheck(name, False, f"not probed: {_NOT_PROBED[name]}")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # failures are reported below, not as console noise
    try:
        session = open_session(PROBE_MODEL, name, options)
    except ProviderFellBack as exc:
        return ProviderCheck(name, False, str(exc))
    except Exception as exc:  # onnxruntime raises its own exception types per provider
        return ProviderCheck(name, False, f"session creation failed: {str(exc).splitlines()[0][:160]}")
    x = np.random.default_rng(0).standard_normal((4, PROBE_WEIGHT.shape[0])).astype(np.float32)
    try:
        started = time.perf_counter()
        (y,) = session.run(None, {"x": x})
        elapsed = time.perf_counter() - started
    except Exception as exc:
        return ProviderCheck(name, False, f"inference failed: {str(exc).splitlines()[0][:160]}")
    error = float(np.abs(y - probe_expected(x)).max())
    if error > 1e-2:
        return ProviderCheck(name, False, f"ran but computed wrong values (max error {error:.3g})")
    return ProviderCheck(name, True, f"probe ran in {elapsed * 1e3:.1f} ms (max error {error:.1e})")


def check_providers() -> list[ProviderCheck]:
    ort = import_onnxruntime()
    return [check_provider(name) for name in ort.get_available_providers()]
