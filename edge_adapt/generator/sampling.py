"""Per-branch token sampling with llama.cpp's sampler chain.

Each branch owns a chain (top-k -> top-p -> min-p -> temperature -> seeded draw) so that its
random stream depends only on its own seed, never on which other branches happened to be
decoded in the same batch: a run is reproducible from one seed. The chain is applied to logits
we hand it (not read from the context) because the first token of every child is drawn from
its parent's saved logits.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import llama_cpp
import numpy as np

from edge_adapt.errors import SamplingConfigError

# Mirrors `struct llama_token_data { llama_token id; float logit; float p; }`.
_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
assert _TOKEN_DATA.itemsize == ctypes.sizeof(llama_cpp.llama_token_data)


@dataclass(frozen=True)
class SamplingParams:
    """How tokens are drawn. ``temperature=0`` is greedy decoding (argmax)."""

    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0  # 0 disables top-k
    min_p: float = 0.0

    def __post_init__(self) -> None:
        if not (self.temperature >= 0.0 and np.isfinite(self.temperature)):
            raise SamplingConfigError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise SamplingConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise SamplingConfigError(f"top_k must be >= 0 (0 disables it), got {self.top_k}")
        if not 0.0 <= self.min_p < 1.0:
            raise SamplingConfigError(f"min_p must be in [0, 1), got {self.min_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class CandidateBuffer:
    """Scratch space for one vocabulary's candidates, reused across draws (no per-token allocation)."""

    def __init__(self, n_vocab: int) -> None:
        self.n_vocab = n_vocab
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._data = np.zeros(n_vocab, dtype=_TOKEN_DATA)
        self._array = llama_cpp.llama_token_data_array(
            data=self._data.ctypes.data_as(llama_cpp.llama_token_data_p),
            size=n_vocab,
            selected=-1,
            sorted=False,
        )

    def load(self, logits: np.ndarray) -> llama_cpp.llama_token_data_array:
        # Samplers reorder and truncate the array in place, so every draw starts from scratch.
        self._data["id"] = self._ids
        self._data["logit"] = logits
        self._data["p"] = 0.0
        self._array.size = self.n_vocab
        self._array.selected = -1
        self._array.sorted = False
        return self._array

    def token_at(self, index: int) -> int:
        return int(self._data["id"][index])


class BranchSampler:
    """One branch's sampler chain, seeded; free it with :meth:`close` when the branch ends."""

    def __init__(self, params: SamplingParams, seed: int) -> None:
        self.params = params
        self.seed = seed
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        if params.greedy:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
        else:
            if params.top_k > 0:
                llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_k(params.top_k))
            if params.top_p < 1.0:
                llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
            if params.min_p > 0.0:
                llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_min_p(params.min_p, 1))
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(params.temperature))
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        self._chain = chain

    def sample(self, logits: np.ndarray, candidates: CandidateBuffer) -> tuple[int, float]:
        """Draw one token; returns it with its log-probability under the model (temperature 1).

        The log-probability is of the raw model distribution, not of the truncated, tempered
        sampling distribution: it is the confidence signal search wants, comparable across
        sampling settings.
        """
        array = candidates.load(logits)
        llama_cpp.llama_sampler_apply(self._chain, ctypes.byref(array))
        token = candidates.token_at(array.selected)
        return token, token_logprob(logits, token)

    def close(self) -> None:
        if self._chain is not None:
            llama_cpp.llama_sampler_free(self._chain)
            self._chain = None

    def __del__(self) -> None:  # pragma: no cover
        try:
            self.close()
        except Exception:
            pass


def token_logprob(logits: np.ndarray, token: int) -> float:
    """log softmax(logits)[token]; float32 with the max subtracted is exact to ~1e-6 here and
    half the cost of float64 over a 150k vocabulary (this runs once per generated token)."""
    m = logits.max()
    total = np.exp(logits - m, dtype=np.float32).sum(dtype=np.float64)
    return float(logits[token] - m) - float(np.log(total))
