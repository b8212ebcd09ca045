"""Where per-question work runs: in this process, or fanned out over a Ray cluster, behind one
interface, so that a job (a benchmark, the calibration's sampling, the rollouts) keeps one loop,
one resume path and one writer whichever it is.

A job hands an executor a ``setup`` (builds the models on whoever runs the work and returns a
handler and what the job needs to know of that runner), its ``(key, item)`` pairs still to do,
and two callbacks: ``on_ready`` with the first runner's information before any result, and
``on_result`` with each result (the job's single writer appends it). The executor returns a
:class:`~edge_adapt.cluster.ClusterReport` on a cluster and None in process.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from edge_adapt.cluster import ClusterReport, ClusterSettings, FileCheck, run_unordered

Setup = Callable[[contextlib.ExitStack], tuple[Callable[[Any], Any], Any]]


class Executor(Protocol):
    def __call__(self, checks: Sequence[FileCheck], setup: Setup, items: Sequence[tuple[str, Any]],
                 on_ready: Callable[[Any], None], on_result: Callable[[str, Any], None]) -> ClusterReport | None:
        """Run ``setup``'s handler on every item; ``checks`` are the model files a remote runner verifies."""
        ...


def run_in_process(checks: Sequence[FileCheck], setup: Setup, items: Sequence[tuple[str, Any]],
                   on_ready: Callable[[Any], None], on_result: Callable[[str, Any], None]) -> None:
    """The items in order, here: the models are built once, and nothing is built when nothing is left."""
    if not items:
        return None
    with contextlib.ExitStack() as exit_stack:
        handle, info = setup(exit_stack)
        on_ready(info)
        for key, item in items:
            on_result(key, handle(item))
    return None


def executor_for(cluster: ClusterSettings | None) -> Executor:
    """In process without cluster settings; else Ray workers (Ray is imported only when they start)."""
    return run_in_process if cluster is None else functools.partial(run_unordered, cluster)
