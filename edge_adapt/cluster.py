"""Fanning per-question work out over a Ray cluster (the [cluster] extra).

One worker (a Ray actor) per device or per ``cpus_per_worker`` cores checks the model files it
was given by sha256, builds its models once with the same code as a local run, and takes
questions one at a time. The driver is the only writer: it hands out questions, appends each
result as it arrives (the caller's ``on_result``: fsynced records, as locally), and keeps the
run's guarantees: results depend on per-question seeds only, never on which worker ran them; a
question whose worker died is retried on another worker (a replacement is started), attempt by
attempt, and the retry is reported; a driver that dies loses nothing written, and the caller's
resume skips what is done.

``RAY_ADDRESS`` (or ``ClusterSettings.address``) joins a running cluster; without one a local
Ray instance is started with this machine's cores and stopped afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_adapt.errors import EdgeAdaptError, MissingDependencyError, ModelLoadError
from edge_adapt.models import sha256_of

log = logging.getLogger(__name__)

NAMESPACE = "edge_adapt"
WORKER_PREFIX = "edge-adapt-worker-"


class ClusterError(EdgeAdaptError):
    """The cluster cannot finish the work: workers cannot start, or a question failed every attempt."""


@dataclass(frozen=True)
class ClusterSettings:
    address: str | None = None  # None: $RAY_ADDRESS, else a local instance on this machine
    workers: int | None = None  # None: the cluster's CPUs (GPUs, with gpus_per_worker) / per worker
    cpus_per_worker: int = 1
    gpus_per_worker: float = 0.0
    max_attempts: int = 2  # of one question, each on a live worker


@dataclass(frozen=True)
class FileCheck:
    """A file a worker must see with exactly this content before it builds anything."""

    path: str
    sha256: str

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> FileCheck:
        return cls(str(Path(path).resolve()), sha256_of(path))


@dataclass
class WorkerStats:
    name: str
    host: str
    questions: int = 0
    busy_s: float = 0.0
    died: bool = False

    def as_record(self) -> dict[str, Any]:
        rate = 3600 * self.questions / self.busy_s if self.busy_s > 0 else None
        return {"worker": self.name, "host": self.host, "questions": self.questions, "busy_s": round(self.busy_s, 3),
                "questions_per_hour": None if rate is None else round(rate, 1), "died": self.died}


@dataclass
class ClusterReport:
    """What ran where: per-worker throughput, retries, wall time."""

    address: str
    workers: list[WorkerStats] = field(default_factory=list)
    retries: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0

    def as_record(self) -> dict[str, Any]:
        return {"address": self.address, "wall_s": round(self.wall_s, 3), "workers": [w.as_record() for w in self.workers],
                "retries": self.retries}


def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("--ray needs the cluster extra: pip install 'edge-adapt[cluster]'") from None
    return ray


def check_files(checks: Sequence[FileCheck]) -> None:
    """Refuse, naming the host, a file that is missing or differs from the driver's."""
    host = socket.gethostname()
    for check in checks:
        if not Path(check.path).is_file():
            raise ModelLoadError(f"worker on {host}: {check.path} does not exist there; put the model files on a path "
                                 "every node can read (the same path), or copy them to each node")
        found = sha256_of(check.path)
        if found != check.sha256:
            raise ModelLoadError(f"worker on {host}: {check.path} has sha256 {found[:12]}..., the driver's has "
                                 f"{check.sha256[:12]}...; every node needs the same file")


class _Worker:
    """The actor: checked files, models built once by ``setup``, then one item at a time."""

    def __init__(self, checks: Sequence[FileCheck], setup: Callable[[contextlib.ExitStack], tuple[Callable[[Any], Any], Any]]):
        check_files(checks)
        self._exit = contextlib.ExitStack()
        self._handle, self._info = setup(self._exit)

    def info(self) -> dict[str, Any]:
        return {"host": socket.gethostname(), "pid": os.getpid(), "setup": self._info}

    def run(self, item: Any) -> tuple[Any, float]:
        started = time.perf_counter()
        result = self._handle(item)
        return result, time.perf_counter() - started


@contextlib.contextmanager
def connect(settings: ClusterSettings) -> Iterator[Any]:
    """Ray, joined to ``settings.address`` / $RAY_ADDRESS, or a local instance stopped on exit."""
    ray = require_ray()
    address = settings.address or os.environ.get("RAY_ADDRESS")
    started_here = not ray.is_initialized()
    if started_here:
        kwargs: dict[str, Any] = {"namespace": NAMESPACE, "logging_level": logging.WARNING, "log_to_driver": False}
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(include_dashboard=False, **kwargs)
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


