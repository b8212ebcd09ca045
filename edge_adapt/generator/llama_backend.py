"""Thin, safe handles over llama.cpp's C API (through llama-cpp-python's ctypes bindings).

Why not ``llama_cpp.Llama``: the high-level class owns one sequence, copies the whole logits
buffer on ``save_state`` and cannot share a prefix between branches. Search needs several
sequences in one context, ``seq_cp`` for prefix sharing and batched decode of siblings, which
only the C API offers. This module keeps the raw pointers in small objects that free
themselves and turns load failures into :class:`~edge_adapt.errors.ModelLoadError` quoting what
llama.cpp said (the library itself, its log and its devices: :mod:`edge_adapt.generator.llama_platform`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import llama_cpp

from edge_adapt.errors import ModelLoadError
from edge_adapt.generator.llama_platform import ensure_backend, errors_in, use_extra_buffers

log = logging.getLogger("edge_adapt.llama")

GGUF_MAGIC = b"GGUF"
SUPPORTED_GGUF_VERSIONS = (2, 3)

@dataclass(frozen=True)
class GGUFHeader:
    version: int
    n_tensors: int
    n_kv: int


def read_gguf_header(path: str | os.PathLike[str]) -> GGUFHeader:
    """Check that ``path`` is a readable GGUF file and return its header.

    Done in Python before llama.cpp sees the file, so that the common mistakes (a wrong path,
    a Hugging Face folder, a safetensors file, an HTML error page saved as .gguf, an empty
    download) get a precise message instead of llama.cpp's generic "failed to load model".
    """
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"{p}: no such file. Check the path (GGUF models end in .gguf).")
    if p.is_dir():
        raise ModelLoadError(
            f"{p}: is a directory, not a GGUF file. A Hugging Face checkpoint must be converted "
            "first: `edge-adapt export gguf DIR`."
        )
    try:
        with open(p, "rb") as f:
            head = f.read(24)
    except OSError as exc:
        raise ModelLoadError(f"{p}: cannot be read ({exc.strerror}).") from exc
    if len(head) < 24:
        raise ModelLoadError(f"{p}: only {len(head)} bytes, too short for a GGUF header; the file is truncated.")
    if head[:4] != GGUF_MAGIC:
        raise ModelLoadError(
            f"{p}: not a GGUF file (starts with {head[:4]!r}, expected b'GGUF'). "
            "Convert Hugging Face checkpoints with `edge-adapt export gguf`."
        )
    version, n_tensors, n_kv = struct.unpack("<IQQ", head[4:24])
    if version not in SUPPORTED_GGUF_VERSIONS:
        raise ModelLoadError(
            f"{p}: GGUF version {version} is not supported (expected one of {SUPPORTED_GGUF_VERSIONS}); "
            "the file is corrupt or from an incompatible tool."
        )
    return GGUFHeader(version=version, n_tensors=n_tensors, n_kv=n_kv)


class LlamaModel:
    """A loaded llama.cpp model (weights and vocabulary); freed on :meth:`close`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        n_gpu_layers: int = 0,
        main_gpu: int = 0,
        use_mmap: bool = True,
        vocab_only: bool = False,
    ) -> None:
        self.path = Path(path)
        read_gguf_header(self.path)
        llama_log = ensure_backend()
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        params.main_gpu = main_gpu
        params.use_mmap = use_mmap
        params.vocab_only = vocab_only
        params.use_extra_bufts = use_extra_buffers()
        with llama_log.capture() as lines:
            ptr = llama_cpp.llama_model_load_from_file(str(self.path).encode(), params)
        if not ptr:
            detail = errors_in(lines) or "no detail from llama.cpp"
            raise ModelLoadError(
                f"{self.path}: llama.cpp could not load this GGUF ({detail}). The file may be "
                "truncated or corrupt (re-download or re-export it), or use an architecture this "
                f"llama.cpp build ({llama_cpp.__version__}) does not know."
            )
        self.ptr = ptr
        self.vocab = llama_cpp.llama_model_get_vocab(ptr)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        self.n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(ptr))

    def metadata(self, key: str) -> str | None:
        """A GGUF metadata value as text (``general.architecture``...), or None if absent."""
        buf = ctypes.create_string_buffer(4096)
        n = llama_cpp.llama_model_meta_val_str(self.ptr, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", errors="replace") if n >= 0 else None

    def chat_template(self) -> str | None:
        raw = llama_cpp.llama_model_chat_template(self.ptr, None)
        return raw.decode("utf-8", errors="replace") if raw else None

    def description(self) -> str:
        buf = ctypes.create_string_buffer(256)
        llama_cpp.llama_model_desc(self.ptr, buf, len(buf))
        return buf.value.decode("utf-8", errors="replace")

    def size_bytes(self) -> int:
        return int(llama_cpp.llama_model_size(self.ptr))

    def n_params(self) -> int:
        return int(llama_cpp.llama_model_n_params(self.ptr))

    def close(self) -> None:
        if getattr(self, "ptr", None):
            llama_cpp.llama_model_free(self.ptr)
            self.ptr = None

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter exit
        try:
            self.close()
        except Exception:
            pass


KV_TYPES = {"f32": llama_cpp.GGML_TYPE_F32, "f16": llama_cpp.GGML_TYPE_F16, "q8_0": llama_cpp.GGML_TYPE_Q8_0}


@dataclass(frozen=True)
class ContextSettings:
    """How a llama.cpp context is created; see :class:`edge_adapt.generator.GeneratorConfig`."""

    n_ctx: int
    n_batch: int
    n_seq_max: int
    n_threads: int
    n_threads_batch: int
    flash_attn: bool | None = None  # None: let llama.cpp decide
    offload_kqv: bool = True
    kv_type: str = "f16"  # KV cache precision: f16 (llama.cpp's default), f32 (exact checks), q8_0 (half the memory)
    kv_unified: bool = True  # one KV pool shared by all sequences; False: one stream of n_ctx / n_seq_max cells each


class LlamaContext:
    """A llama.cpp context whose KV cache holds ``n_seq_max`` sequences.

    Unified (the default) is what makes branching free: ``seq_cp`` then tags the parent's cells
    with the child's sequence id instead of copying them, and the cells of all sequences come
    from one pool of ``n_ctx``; but every token then attends over the cells of every branch.
    Per-sequence streams (``kv_unified=False``) give each sequence ``n_ctx / n_seq_max`` cells of
    its own: ``seq_cp`` copies the parent's stream, and a token attends over its own stream only.
    """

    def __init__(self, model: LlamaModel, settings: ContextSettings) -> None:
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = settings.n_ctx
        params.n_batch = settings.n_batch
        params.n_ubatch = settings.n_batch
        params.n_seq_max = settings.n_seq_max
        params.n_threads = settings.n_threads
        params.n_threads_batch = settings.n_threads_batch
        params.kv_unified = settings.kv_unified
        params.offload_kqv = settings.offload_kqv
        params.no_perf = True
        params.type_k = params.type_v = KV_TYPES[settings.kv_type]
        if settings.flash_attn is not None:
            params.flash_attn_type = (
                llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if settings.flash_attn else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
            )
        with ensure_backend().capture() as lines:
            ptr = llama_cpp.llama_init_from_model(model.ptr, params)
        if not ptr:
            raise ModelLoadError(
                f"{model.path}: llama.cpp could not create a context with n_ctx={settings.n_ctx}, "
                f"n_seq_max={settings.n_seq_max} ({errors_in(lines) or 'no detail'}). Lower n_ctx or "
                "the number of branches, or free memory."
            )
        self.ptr = ptr
        self.model = model
        self.memory = llama_cpp.llama_get_memory(ptr)
        self.n_ctx = int(llama_cpp.llama_n_ctx(ptr))
        self.n_ctx_seq = int(llama_cpp.llama_n_ctx_seq(ptr))  # what one sequence can hold
        self.n_batch = int(llama_cpp.llama_n_batch(ptr))
        self.n_seq_max = int(llama_cpp.llama_n_seq_max(ptr))

    def set_threads(self, threads: int) -> None:
        """CPU threads for the next decodes (one token per row, and prompts)."""
        llama_cpp.llama_set_n_threads(self.ptr, threads, threads)

    def logits(self, index: int) -> ctypes.Array[ctypes.c_float]:
        """Logits after the token at batch position ``index`` of the last decode (a view into
        llama.cpp's buffer, valid until the next decode)."""
        return llama_cpp.llama_get_logits_ith(self.ptr, index)

    def seq_copy(self, src: int, dst: int) -> None:
        llama_cpp.llama_memory_seq_cp(self.memory, src, dst, -1, -1)

    def seq_remove(self, seq: int, from_pos: int = -1) -> None:
        """Drop ``seq``'s cells (from position ``from_pos`` on; -1: all of them)."""
        llama_cpp.llama_memory_seq_rm(self.memory, seq, from_pos, -1)

    def seq_pos_max(self, seq: int) -> int:
        return int(llama_cpp.llama_memory_seq_pos_max(self.memory, seq))

    def clear(self) -> None:
        llama_cpp.llama_memory_clear(self.memory, True)

    def close(self) -> None:
        if getattr(self, "ptr", None):
            llama_cpp.llama_free(self.ptr)
            self.ptr = None

    def __del__(self) -> None:  # pragma: no cover
        try:
            self.close()
        except Exception:
            pass


class Batch:
    """A reusable ``llama_batch`` filled token by token (token, position, sequences, wants logits)."""

    def __init__(self, capacity: int, n_seq_max: int) -> None:
        self.capacity = capacity
        self._batch = llama_cpp.llama_batch_init(capacity, 0, n_seq_max)

    def clear(self) -> None:
        self._batch.n_tokens = 0

    def __len__(self) -> int:
        return int(self._batch.n_tokens)

    def add(self, token: int, pos: int, seq: int, logits: bool) -> int:
        """Append one token; returns its position in the batch (what ``logits()`` takes)."""
        i = self._batch.n_tokens
        if i >= self.capacity:
            raise RuntimeError(f"batch full ({self.capacity} tokens)")  # caller bug, not user input
        b = self._batch
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq
        b.logits[i] = logits
        b.n_tokens = i + 1
        return i

    def decode(self, ctx: LlamaContext) -> int:
        """Run the batch; 0 on success, 1 when the KV cache has no room (llama.cpp's codes)."""
        return int(llama_cpp.llama_decode(ctx.ptr, self._batch))

    def close(self) -> None:
        if getattr(self, "_batch", None) is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None

    def __del__(self) -> None:  # pragma: no cover
        try:
            self.close()
        except Exception:
            pass
