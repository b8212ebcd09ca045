"""The decode loop: llama_decode over the solution tree, prompt segments and batched steps.

Every branch of an ``expand`` call draws its next token from its own logits and its own seeded
sampler; all branches that go on are decoded together, one token each per ``llama_decode``
call, until each reaches the end of its step. A branch that ends a step keeps its last logits
on its node, so expanding it later starts without evaluating anything again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from edge_adapt.errors import BranchCapacityError, ContextOverflowError, EdgeAdaptError, ModelLoadError
from edge_adapt.generator.kv_pool import SequencePool
from edge_adapt.generator.llama_backend import Batch, LlamaContext, LlamaModel
from edge_adapt.generator.llama_platform import ensure_backend, errors_in
from edge_adapt.generator.sampling import BranchSampler, CandidateBuffer, SamplingParams
from edge_adapt.generator.steps import StepEnd, StepRules, StepScanner
from edge_adapt.generator.tree import GenerationStats, Node
from edge_adapt.generator.vocab import Vocabulary

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Branch:
    node: Node
    sampler: BranchSampler
    scanner: StepScanner
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    pending: tuple[int, float] | None = None
    batch_index: int = -1


class TreeDecoder:
    """Decodes tokens into the KV sequences of nodes: given text, or sampled steps."""

    def __init__(self, model: LlamaModel, ctx: LlamaContext, vocab: Vocabulary, pool: SequencePool) -> None:
        self._model = model
        self._ctx = ctx
        self._vocab = vocab
        self._pool = pool
        self.seq_ctx = ctx.n_ctx_seq  # the cells one path can hold: the whole pool, or its own stream
        self._batch = Batch(ctx.n_batch, ctx.n_seq_max)
        self._candidates = CandidateBuffer(vocab.n_tokens)
        self._warned_past_training = False
        # called before every batched decode of generated tokens and may raise to abandon the step
        # (a client gone mid-step: a long step would otherwise run to its end); None: never
        self.interrupt: Callable[[], None] | None = None
        self.on_token: Callable[[bytes], None] | None = None  # every generated token's bytes, as decoded

    def close(self) -> None:
        self._batch.close()

    def generate(self, children: Sequence[Node], sampling: SamplingParams, rules: StepRules) -> GenerationStats:
        """Sample one step into each child (live, holding a copy of its parent's sequence)."""
        started = time.perf_counter()
        stats = GenerationStats()
        branches: list[_Branch] = []
        try:
            for child in children:
                parent = child.parent
                assert parent is not None and parent._logits is not None and child.seed is not None
                recent = _recent_logprobs(parent, rules.confidence_window) if rules.min_confidence is not None else ()
                branch = _Branch(child, BranchSampler(sampling, child.seed), StepScanner(rules, parent.generated, recent))
                branches.append(branch)
                branch.pending = branch.sampler.sample(parent._logits, self._candidates)
            self._run(branches, stats, started)
        finally:
            for b in branches:
                b.sampler.close()
        stats.wall_s = time.perf_counter() - started
        return stats

    def _decode(self, stats: GenerationStats) -> int:
        with ensure_backend().capture() as lines:
            rc = self._batch.decode(self._ctx)
        stats.decode_calls += 1
        if rc not in (0, 1):
            raise EdgeAdaptError(f"llama_decode failed with code {rc} ({errors_in(lines) or 'no detail'})")
        return rc

    def _logits(self, batch_index: int) -> np.ndarray:
        return np.ctypeslib.as_array(self._ctx.logits(batch_index), shape=(self._vocab.n_tokens,))

    def evaluate(self, node: Node, tokens: Sequence[int], what: str, cached_prefix: int = 0) -> GenerationStats:
        """Decode given tokens into a new sequence for ``node`` (sharing its parent's cells, or the
        prompt cache's first ``cached_prefix`` cells: ``tokens`` then continue from there)."""
        started = time.perf_counter()
        if not self._pool.free_sequences:
            raise BranchCapacityError(
                f"no free sequence for a new {what}: all n_seq_max={self._ctx.n_seq_max} are held by live "
                "nodes; release nodes or raise n_seq_max."
            )
        if len(tokens) > self._pool.cells_free:
            raise ContextOverflowError(
                f"the {what} needs {len(tokens)} KV cells but only {self._pool.cells_free} of n_ctx={self._ctx.n_ctx} "
                f"are free ({self._pool.cells_used} held by live nodes); release nodes or raise n_ctx."
            )
        if cached_prefix:
            self._pool.acquire_cached(node, cached_prefix)
        else:
            self._pool.acquire(node, copy_from=node.parent._seq if node.parent is not None else None)
        stats = GenerationStats()
        try:
            pos = node.n_past
            last_index = 0
            for start in range(0, len(tokens), self._ctx.n_batch):
                chunk = tokens[start : start + self._ctx.n_batch]
                last_chunk = start + len(chunk) == len(tokens)
                self._batch.clear()
                for i, token in enumerate(chunk):
                    last_index = self._batch.add(token, pos + i, node._seq, logits=last_chunk and i == len(chunk) - 1)
                if self._decode(stats) != 0:
                    raise ContextOverflowError(f"llama.cpp found no KV slot for the {what} ({len(tokens)} tokens); raise n_ctx.")
                pos += len(chunk)
                self._pool.grow(node, len(chunk))
            node.n_past = pos
            node._logits = self._logits(last_index).copy()
            if not np.isfinite(node._logits).all():
                raise ModelLoadError(f"{self._model.path}: the model's logits for the {what} are not finite (NaN or inf): "
                                     "its weights are broken; re-export or re-download the GGUF")
            self._past_training(pos)
        except BaseException:
            self._pool.release(node)
            raise
        stats.prompt_tokens = len(tokens)
        stats.wall_s = time.perf_counter() - started
        node.wall_s = stats.wall_s
        return stats

    def _run(self, branches: list[_Branch], stats: GenerationStats, started: float) -> None:
        active = branches
        while active:
            if self.interrupt is not None:
                self.interrupt()
            to_decode: list[_Branch] = []
            for b in active:
                assert b.pending is not None
                token, logprob = b.pending
                b.pending = None
                b.tokens.append(token)
                b.logprobs.append(logprob)
                stats.generated_tokens += 1
                piece = self._vocab.piece(token)
                end = b.scanner.push(piece, self._vocab.is_eog(token), logprob)
                if self.on_token is not None and piece:
                    self.on_token(piece)
                if (end is None or not end.ends_solution) and b.node.n_past + 1 >= self.seq_ctx:
                    end = StepEnd.CONTEXT
                if end is not None:
                    self._finish(b, end, started)
                if end is None or not end.ends_solution:
                    to_decode.append(b)  # continues, or ended a step and needs logits for the next
            room = self._pool.cells_free
            if len(to_decode) > room:
                log.warning(
                    "KV cache full (n_ctx=%d): cutting %d branches short; raise n_ctx for longer solutions",
                    self._ctx.n_ctx,
                    len(to_decode) - room,
                )
                for b in to_decode[room:]:
                    self._finish(b, StepEnd.CONTEXT, started, overwrite=True)
                to_decode = to_decode[:room]
            if not to_decode:
                break
            self._batch.clear()
            for b in to_decode:
                assert b.node._seq is not None
                b.batch_index = self._batch.add(b.tokens[-1], b.node.n_past, b.node._seq, logits=True)
            if self._decode(stats) == 1:
                log.warning("llama.cpp found no KV slot for %d branches; cutting them short", len(to_decode))
                for b in to_decode:
                    self._finish(b, StepEnd.CONTEXT, started, overwrite=True)
                break
            for b in to_decode:
                b.node.n_past += 1
                self._pool.grow(b.node, 1)
                logits = self._logits(b.batch_index)
                if b.node.end is None:
                    b.pending = b.sampler.sample(logits, self._candidates)
                else:
                    b.node._logits = logits.copy()
            active = [b for b in to_decode if b.node.end is None]
            if not self._warned_past_training:
                self._past_training(max(b.node.n_past for b in to_decode))

    def _past_training(self, n_past: int) -> None:
        """Warn once when a path runs past the positions the model was trained on."""
        if n_past > self._model.n_ctx_train and not self._warned_past_training:
            self._warned_past_training = True
            log.warning(
                "%s: a branch reached %d tokens, past the %d the model was trained for; quality may drop from here",
                self._model.path,
                n_past,
                self._model.n_ctx_train,
            )

    def _finish(self, b: _Branch, end: StepEnd, started: float, overwrite: bool = False) -> None:
        node = b.node
        if node.end is not None and not overwrite:
            return
        node.end = end
        node.tokens = tuple(b.tokens)
        node.logprobs = tuple(b.logprobs)
        node.text = b.scanner.text
        node.generated = (node.parent.generated if node.parent else 0) + len(b.tokens)
        node.wall_s = time.perf_counter() - started


def _recent_logprobs(node: Node, n: int) -> list[float]:
    """The log-probabilities of the last ``n`` tokens generated on the path to ``node`` (since the
    prompt), oldest first."""
    segments: list[tuple[float, ...]] = []
    held = 0
    step: Node | None = node
    while step is not None and step.kind == "step" and held < n:
        segments.append(step.logprobs)
        held += len(step.logprobs)
        step = step.parent
    recent = [lp for segment in reversed(segments) for lp in segment]
    return recent[-n:]
