"""One loaded stack, ``parallel`` worker threads, a bounded queue: how many clients share one model.

Each worker runs one request's search at a time, in arrival order, prompt rendering and
tokenizing included (the event loop never touches the vocabulary); the searches of all workers
share every decode and PRM run (continuous batching, :mod:`edge_adapt.generator.scheduler`), as
llama-server's slots do. A search waits for room in the KV pool when the others hold it. Each job
runs on the stack's searcher with its own
sampling, prompt and step settings and its own seed, so nothing of one request reaches another's
answer. While a job runs, what it does reaches its request as events
(prompt accepted, tokens of a lone sample, samples drawn and decisions); a client that goes away
sets the job's cancel flag and the search stops before its next batched decode.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from edge_adapt.assembly import Stack
from edge_adapt.budget.guard import Budget
from edge_adapt.errors import ContextOverflowError, EdgeAdaptError
from edge_adapt.search import SearchResult, SearchSettings
from edge_adapt.search.context import RunHooks
from edge_adapt.search.strategy import Strategy
from edge_adapt.tasks import Problem

log = logging.getLogger(__name__)


class Cancelled(EdgeAdaptError):
    """The client went away; its search was stopped and its sequences freed."""


class QueueFull(EdgeAdaptError):
    """More requests are waiting than the server was started to hold."""


class ShuttingDown(EdgeAdaptError):
    """The server is draining and takes no new work."""


class Events:
    """A job's events, from the worker thread to the request's coroutine. Bounded by the job:
    one event per token of a lone sample (at most its token cap), a few per sample drawn."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def put(self, kind: str, value: Any = None) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, (kind, value))

    async def get(self, timeout: float) -> tuple[str, Any] | None:
        """The next event, or None after ``timeout`` seconds without one."""
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None


@dataclass(frozen=True)
class Job:
    """One request's search: what to run, with which prompt settings, seed and budget, and how
    many KV cells its samples may need beside the prompt."""

    problem: Problem
    strategy: Strategy
    settings: SearchSettings
    seed: int
    budget: Budget
    stream_tokens: bool = False  # the job draws one sample and it is the answer: send its tokens as decoded
    events: Events | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    measured: dict[str, int] = field(default_factory=dict)  # written by the worker: the prompt's length in tokens

    def emit(self, kind: str, value: Any = None) -> None:
        if self.events is not None:
            self.events.put(kind, value)


class Engine:
    """Runs jobs on the stack, ``parallel`` at once, from a queue of at most ``max_waiting`` more."""

    def __init__(self, stack: Stack, max_waiting: int, on_done: Callable[[Job, SearchResult | None], None] = lambda j, r: None,
                 parallel: int = 1):
        self.stack = stack
        self.max_waiting = max_waiting
        self.parallel = parallel
        self._on_done = on_done
        self._queue: queue.Queue[tuple[Job, Future[SearchResult]] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._pending = 0  # queued + running

        self._closing = False
        self._threads = [threading.Thread(target=self._work, name=f"edge-adapt-engine-{i}", daemon=True)
                         for i in range(parallel)]
        for thread in self._threads:
            thread.start()

    @property
    def pending(self) -> int:
        return self._pending

    def submit(self, job: Job) -> Future[SearchResult]:
        with self._lock:
            if self._closing:
                raise ShuttingDown("the server is shutting down")
            if self._pending >= self.parallel + self.max_waiting:  # parallel running, max_waiting queued
                raise QueueFull(f"{self._pending} requests are in progress or waiting")
            self._pending += 1
        future: Future[SearchResult] = Future()
        self._queue.put((job, future))
        return future

    def close(self) -> None:
        """Finish what is queued, then stop the workers."""
        with self._lock:
            self._closing = True
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            job, future = item
            result = None
            try:
                if job.cancel.is_set():
                    raise Cancelled("the client disconnected before its search started")
                result = self._run(job)
                future.set_result(result)
            except EdgeAdaptError as exc:  # a refusal the request answers: its message says it all
                future.set_exception(exc.with_traceback(None))  # the frames (a prompt's tokens) go now
            except BaseException as exc:  # a bug: handed to the request with its traceback for the log
                future.set_exception(exc)
            finally:
                with self._lock:
                    self._pending -= 1
                self._on_done(job, result)
                job.emit("done")

    def _run(self, job: Job) -> SearchResult:
        def interrupt() -> None:
            if job.cancel.is_set():
                raise Cancelled("the client disconnected")

        def prompt(n_tokens: int) -> None:
            self.check_room(job, n_tokens)
            job.measured["prompt_tokens"] = n_tokens
            job.emit("started", n_tokens)

        hooks = RunHooks(interrupt=interrupt, prompt=prompt,
                         token=(lambda piece: job.emit("token", piece)) if job.stream_tokens else None,
                         progress=lambda samples, decision: job.emit("progress", (samples, decision)))
        return self.stack.searcher.run(job.strategy, job.problem, seed=job.seed, budget=job.budget, hooks=hooks,
                                       settings=job.settings)

    def check_room(self, job: Job, n_prompt: int) -> None:
        """A prompt the KV pool cannot hold beside this request's own samples is refused with the
        real numbers (every live path of the search may write its whole token cap)."""
        gen = self.stack.generator
        cap = (job.settings.rules or self.stack.searcher.task.step_rules).max_new_tokens
        need = job.strategy.live_paths * cap
        room = min(gen.n_ctx - need, gen.seq_ctx - cap)
        if n_prompt > room:
            raise ContextOverflowError(
                f"the prompt is {n_prompt} tokens; this request's samples need {need} more KV cells "
                f"({job.strategy.live_paths} live x {cap} max_tokens) and the context holds {gen.n_ctx}, so its prompt "
                f"may have at most {max(room, 0)} tokens: shorten the conversation, or lower max_tokens or n")
