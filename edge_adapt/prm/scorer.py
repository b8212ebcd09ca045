"""The on-device quantile PRM: ONNX Runtime, no torch.

``QuantilePRM.score(question, prefixes)`` scores many prefixes of one question in batched
calls and returns, for each, the quantiles (10/50/90% by default) of the probability that the
generator it was calibrated for finishes correctly from there. Quantiles come back ordered: the
model's three outputs are sorted (monotone rearrangement), which can only improve them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from edge_adapt.errors import EdgeAdaptError, ModelLoadError
from edge_adapt.prm.batching import SharedRuns
from edge_adapt.prm.bundle import PRMBundle
from edge_adapt.prm.format import EncodedPrefix, encode_prefix, pad_token_id
from edge_adapt.prm.providers import import_onnxruntime, open_session

log = logging.getLogger(__name__)

PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
_GPU_PROVIDERS = {"TensorrtExecutionProvider", "CUDAExecutionProvider"}


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-x) without overflow: the default PRM's logits reach -100 on a hopeless prefix,
    where exp(100) overflows float32 (a RuntimeWarning on every such call)."""
    return np.exp(-np.logaddexp(np.float32(0), -logits))


def level_masses(levels: Sequence[float]) -> list[float]:
    """The probability mass each quantile level stands for: the mass between the midpoints of its
    neighbouring levels (0 and 1 at the ends); 0.3 / 0.4 / 0.3 for 10/50/90%, Swanson's rule for a
    distribution known by its P10, P50 and P90."""
    cuts = [0.0, *((a + b) / 2 for a, b in zip(levels, levels[1:], strict=False)), 1.0]
    return [b - a for a, b in zip(cuts, cuts[1:], strict=False)]


