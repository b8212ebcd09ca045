"""How a GGUF generator is loaded and how much branching its KV cache can hold."""

from __future__ import annotations

from dataclasses import dataclass

from edge_adapt.cores import allowed_cpus
from edge_adapt.errors import SamplingConfigError
from edge_adapt.generator.llama_backend import KV_TYPES

MAX_SEQUENCES = 256  # LLAMA_MAX_SEQ in llama.cpp


def default_threads() -> int:
    """A thread per CPU this process may use (runs choose theirs from the load: edge_adapt.cores)."""
    return max(1, len(allowed_cpus()))


# Searches batched together by default. On a GPU a decode of one row costs nearly what a decode of
# sixteen costs, so filling the batch is nearly free; on a CPU the gain stops at about 8 searches
# (docs/RESULTS.md, "Many searches, one batch"); a server holds each request's KV room, so it runs fewer.
PARALLEL_GPU = 16
PARALLEL_CPU = 8
PARALLEL_SERVING_CPU = 4
# Rows of a decode past which the cost per row stops falling on a CPU (benchmarks/bench_decode_curve.py),
# while searches sharing the pool make each row attend over more cells; on a GPU the batch fills far wider.
PARALLEL_ROWS_CPU = 16
PARALLEL_ROWS_GPU = 256


def default_parallel(gpu_layers: int, *, serving: bool = False) -> tuple[int, str]:
    """Searches to run at once on this device by default, and why."""
    from edge_adapt.generator.llama_platform import gpu_offload_supported

    if gpu_layers != 0 and gpu_offload_supported():
        return PARALLEL_GPU, "GPU offload: a decode costs about the same for 1 and 16 rows"
    if serving:
        return PARALLEL_SERVING_CPU, "CPU server: clients answered together, each request's KV room held"
    return PARALLEL_CPU, "CPU: small searches fill each decode; past 8 at once no faster"


def batch_rows_for(gpu_layers: int) -> int:
    """The cap on a decode's rows across searches on this device (see ``GeneratorConfig.max_batch_rows``)."""
    from edge_adapt.generator.llama_platform import gpu_offload_supported

    return PARALLEL_ROWS_GPU if gpu_layers != 0 and gpu_offload_supported() else PARALLEL_ROWS_CPU


@dataclass(frozen=True)
class GeneratorConfig:
    """How the model is loaded and how much branching its context can hold.

    ``n_seq_max`` is the number of nodes that can be live at once (every branch being decoded
    and every node kept for later expansion holds one); ``n_ctx`` is the pool of KV cells they
    share: a shared prefix counts once.
    """

    n_ctx: int = 4096
    n_seq_max: int = 32
    n_batch: int = 512
    n_threads: int | None = None  # None: all CPU cores this process may use
    n_threads_batch: int | None = None
    n_gpu_layers: int = 0  # -1 offloads every layer (needs a CUDA/Metal/Vulkan build of llama.cpp)
    main_gpu: int = 0
    flash_attn: bool | None = None  # None: llama.cpp decides
    kv_type: str = "f16"  # KV cache precision: "f16", "f32" (exact), "q8_0" (half the memory; needs flash attention)
    # one KV pool for all branches (a branch costs nothing, shares its prefix) or one stream of
    # n_ctx / n_seq_max cells per sequence (a branch copies its parent's stream; attention reads
    # only its own); benchmarks/bench_kv.py measures both
    kv_unified: bool = True
    use_mmap: bool = True
    # > 0: n_ctx grows to the model's training context, up to this many cells (a chat server's
    # prompts may use the context the model was built for)
    grow_to_training_context: int = 0
    # keep the last prompt's KV cells (one more sequence) so that a prompt starting the same way
    # evaluates only what differs (a server's chat turns); a solver that prefills each question
    # once gains nothing from it
    prompt_cache: bool = False
    # the most live paths of all searches in flight together (0: no cap): a decode's rows, capped
    # where the device's cost per row stops falling (PARALLEL_ROWS_*; benchmarks/bench_decode_curve.py)
    max_batch_rows: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.n_seq_max <= MAX_SEQUENCES:
            raise SamplingConfigError(f"n_seq_max must be in [1, {MAX_SEQUENCES}], got {self.n_seq_max}")
        if self.n_ctx < 16:
            raise SamplingConfigError(f"n_ctx must be at least 16, got {self.n_ctx}")
        if self.n_batch < 1:
            raise SamplingConfigError(f"n_batch must be >= 1, got {self.n_batch}")
        if self.kv_type not in KV_TYPES:
            raise SamplingConfigError(f"kv_type must be one of {', '.join(KV_TYPES)}, got {self.kv_type!r}")
        if self.kv_type == "q8_0" and self.flash_attn is False:
            raise SamplingConfigError("a q8_0 KV cache needs flash attention; leave flash_attn unset or True")
