"""The llama.cpp library in this process: initialised once, its log routed into ``logging`` (and
captured for error messages), its extra CPU buffer types decided for this CPU, and the compute
devices the build can use."""

from __future__ import annotations

import collections
import ctypes
import functools
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import llama_cpp

log = logging.getLogger("edge_adapt.llama")

# ggml_log_level (ggml.h): 0 none, 1 debug, 2 info, 3 warn, 4 error, 5 continuation of the previous line.
_LEVEL_NAMES = {0: "none", 1: "debug", 2: "info", 3: "warn", 4: "error"}


class _LlamaLog:
    """Collects llama.cpp's log lines: forwarded to ``logging`` at DEBUG, errors kept for messages."""

    def __init__(self, keep: int = 200) -> None:
        self._lock = threading.Lock()
        self._recent: collections.deque[tuple[str, str]] = collections.deque(maxlen=keep)
        self._last_level = "info"
        self._captures: list[list[tuple[str, str]]] = []
        # Keep a reference: ctypes frees the trampoline if the Python object is collected.
        self.callback = llama_cpp.llama_log_callback(self._on_message)

    def _on_message(self, level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
        name = self._last_level if level == 5 else _LEVEL_NAMES.get(level, "info")
        self._last_level = name
        message = text.decode("utf-8", errors="replace")
        with self._lock:
            self._recent.append((name, message))
            for capture in self._captures:
                capture.append((name, message))
        if message.strip():
            log.debug("%s", message.rstrip())

    @contextmanager
    def capture(self) -> Iterator[list[tuple[str, str]]]:
        """Collect every (level, text) llama.cpp logs while the block runs."""
        lines: list[tuple[str, str]] = []
        with self._lock:
            self._captures.append(lines)
        try:
            yield lines
        finally:
            with self._lock:
                self._captures.remove(lines)


_backend_lock = threading.Lock()
_llama_log: _LlamaLog | None = None


EXTRA_BUFFERS_ENV = "EDGE_ADAPT_LLAMA_EXTRA_BUFFERS"


@functools.lru_cache(maxsize=1)
def use_extra_buffers() -> bool:
    """Whether llama.cpp may place CPU weights in its extra buffer types (repacked layouts, and AMX
    tiles where the CPU advertises AMX). A native build on such a CPU runs AMX kernels, which crash
    the process in VMs that advertise the flag without working tiles (docs/RESULTS.md), so they
    are off where /proc/cpuinfo lists amx_tile; ``EDGE_ADAPT_LLAMA_EXTRA_BUFFERS=1`` (or 0) decides."""
    forced = os.environ.get(EXTRA_BUFFERS_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return True
    if " amx_tile" in flags:
        log.info("the CPU advertises AMX: llama.cpp's extra CPU buffer types are off (set %s=1 to use them)", EXTRA_BUFFERS_ENV)
        return False
    return True


def ensure_backend() -> _LlamaLog:
    """Initialise llama.cpp once per process and route its log through ``logging``."""
    global _llama_log
    with _backend_lock:
        if _llama_log is None:
            _llama_log = _LlamaLog()
            llama_cpp.llama_log_set(_llama_log.callback, ctypes.c_void_p(0))
            llama_cpp.llama_backend_init()
        return _llama_log


def errors_in(lines: Sequence[tuple[str, str]]) -> str:
    """The error and warning text from captured llama.cpp log lines, joined for a message."""
    picked = [text.strip() for level, text in lines if level in ("error", "warn") and text.strip()]
    return "; ".join(picked[-4:])


@dataclass(frozen=True)
class ComputeDevice:
    name: str
    description: str
    kind: str  # cpu, gpu, igpu, accel
    memory_total: int | None


_DEV_TYPES = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel"}


def compute_devices() -> list[ComputeDevice]:
    """The ggml backend devices this llama.cpp build can use (CPU, CUDA0, Metal...).

    llama-cpp-python does not bind the ggml device registry, so this reads it from the bundled
    ``libggml`` with ctypes. Returns an empty list if the library layout is not the expected one.
    """
    ensure_backend()
    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    try:
        ggml = ctypes.CDLL(str(lib_dir / "libggml.so"))
    except OSError:
        return []
    ggml.ggml_backend_dev_count.restype = ctypes.c_size_t
    ggml.ggml_backend_dev_get.restype = ctypes.c_void_p
    ggml.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    for fn in ("ggml_backend_dev_name", "ggml_backend_dev_description"):
        getattr(ggml, fn).restype = ctypes.c_char_p
        getattr(ggml, fn).argtypes = [ctypes.c_void_p]
    ggml.ggml_backend_dev_type.restype = ctypes.c_int
    ggml.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    ggml.ggml_backend_dev_memory.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_size_t),
        ctypes.POINTER(ctypes.c_size_t),
    ]
    devices = []
    for i in range(ggml.ggml_backend_dev_count()):
        dev = ggml.ggml_backend_dev_get(i)
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        ggml.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        devices.append(
            ComputeDevice(
                name=(ggml.ggml_backend_dev_name(dev) or b"?").decode(),
                description=(ggml.ggml_backend_dev_description(dev) or b"").decode(errors="replace"),
                kind=_DEV_TYPES.get(ggml.ggml_backend_dev_type(dev), "other"),
                memory_total=int(total.value) or None,
            )
        )
    return devices


def gpu_offload_supported() -> bool:
    """Whether this llama.cpp build can offload layers to a GPU (CUDA, Metal, Vulkan...)."""
    ensure_backend()
    return bool(llama_cpp.llama_supports_gpu_offload())
