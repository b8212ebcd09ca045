"""Where per-question work runs: in this process, or fanned out over a Ray cluster, behind one
interface, so that a job (a benchmark, the calibration's sampling, the rollouts) keeps one loop,
one resume path and one writer whichever it is.

A job hands an executor a ``setup`` (builds the models on whoever runs the work and returns a
handler and what the job needs to know of that runner), its ``(key, item)`` pairs still to do,
and two callbacks: ``on_ready`` with the first runner's information before any result, and
``on_result`` with each result (the job's single writer appends it). The executor returns a
:class:`~edge_adapt.cluster.ClusterReport` on a cluster and None in process.

In process, ``parallel`` items run at once on threads over the same models: their searches share
every decode and PRM run (continuous batching), and results reach ``on_result`` on the calling
thread as they finish, so the job keeps one writer. A handler with a ``cancel()`` is told to stop
its searches when the job is interrupted (Ctrl-C, an error), and nothing unfinished is written.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Protocol

from edge_adapt.cluster import ClusterReport, ClusterSettings, FileCheck, run_unordered

Setup = Callable[[contextlib.ExitStack], tuple[Callable[[Any], Any], Any]]


class Executor(Protocol):
    def __call__(self, checks: Sequence[FileCheck], setup: Setup, items: Sequence[tuple[str, Any]],
                 on_ready: Callable[[Any], None], on_result: Callable[[str, Any], None]) -> ClusterReport | None:
        """Run ``setup``'s handler on every item; ``checks`` are the model files a remote runner verifies."""
        ...


def run_in_process(checks: Sequence[FileCheck], setup: Setup, items: Sequence[tuple[str, Any]],
                   on_ready: Callable[[Any], None], on_result: Callable[[str, Any], None], *, parallel: int = 1) -> None:
    """The items here, ``parallel`` at once: the models are built once, and nothing is built when nothing is left."""
    if not items:
        return None
    with contextlib.ExitStack() as exit_stack:
        handle, info = setup(exit_stack)
        on_ready(info)
        if parallel <= 1:
            for key, item in items:
                on_result(key, handle(item))
            return None
        _run_threads(handle, items, on_result, parallel)
    return None


def _run_threads(handle: Callable[[Any], Any], items: Sequence[tuple[str, Any]], on_result: Callable[[str, Any], None],
                 parallel: int) -> None:
    todo = iter(items)
    with ThreadPoolExecutor(parallel, thread_name_prefix="edge-adapt-search") as pool:
        running: dict[Future[Any], str] = {}
        try:
            for key, item in itertools.islice(todo, parallel):
                running[pool.submit(handle, item)] = key
            while running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    key = running.pop(future)
                    on_result(key, future.result())
                    for next_key, next_item in itertools.islice(todo, 1):
                        running[pool.submit(handle, next_item)] = next_key
        except BaseException:
            cancel = getattr(handle, "cancel", None)
            if cancel is not None:
                cancel()
            for future in running:
                future.cancel()
            raise


def executor_for(cluster: ClusterSettings | None, parallel: int = 1) -> Executor:
    """In process (``parallel`` items at once) without cluster settings; else Ray workers, one
    question at a time each (Ray is imported only when they start)."""
    if cluster is None:
        return functools.partial(run_in_process, parallel=parallel)
    return functools.partial(run_unordered, cluster)