@dataclass(frozen=True)
class Quantiles:
    """Quantiles of the success probability at ``levels`` (values ordered, in [0, 1])."""

    levels: tuple[float, ...]
    values: tuple[float, ...]

    @property
    def low(self) -> float:
        return self.values[0]

    @property
    def median(self) -> float:
        return self.at(0.5) if 0.5 in self.levels else self.values[len(self.values) // 2]

    @property
    def high(self) -> float:
        return self.values[-1]

    def at(self, level: float) -> float:
        try:
            return self.values[self.levels.index(level)]
        except ValueError:
            raise EdgeAdaptError(f"this PRM predicts quantiles {self.levels}, not {level}") from None


@dataclass(frozen=True)
class PrefixScore:
    final: Quantiles  # after the prefix's last step (for the question itself when there is none)
    per_step: tuple[Quantiles | None, ...] | None  # [0] = question, [i] = after step i; None if dropped
    n_tokens: int
    dropped_steps: int  # oldest steps cut to fit the PRM's context (see prm.format)


@dataclass
class PRMStats:
    calls: int = 0  # score() calls
    runs: int = 0  # ONNX Runtime session runs (batches)
    prefixes: int = 0
    tokens: int = 0  # real tokens scored
    padded_tokens: int = 0  # tokens computed including padding
    wall_s: float = 0.0

    def __add__(self, other: PRMStats) -> PRMStats:
        return PRMStats(*(getattr(self, f) + getattr(other, f) for f in self.__dataclass_fields__))

    def __sub__(self, other: PRMStats) -> PRMStats:
        return PRMStats(*(getattr(self, f) - getattr(other, f) for f in self.__dataclass_fields__))


class QuantilePRM:
    """A calibrated quantile PRM loaded from an exported folder (see :mod:`edge_adapt.prm.bundle`).

    ``providers``: "auto" tries TensorRT, CUDA, then CPU, keeping the first that loads *and*
    computes the same numbers as the CPU (checked with a real inference on this model); or an
    explicit list, tried in order. ``spin``: let ONNX Runtime's idle workers spin (off by default:
    they would compete with the generator for the cores between calls). ``variant``: "fp32", "int8"
    or "fp16"; by default the bundle's
    CPU variant on CPU and fp16 (when shipped) on a GPU. Thread-safe: concurrent calls share batches.
    """

    available = True  # a PRM is loaded (see edge_adapt.prm.absent for the no-PRM mode)

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        providers: str | Sequence[str] = "auto",
        variant: str | None = None,
        threads: int | None = None,
        max_batch: int = 32,
        spin: bool = False,
    ) -> None:
        self.bundle = PRMBundle.load(path)
        if variant is not None and variant not in self.bundle.models:
            raise ModelLoadError(f"{path}: no {variant!r} model in this PRM (has {', '.join(self.bundle.models)}).")
        try:
            self.tokenizer = Tokenizer.from_file(str(self.bundle.tokenizer_path))
        except Exception as exc:  # tokenizers raises a plain Exception for a bad file
            raise ModelLoadError(f"{self.bundle.tokenizer_path}: not a tokenizers JSON file ({exc}).") from exc
        self.levels = self.bundle.quantile_levels
        self.format = self.bundle.format
        self.max_batch = max_batch
        self.threads = threads
        self.spin = spin
        self._pad_id = pad_token_id(self.tokenizer)
        self.stats = PRMStats()
        self._stats_lock = threading.Lock()
        self.session, self.provider, self.variant = self._open(providers, variant)
        self._check_vocabulary()
        self._shared = SharedRuns(lambda batch: self._run_session(self.session, batch), max_batch)

    # -- public ---------------------------------------------------------------------------------

    def score(self, question: str, prefixes: Sequence[Sequence[str]], *, per_step: bool = False) -> list[PrefixScore]:
        """Score every prefix (a list of step texts; ``[]`` is the question alone) in batches."""
        return self.score_with_stats(question, prefixes, per_step=per_step)[0]

    def score_with_stats(self, question: str, prefixes: Sequence[Sequence[str]], *, per_step: bool = False,
                         payer: Hashable | None = None) -> tuple[list[PrefixScore], PRMStats]:
        """:meth:`score`, and what this call cost. Calls from several threads at once share batched
        runs (:mod:`edge_adapt.prm.batching`); ``payer`` is charged the energy of its tokens in them."""
        started = time.perf_counter()
        cache: dict[tuple[str, bool], list[int]] = {}  # shared segments are tokenized once per call
        encoded = [encode_prefix(self.tokenizer, self.format, question, list(steps), cache) for steps in prefixes]
        rows, runs, padded = self._shared.run(encoded, payer)
        results = [self._read(enc, probs, per_step) for enc, probs in zip(encoded, rows, strict=True)]
        call = PRMStats(calls=1, runs=runs, prefixes=len(encoded), tokens=sum(len(e.input_ids) for e in encoded),
                        padded_tokens=padded, wall_s=time.perf_counter() - started)
        with self._stats_lock:
            self.stats = self.stats + call  # a new object: earlier snapshots stay valid for deltas
        return results, call

    def score_question(self, question: str) -> Quantiles:
        """The question-level success quantiles (the empty prefix): what best-of-N sizing needs."""
        return self.score(question, [[]])[0].final

    # -- internals ------------------------------------------------------------------------------

    def _session(self, provider: str, variant: str):
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if self.threads:
            options.intra_op_num_threads = self.threads
        # ONNX Runtime's workers spin after each run waiting for the next; between PRM calls
        # llama.cpp decodes on the same cores, and spinning workers slow it down
        # (benchmarks/bench_search_time.py prints both settings).
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spin else "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "1" if self.spin else "0")
        return open_session(self.bundle.model_path(variant), provider, options)

    def _open(self, providers: str | Sequence[str], variant: str | None):
        ort = import_onnxruntime()
        available = ort.get_available_providers()
        if providers == "auto":
            candidates = [p for p in PROVIDER_PREFERENCE if p in available]
        else:
            candidates = list(providers)
            unknown = [p for p in candidates if p not in available]
            if unknown:
                raise ModelLoadError(
                    f"providers {unknown} are not in this onnxruntime build (available: {', '.join(available)}); "
                    "for CUDA/TensorRT install onnxruntime-gpu instead of onnxruntime."
                )
        probe = encode_prefix(self.tokenizer, self.format, "1+1", ["2\n\n"])
        reference: np.ndarray | None = None
        failures = []
        for provider in candidates:
            chosen = variant or self._default_variant(provider)
            try:
                session = self._session(provider, chosen)
                out = self._run_session(session, [probe, probe])
                if out.shape != (2, len(probe.input_ids), len(self.levels)) or not np.isfinite(out).all():
                    raise RuntimeError(f"probe inference returned shape {out.shape} or non-finite values")
                if provider in _GPU_PROVIDERS:
                    if reference is None:
                        reference = self._run_session(self._session("CPUExecutionProvider", "fp32"), [probe, probe])
                    error = float(np.abs(out - reference).max())
                    if error > 2e-2:
                        raise RuntimeError(f"computes different numbers than the CPU (max error {error:.3g})")
            except Exception as exc:  # each provider fails in its own way; fall back to the next
                failures.append(f"{provider}: {exc}")
                log.warning("PRM provider %s unusable (%s); trying the next", provider, exc)
                continue
            if failures:
                log.info("PRM runs on %s after: %s", provider, "; ".join(failures))
            return session, provider, chosen
        raise ModelLoadError(f"{self.bundle.path}: no execution provider could run the PRM: {'; '.join(failures)}")

    def _check_vocabulary(self) -> None:
        """Every id the tokenizer can produce must index the model's embedding: a tokenizer with
        more ids than the model loads fine and then fails mid-search on the first rare token."""
        top = self.tokenizer.get_vocab_size(with_added_tokens=True) - 1
        try:
            out = self._run_session(self.session, [EncodedPrefix([top, top], [1])])
            if not np.isfinite(out).all():
                raise RuntimeError("non-finite scores")
        except Exception as exc:
            raise ModelLoadError(
                f"{self.bundle.path}: the tokenizer has {top + 1} token ids but the ONNX model cannot read id {top} "
                f"({str(exc).splitlines()[0][:200]}): the tokenizer.json belongs to another model; re-export the PRM "
                "with its own tokenizer") from None

    def _default_variant(self, provider: str) -> str:
        if provider in _GPU_PROVIDERS and "fp16" in self.bundle.models:
            return "fp16"
        return "fp32" if provider in _GPU_PROVIDERS else self.bundle.cpu_variant

    def _run_session(self, session, batch: list[EncodedPrefix]) -> np.ndarray:
        """Probabilities [batch, max_len, n_levels]: sigmoid of the logits, sorted per position."""
        width = max(len(e.input_ids) for e in batch)
        ids = np.full((len(batch), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, e in enumerate(batch):
            ids[row, : len(e.input_ids)] = e.input_ids
            mask[row, : len(e.input_ids)] = 1
        feed = {"input_ids": ids, "attention_mask": mask}
        names = {i.name for i in session.get_inputs()}
        if "position_ids" in names:
            feed["position_ids"] = np.broadcast_to(np.arange(width, dtype=np.int64), ids.shape).copy()
        if "token_type_ids" in names:
            feed["token_type_ids"] = np.zeros_like(ids)
        (logits,) = session.run(None, feed)[:1]
        return np.sort(sigmoid(logits.astype(np.float32)), axis=-1)

    def _read(self, enc: EncodedPrefix, probs: np.ndarray, per_step: bool) -> PrefixScore:
        def at(pos: int | None) -> Quantiles | None:
            return None if pos is None else Quantiles(self.levels, tuple(float(v) for v in probs[pos]))

        last = next(p for p in reversed(enc.score_positions) if p is not None)
        return PrefixScore(
            final=at(last),  # type: ignore[arg-type]
            per_step=tuple(at(p) for p in enc.score_positions) if per_step else None,
            n_tokens=len(enc.input_ids),
            dropped_steps=enc.n_dropped,
        )
