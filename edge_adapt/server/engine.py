"""One loaded stack, one worker thread, a bounded queue: how many clients share one model.

llama.cpp contexts are not thread-safe and the KV pool is sized for one search at a time, so a
single worker runs the searches in arrival order; each gets its own ``Searcher`` view (its
sampling, prompt and step settings) over the shared generator and PRM, and its own seed, so
nothing of one request reaches another's answer or cost. A client that goes away sets its job's
cancel flag: the search stops before its next step and frees its KV sequences.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from edge_adapt.assembly import Stack
from edge_adapt.errors import EdgeAdaptError
from edge_adapt.guard import Budget
from edge_adapt.search import Searcher, SearchResult, SearchSettings
from edge_adapt.search.strategy import Strategy
from edge_adapt.tasks import Problem

log = logging.getLogger(__name__)


class Cancelled(EdgeAdaptError):
    """The client went away; its search was stopped and its sequences freed."""


class QueueFull(EdgeAdaptError):
    """More requests are waiting than the server was started to hold."""


class ShuttingDown(EdgeAdaptError):
    """The server is draining and takes no new work."""


@dataclass(frozen=True)
class Job:
    """One request's search: what to run, with which prompt settings, seed and budget."""

    problem: Problem
    strategy: Strategy
    settings: SearchSettings
    seed: int
    budget: Budget
    cancel: threading.Event = field(default_factory=threading.Event)


class Engine:
    """Runs jobs on the stack, one at a time, from a queue of at most ``max_waiting``."""

    def __init__(self, stack: Stack, max_waiting: int, on_done: Callable[[Job, SearchResult | None], None] = lambda j, r: None):
        self.stack = stack
        self.max_waiting = max_waiting
        self._on_done = on_done
        self._queue: queue.Queue[tuple[Job, Future[SearchResult]] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._pending = 0  # queued + running
        self._closing = False
        self._thread = threading.Thread(target=self._work, name="edge-adapt-engine", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return self._pending

    def submit(self, job: Job) -> Future[SearchResult]:
        with self._lock:
            if self._closing:
                raise ShuttingDown("the server is shutting down")
            if self._pending > self.max_waiting:  # one running, max_waiting queued
                raise QueueFull(f"{self._pending} requests are in progress or waiting")
            self._pending += 1
        future: Future[SearchResult] = Future()
        self._queue.put((job, future))
        return future

    def close(self) -> None:
        """Finish what is queued, then stop the worker."""
        with self._lock:
            self._closing = True
        self._queue.put(None)
        self._thread.join()

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            job, future = item
            result = None
            try:
                if job.cancel.is_set():
                    raise Cancelled("the client disconnected before its search started")
                result = self._run(job)
                future.set_result(result)
            except BaseException as exc:  # handed to the request, which answers it
                future.set_exception(exc)
            finally:
                with self._lock:
                    self._pending -= 1
                self._on_done(job, result)

    def _run(self, job: Job) -> SearchResult:
        stack = self.stack
        searcher = Searcher(stack.generator, stack.prm, stack.searcher.task, job.settings, policy=stack.policy,
                            answer_model=stack.searcher.answer_model if stack.prm.available else None,
                            vote_model=stack.searcher.vote_model)

        def interrupt() -> None:
            if job.cancel.is_set():
                raise Cancelled("the client disconnected")

        return searcher.run(job.strategy, job.problem, seed=job.seed, budget=job.budget, interrupt=interrupt)