def run_unordered(
    settings: ClusterSettings,
    checks: Sequence[FileCheck],
    setup: Callable[[contextlib.ExitStack], tuple[Callable[[Any], Any], Any]],
    items: Sequence[tuple[str, Any]],
    on_ready: Callable[[dict[str, Any]], None],
    on_result: Callable[[str, Any], None],
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> ClusterReport:
    """Run ``setup``'s handler on every ``(key, item)`` on the cluster's workers; ``on_ready`` gets
    the first worker's info before any result, ``on_result`` each result in arrival order (the
    driver writes it). Returns per-worker throughput and the retries."""
    with connect(settings) as ray:
        report = ClusterReport(address=ray.get_runtime_context().gcs_address)
        if not items:
            return report
        n_workers = max(1, min(settings.workers or _default_workers(ray, settings), len(items)))
        pool = _Workers(ray, settings, checks, setup, report)
        started = time.perf_counter()
        for i in range(n_workers):
            info = pool.start()
            if i == 0:
                on_ready(info["setup"])
        queue: deque[tuple[str, Any]] = deque(items)
        in_flight: dict[Any, tuple[int, str, Any]] = {}
        idle = list(range(n_workers))
        done = 0
        progress(0, len(items))
        while queue or in_flight:
            while queue and idle:
                w = idle.pop()
                key, item = queue.popleft()
                pool.attempts[key] = pool.attempts.get(key, 0) + 1
                in_flight[pool.handles[w].run.remote(item)] = (w, key, item)
            ref = ray.wait(list(in_flight), num_returns=1)[0][0]
            w, key, item = in_flight.pop(ref)
            result = pool.collect(ref, w, key)
            idle.append(w)
            if result is _RETRY:
                queue.appendleft((key, item))
                continue
            on_result(key, result)
            done += 1
            progress(done, len(items))
        report.wall_s = time.perf_counter() - started
        pool.stop()
        return report


_RETRY = object()  # a result slot whose worker died: the question goes back on the queue


class _Workers:
    """The driver's workers: started (and replaced) by name, each result collected with the
    worker's stats, a dead worker's question marked for a retry until its attempts run out."""

    def __init__(self, ray: Any, settings: ClusterSettings, checks: Sequence[FileCheck],
                 setup: Callable[[contextlib.ExitStack], tuple[Callable[[Any], Any], Any]], report: ClusterReport) -> None:
        self.ray, self.settings, self.checks, self.setup, self.report = ray, settings, list(checks), setup, report
        self.actor = ray.remote(num_cpus=settings.cpus_per_worker, num_gpus=settings.gpus_per_worker, max_restarts=0)(_Worker)
        self.handles: list[Any] = []
        self.stats: list[WorkerStats] = []
        self.attempts: dict[str, int] = {}
        self._serial = 0

    def start(self, slot: int | None = None) -> dict[str, Any]:
        """A new worker in ``slot`` (appended when None); returns its info."""
        name = f"{WORKER_PREFIX}{self._serial}"
        self._serial += 1
        handle = self.actor.options(name=name, namespace=NAMESPACE).remote(self.checks, self.setup)
        try:
            info = self.ray.get(handle.info.remote())
        except self.ray.exceptions.RayActorError as exc:
            raise ClusterError(f"{name} could not start: {_cause(exc)}") from None
        stats = WorkerStats(name, info["host"])
        self.report.workers.append(stats)
        if slot is None:
            self.handles.append(handle)
            self.stats.append(stats)
        else:
            self.handles[slot], self.stats[slot] = handle, stats
        return info

    def collect(self, ref: Any, slot: int, key: str) -> Any:
        """The result of ``ref``, or ``_RETRY`` where its worker died (a fresh one takes the slot)."""
        stats = self.stats[slot]
        try:
            result, seconds = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as exc:
            stats.died = True
            self.report.retries.append({"question": key, "attempt": self.attempts[key], "worker": stats.name,
                                        "reason": _cause(exc)})
            if self.attempts[key] >= self.settings.max_attempts:
                raise ClusterError(f"question {key} failed {self.attempts[key]} attempts; its last worker died: "
                                   f"{_cause(exc)}") from None
            log.warning("%s died running %s; retrying it on another worker", stats.name, key)
            self.start(slot)
            return _RETRY
        except self.ray.exceptions.RayTaskError as exc:
            raise ClusterError(f"question {key} failed on {stats.name}: {_cause(exc)}") from None
        stats.questions += 1
        stats.busy_s += seconds
        return result

    def stop(self) -> None:
        for handle in self.handles:
            self.ray.kill(handle)


def _default_workers(ray: Any, settings: ClusterSettings) -> int:
    resources = ray.cluster_resources()
    if settings.gpus_per_worker > 0:
        return max(1, int(resources.get("GPU", 0) // settings.gpus_per_worker))
    return max(1, int(resources.get("CPU", 1) // settings.cpus_per_worker))


def _cause(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    return str(cause) if cause is not None else str(exc).splitlines()[0]
