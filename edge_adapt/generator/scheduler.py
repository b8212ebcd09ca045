"""Continuous batching: every search in flight shares each ``llama_decode``.

Searches run on threads of their own and stay written as if alone: a search asks for a step (or a
prompt) and waits for it. The :class:`DecodeScheduler` puts the rows of *every* waiting and
running request into one batch per decode: one token per live branch of every search, then as much
of the waiting prompts as fits (chunked prefill, as llama-server mixes prompt and generation). A
request joins at the next decode after it arrives and leaves as soon as its step ends; nobody waits
for the slowest search (vLLM's iteration-level scheduling, llama-server's slots).

One thread of its own calls ``llama_decode``, always the same one: llama.cpp's CPU backend runs its
work on an OpenMP team bound to the calling thread, and teams of other threads that decoded a
moment ago keep spinning on the cores. It starts with the first request
and stops with the generator. Every call into the llama.cpp context (decode, and the sequence
copies and removals of the KV pool) is made under one lock, ``ctx_lock``: the context is not
thread-safe.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Hashable
from typing import Protocol

import numpy as np

from edge_adapt.errors import ContextOverflowError, EdgeAdaptError, ModelLoadError
from edge_adapt.generator.decoding import PromptWork, StepWork, Work, advance, cut_short, draw_first, take_logits
from edge_adapt.generator.kv_pool import SequencePool
from edge_adapt.generator.llama_backend import Batch, LlamaContext, LlamaModel
from edge_adapt.generator.llama_platform import ensure_backend, errors_in
from edge_adapt.generator.sampling import CandidateBuffer
from edge_adapt.generator.steps import StepEnd
from edge_adapt.generator.vocab import Vocabulary

log = logging.getLogger(__name__)


class SharedWorkPayer(Protocol):
    """Who pays for a share of a decode (an energy account): ``charge`` closes the meter's interval
    and splits it over ``shares`` (payer -> rows it had in the batch)."""

    def charge(self, shares: dict[Hashable, float]) -> None: ...


class DecodeScheduler:
    """Runs decode work of many threads in shared batches (see the module's docstring)."""

    def __init__(self, model: LlamaModel, ctx: LlamaContext, vocab: Vocabulary, pool: SequencePool,
                 ctx_lock: threading.RLock) -> None:
        self._model = model
        self._ctx = ctx
        self._vocab = vocab
        self._pool = pool
        self.ctx_lock = ctx_lock
        self.seq_ctx = ctx.n_ctx_seq  # the cells one path can hold: the whole pool, or its own stream
        self._batch = Batch(ctx.n_batch, ctx.n_seq_max)
        self._candidates = CandidateBuffer(vocab.n_tokens)
        self._cond = threading.Condition()
        self._waiting: list[Work] = []
        self._running: list[Work] = []  # touched by the decode thread only
        self._thread: threading.Thread | None = None
        self._closed = False
        self._warned_past_training = False
        self.decodes = 0  # llama_decode calls, and the rows they carried (their ratio: the mean batch)
        self.rows = 0

    def close(self) -> None:
        """Stop the decode thread (after what is in flight) and free the batch."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()
        self._batch.close()

    def run(self, work: Work) -> None:
        """Decode ``work`` together with whatever else is in flight; returns when it is done and
        raises what stopped it (its own interrupt, a decode error). Blocks the calling thread; if
        the caller is interrupted (Ctrl-C), the work is dropped at the next decode first."""
        with self._cond:
            if self._closed:
                raise EdgeAdaptError("the generator is closed")
            self._waiting.append(work)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="edge-adapt-decode", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        try:
            work.finished.wait()
        except BaseException:
            work.abandoned = True  # its nodes are about to be released: the loop must not touch them
            with self._cond:
                self._cond.notify_all()
            work.finished.wait()
            raise
        _outcome(work)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not (self._waiting or self._running or self._closed):
                    self._cond.wait()
                if self._closed and not (self._waiting or self._running):
                    return
            try:
                self._iterate()
            except BaseException as exc:  # a bug while decoding: fail what is in flight, keep serving
                log.exception("the decode loop failed")
                self._fail_all(exc)

    # -- one decode ------------------------------------------------------------------------------------

    def _iterate(self) -> None:
        with self._cond:
            new, self._waiting = self._waiting, []
        shares: dict[Hashable, float] = {}
        with self.ctx_lock:
            for work in new:
                if not _still_wanted(work):
                    continue
                if isinstance(work, StepWork):
                    try:
                        draw_first(work, self._candidates)
                    except BaseException as exc:
                        work.fail(exc)
                        continue
                self._running.append(work)
            steps = self._prepare_steps()
            self._batch.clear()
            for step in steps:
                for b in step.to_decode:
                    assert b.node._seq is not None
                    b.batch_index = self._batch.add(b.tokens[-1], b.node.n_past, b.node._seq, logits=True)
            prompts = self._prepare_prompts()
            if len(self._batch):
                self._decode_batch(steps, prompts, shares)
            self._retire()
        if shares:
            payer = next(iter(shares))
            payer.charge(shares)  # type: ignore[attr-defined]

    def _prepare_steps(self) -> list[StepWork]:
        """Advance every running step by its pending tokens; the branches that need a decode, within the free cells."""
        steps = []
        for work in self._running:
            if not isinstance(work, StepWork) or work.finished.is_set() or not _still_wanted(work):
                continue
            try:
                advance(work, self._vocab, self.seq_ctx)
            except BaseException as exc:  # its token hook raised (a client gone): only it stops
                work.fail(exc)
                continue
            if work.to_decode and work.cap_reached is not None and work.cap_reached():
                cut_short(work, work.to_decode, StepEnd.BUDGET)
            if work.to_decode:
                steps.append(work)
            else:
                work.close()
        if sum(len(s.to_decode) for s in steps) > self._pool.cells_free and self._pool.cache_only_cells:
            self._pool.forget_cache()  # the prompt cache gives its cells up first
        room = self._pool.cells_free
        for step in steps:
            if len(step.to_decode) > room:
                log.warning("KV cache full (n_ctx=%d): cutting %d branches short; raise n_ctx for longer solutions",
                            self._ctx.n_ctx, len(step.to_decode) - room)
                cut_short(step, step.to_decode[room:])
            room -= len(step.to_decode)
        return [s for s in steps if s.to_decode]

    def _prepare_prompts(self) -> list[PromptWork]:
        """Chunks of the waiting prompts, in arrival order, into what is left of the batch."""
        prompts = []
        for work in self._running:
            if not isinstance(work, PromptWork) or work.finished.is_set() or not _still_wanted(work):
                continue
            room = self._batch.capacity - len(self._batch)
            if room <= 0:
                break
            work.chunk = min(work.left, room)
            assert work.node is not None and work.node._seq is not None
            pos = work.node.n_past
            for i in range(work.chunk):
                last = work.fed + i == len(work.tokens) - 1
                index = self._batch.add(work.tokens[work.fed + i], pos + i, work.node._seq, logits=last)
                if last:
                    work.last_index = index
            prompts.append(work)
        return prompts

    def _decode_batch(self, steps: list[StepWork], prompts: list[PromptWork], shares: dict[Hashable, float]) -> None:
        with ensure_backend().capture() as lines:
            rc = self._batch.decode(self._ctx)
        self.decodes += 1
        self.rows += len(self._batch)
        for work in (*steps, *prompts):
            work.stats.decode_calls += 1
        if rc not in (0, 1):
            error = EdgeAdaptError(f"llama_decode failed with code {rc} ({errors_in(lines) or 'no detail'})")
            for work in (*steps, *prompts):
                work.fail(error)
            return
        if rc == 1:
            for step in steps:
                log.warning("llama.cpp found no KV slot for %d branches; cutting them short", len(step.to_decode))
                cut_short(step, step.to_decode)
            for prompt in prompts:
                prompt.fail(ContextOverflowError(f"llama.cpp found no KV slot for the prompt ({len(prompt.tokens)} tokens); "
                                                 "raise n_ctx."))
            return
        for step in steps:
            self._charge(shares, step, len(step.to_decode))
            for b in step.to_decode:
                b.node.n_past += 1
                self._pool.grow(b.node, 1)
            take_logits(step, self._logits, self._candidates)
            self._past_training(max(b.node.n_past for b in step.branches))
        for prompt in prompts:
            self._charge(shares, prompt, prompt.chunk)
            self._feed(prompt)

    def _feed(self, prompt: PromptWork) -> None:
        node = prompt.node
        assert node is not None
        node.n_past += prompt.chunk
        self._pool.grow(node, prompt.chunk)
        prompt.fed += prompt.chunk
        prompt.chunk = 0
        if prompt.left:
            return
        node._logits = self._logits(prompt.last_index).copy()
        if not np.isfinite(node._logits).all():
            prompt.fail(ModelLoadError(f"{self._model.path}: the model's logits for the prompt are not finite (NaN or inf): "
                                       "its weights are broken; re-export or re-download the GGUF"))
            return
        self._past_training(node.n_past)
        prompt.stats.prompt_tokens = len(prompt.tokens)
        prompt.close()

    def _retire(self) -> None:
        """Drop finished work from the loop and wake the threads waiting for it."""
        done = [w for w in self._running if w.finished.is_set() or (isinstance(w, StepWork) and not w.active)]
        if not done:
            return
        for work in done:
            if not work.finished.is_set():
                work.close()
        self._running = [w for w in self._running if not w.finished.is_set()]
        with self._cond:
            self._cond.notify_all()

    def _fail_all(self, exc: BaseException) -> None:
        with self._cond:
            works, self._waiting = self._running + self._waiting, []
            self._running = []
            for work in works:
                if not work.finished.is_set():
                    work.fail(exc)
            self._cond.notify_all()

    # -- helpers --------------------------------------------------------------------------------------

    def _logits(self, batch_index: int) -> np.ndarray:
        return np.ctypeslib.as_array(self._ctx.logits(batch_index), shape=(self._vocab.n_tokens,))

    @staticmethod
    def _charge(shares: dict[Hashable, float], work: Work, rows: int) -> None:
        if work.payer is not None:
            shares[work.payer] = shares.get(work.payer, 0.0) + rows

    def _past_training(self, n_past: int) -> None:
        """Warn once when a path runs past the positions the model was trained on."""
        if n_past > self._model.n_ctx_train and not self._warned_past_training:
            self._warned_past_training = True
            log.warning("%s: a branch reached %d tokens, past the %d the model was trained for; quality may drop from here",
                        self._model.path, n_past, self._model.n_ctx_train)


def _still_wanted(work: Work) -> bool:
    """Whether ``work`` goes on: False, and the work failed, when its caller abandoned it or its
    interrupt raised (that search's client went away; no other search stops)."""
    try:
        if work.abandoned:
            raise EdgeAdaptError("abandoned by its caller")
        if work.interrupt is not None:
            work.interrupt()
    except BaseException as exc:
        work.fail(exc)
        return False
    return True


def _outcome(work: Work) -> None:
    if work.error is not None:
        raise work.error
