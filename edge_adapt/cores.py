"""The cores this process may use, how busy other processes keep them, and the threads that fit.

llama.cpp and ONNX Runtime default to a thread per core. On a device that also runs other work
(a field unit's sensors, a laptop's browser) that is the worst choice: llama.cpp's threads meet at
a spinning barrier after every operation of a decode, so one thread waiting for a core stalls the
whole team while the others burn CPU time waiting for it (docs/RESULTS.md, "A busy device").
So a run takes the cores it may use (its affinity mask and cgroup
CPU quota), subtracts what other processes keep busy over a short look at ``/proc/stat``, and
runs as many threads as that leaves whole cores (at least one). A server looks again while it
runs (:class:`LoadWatch`); a thread count given by the user is kept as it is.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PROC = Path("/proc")
CGROUP_ROOT = Path("/sys/fs/cgroup")
LOOK_S = 0.25  # how long the start-up look at the load lasts
BUSY_ROUNDING = 0.25  # a core counts as free unless others keep it more than this busy


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity mask)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return list(range(os.cpu_count() or 1))


def cgroup_quota(root: Path = CGROUP_ROOT, proc: Path = PROC) -> float | None:
    """Cores' worth of CPU time this process's cgroup may use (``None``: no quota). Reads cgroup
    v2's ``cpu.max`` or v1's ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, at the process's own
    cgroup and at the root of the mount (what a container sees)."""
    for v2, v1 in _cgroup_dirs(root, proc):
        quota = _read_v2(v2 / "cpu.max") if v2 is not None else None
        if quota is None and v1 is not None:
            quota = _read_v1(v1 / "cpu.cfs_quota_us", v1 / "cpu.cfs_period_us")
        if quota is not None:
            return quota
    return None


def _cgroup_dirs(root: Path, proc: Path) -> list[tuple[Path | None, Path | None]]:
    dirs: list[tuple[Path | None, Path | None]] = []
    try:
        lines = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        relative = path.lstrip("/")
        if hierarchy == "0" and controllers == "":
            dirs.append((root / relative, None))
        elif "cpu" in controllers.split(","):
            dirs.append((None, root / controllers / relative))
            dirs.append((None, root / "cpu" / relative))
    dirs += [(root, None), (None, root / "cpu"), (None, root / "cpu,cpuacct")]
    return dirs


def _read_v2(path: Path) -> float | None:
    try:
        quota, _, period = path.read_text().strip().partition(" ")
        return None if quota == "max" else int(quota) / int(period or 100_000)
    except (OSError, ValueError, ZeroDivisionError):
        return None


def _read_v1(quota_path: Path, period_path: Path) -> float | None:
    try:
        quota, period = int(quota_path.read_text()), int(period_path.read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def cpu_busy_seconds(cpus: list[int], proc: Path = PROC) -> float | None:
    """Seconds the given CPUs have spent busy (everything but idle and iowait) since boot."""
    try:
        lines = (proc / "stat").read_text().splitlines()
    except OSError:
        return None
    wanted = {f"cpu{c}" for c in cpus}
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    busy = 0
    for line in lines:
        name, *values = line.split()
        if name in wanted and len(values) >= 5:
            numbers = [int(v) for v in values[:8]]
            busy += sum(numbers) - numbers[3] - numbers[4]  # idle and iowait are the 4th and 5th
    return busy / ticks


@dataclass(frozen=True)
class Glance:
    """One look at the machine: when, the allowed CPUs' busy seconds since boot, this process's CPU seconds."""

    at: float
    busy_s: float | None
    own_s: float


def glance(cpus: list[int], proc: Path = PROC) -> Glance:
    return Glance(time.monotonic(), cpu_busy_seconds(cpus, proc), time.process_time())


def others_busy(start: Glance, end: Glance, cpus: int) -> float:
    """Cores other processes kept busy between two glances (0 where /proc/stat cannot be read)."""
    if start.busy_s is None or end.busy_s is None or end.at <= start.at:
        return 0.0
    return min(float(cpus), max(0.0, (end.busy_s - start.busy_s) - (end.own_s - start.own_s)) / (end.at - start.at))


@dataclass(frozen=True)
class CoreLoad:
    """What this process may use and what others keep busy of it, in cores."""

    cpus: int  # in the affinity mask
    quota: float | None  # the cgroup's CPU quota, in cores
    others_busy: float  # cores other processes kept busy over the look (on the allowed CPUs)

    @property
    def usable(self) -> float:
        return min(float(self.cpus), self.quota) if self.quota is not None else float(self.cpus)

    @property
    def free(self) -> float:
        return max(0.0, min(self.usable, self.cpus - self.others_busy))


def look(seconds: float = LOOK_S, cpus: list[int] | None = None, quota: float | None = None,
         proc: Path = PROC) -> CoreLoad:
    """The load on this process's cores over the next ``seconds``."""
    cpus = cpus if cpus is not None else allowed_cpus()
    quota = quota if quota is not None else cgroup_quota(proc=proc)
    before = glance(cpus, proc)
    time.sleep(seconds)
    return CoreLoad(len(cpus), quota, others_busy(before, glance(cpus, proc), len(cpus)))


def fitting_threads(load: CoreLoad) -> int:
    """Whole cores left free, at least one."""
    return max(1, min(load.cpus, math.floor(load.free + BUSY_ROUNDING)))


@dataclass(frozen=True)
class ThreadChoice:
    """Threads for llama.cpp and ONNX Runtime, and why (logged, and kept in a run's environment)."""

    threads: int
    why: str
    load: CoreLoad | None = None  # None: the user's number, nothing looked at

    def as_record(self) -> dict:
        record: dict = {"threads": self.threads, "why": self.why}
        if self.load is not None:
            record.update(cpus=self.load.cpus, cgroup_quota=self.load.quota, others_busy=round(self.load.others_busy, 2))
        return record


def choose_threads(requested: int | None = None, *, gpu_layers: int = 0,
                   measure: Callable[[], CoreLoad] = look) -> ThreadChoice:
    """``requested`` as told; else the whole cores free now (see the module's docstring)."""
    if requested is not None:
        return ThreadChoice(requested, "as told (--threads)")
    load = measure()
    threads = fitting_threads(load)
    quota = f", a cgroup quota of {load.quota:g} cores" if load.quota is not None else ""
    why = f"{load.cpus} CPUs allowed{quota}, other processes kept {load.others_busy:.1f} busy: {threads} whole free"
    if gpu_layers != 0:
        why += " (the GPU does the decoding; these threads feed it)"
    choice = ThreadChoice(threads, why, load)
    log.info("threads: %d (%s)", threads, why)
    return choice


class LoadWatch:
    """Looks at the load every ``every_s`` seconds while a server runs and hands the threads that
    fit to ``apply`` when they change. Only for a thread count the user did not give."""

    def __init__(self, apply: Callable[[int], None], every_s: float = 10.0, look_s: float = 1.0,
                 measure: Callable[[float], CoreLoad] | None = None) -> None:
        self._apply = apply
        self._every_s = every_s
        self._measure = measure or look
        self._look_s = look_s
        self._stop = threading.Event()
        self._current: int | None = None
        self._thread = threading.Thread(target=self._run, name="edge-adapt-load-watch", daemon=True)

    def start(self, current: int) -> LoadWatch:
        self._current = current
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            threads = fitting_threads(self._measure(self._look_s))
            if threads != self._current:
                log.info("threads: %d -> %d (other processes' load changed)", self._current, threads)
                self._current = threads
                self._apply(threads)
