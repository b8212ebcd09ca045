"""What this machine offers the runtime: library versions, llama.cpp build, ONNX Runtime
providers that really run, and power meters. Behind ``edge-adapt info``."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass, field
from importlib import metadata

import llama_cpp

from edge_adapt.energy import MeterAvailability, detect_meters
from edge_adapt.errors import MissingDependencyError
from edge_adapt.generator.llama_platform import ComputeDevice, compute_devices, ensure_backend
from edge_adapt.prm.providers import ProviderCheck, check_providers

_PACKAGES = ("edge-adapt", "llama-cpp-python", "onnxruntime", "onnxruntime-gpu", "numpy", "torch", "transformers",
             "optimum-onnx", "gguf")


@dataclass(frozen=True)
class EnvironmentReport:
    python: str
    platform: str
    cpu_threads: int
    packages: dict[str, str]
    llama_system_info: str
    llama_gpu_offload: bool
    llama_devices: list[ComputeDevice]
    onnx_providers: list[ProviderCheck] = field(default_factory=list)
    onnx_error: str | None = None
    meters: list[MeterAvailability] = field(default_factory=list)


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def environment_report() -> EnvironmentReport:
    ensure_backend()
    packages = {name: v for name in _PACKAGES if (v := _version(name)) is not None}
    try:
        providers, onnx_error = check_providers(), None
    except MissingDependencyError as exc:
        providers, onnx_error = [], str(exc)
    return EnvironmentReport(
        python=sys.version.split()[0],
        platform=platform.platform(),
        cpu_threads=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
        packages=packages,
        llama_system_info=llama_cpp.llama_print_system_info().decode(errors="replace").strip(" |"),
        llama_gpu_offload=bool(llama_cpp.llama_supports_gpu_offload()),
        llama_devices=compute_devices(),
        onnx_providers=providers,
        onnx_error=onnx_error,
        meters=detect_meters(),
    )
