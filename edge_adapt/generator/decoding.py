"""Decode work: what one search asks of a ``llama_decode`` loop, as items the scheduler can merge.

A :class:`PromptWork` feeds given tokens into a node's sequence (in chunks, beside other work);
a :class:`StepWork` samples one step into each of its children: every branch draws its next token
from its own logits and its own seeded sampler, one token per decode, until it reaches the end of
its step. A branch that ends a step keeps its last logits on its node, so expanding it later starts
without evaluating anything again. Work items know nothing of each other: the scheduler
(:mod:`edge_adapt.generator.scheduler`) puts the rows of every item in flight into one batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

from edge_adapt.generator.sampling import BranchSampler, CandidateBuffer, SamplingParams
from edge_adapt.generator.steps import StepEnd, StepRules, StepScanner
from edge_adapt.generator.tree import GenerationStats, Node
from edge_adapt.generator.vocab import Vocabulary

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Branch:
    node: Node
    sampler: BranchSampler
    scanner: StepScanner
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    pending: tuple[int, float] | None = None
    batch_index: int = -1


@dataclass(eq=False)
class Work:
    """One search's request to the decode loop; done (or failed) once ``finished`` is set.

    ``payer`` is who the energy of a shared decode is charged to (by the rows it had in the batch);
    ``interrupt`` is called before every decode this work takes part in and may raise to abandon it
    (the exception reaches the search that submitted it, and no one else)."""

    payer: Hashable | None = None
    interrupt: Callable[[], None] | None = None
    stats: GenerationStats = field(default_factory=GenerationStats)
    error: BaseException | None = None
    abandoned: bool = False  # its caller stopped waiting (Ctrl-C): dropped at the next decode
    finished: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.perf_counter)

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.close()

    def close(self) -> None:
        self.stats.wall_s = time.perf_counter() - self.started
        self.finished.set()


@dataclass(eq=False)
class PromptWork(Work):
    """Tokens to evaluate into ``node``'s sequence (acquired), starting at ``node.n_past``."""

    node: Node | None = None
    tokens: Sequence[int] = ()
    fed: int = 0  # tokens already in the batch that was decoded last
    chunk: int = 0  # tokens of this work in the batch being decoded
    last_index: int = -1  # the batch row of the last token, once it is in the batch

    @property
    def left(self) -> int:
        return len(self.tokens) - self.fed


@dataclass(eq=False)
class StepWork(Work):
    """One step to sample into each of ``branches`` (children holding a copy of their parent)."""

    branches: list[Branch] = field(default_factory=list)
    active: list[Branch] = field(default_factory=list)  # branches still generating (a token pending)
    to_decode: list[Branch] = field(default_factory=list)  # rows of this work in the batch being decoded
    on_token: Callable[[bytes], None] | None = None
    # whether the search's hard cap is spent, asked before every decode: its branches end there
    # (StepEnd.BUDGET) and keep what they wrote
    cap_reached: Callable[[], bool] | None = None

    def close(self) -> None:
        for b in self.branches:
            b.sampler.close()
        super().close()


def start_step(children: Sequence[Node], sampling: SamplingParams, rules: StepRules, **work: object) -> StepWork:
    """A step for each child (live, holding a copy of its parent's sequence): its sampler and scanner."""
    step = StepWork(**work)  # type: ignore[arg-type]
    try:
        for child in children:
            parent = child.parent
            assert parent is not None and parent._logits is not None and child.seed is not None
            recent = recent_logprobs(parent, rules.confidence_window) if rules.min_confidence is not None else ()
            step.branches.append(Branch(child, BranchSampler(sampling, child.seed), StepScanner(rules, parent.generated, recent)))
    except BaseException:
        step.close()
        raise
    return step


def draw_first(step: StepWork, candidates: CandidateBuffer) -> None:
    """Each branch's first token, from its parent's saved logits (the shared prefix is not evaluated again)."""
    for b in step.branches:
        assert b.node.parent is not None and b.node.parent._logits is not None
        b.pending = b.sampler.sample(b.node.parent._logits, candidates)
    step.active = list(step.branches)


def advance(step: StepWork, vocab: Vocabulary, seq_ctx: int) -> None:
    """Take each active branch's pending token: scan it, end the branch's step where it ends, and
    leave in ``to_decode`` the branches whose token must be decoded (those going on, and those that
    ended a step but not the solution: their logits start the next step)."""
    step.to_decode = []
    for b in step.active:
        assert b.pending is not None
        token, logprob = b.pending
        b.pending = None
        b.tokens.append(token)
        b.logprobs.append(logprob)
        step.stats.generated_tokens += 1
        piece = vocab.piece(token)
        end = b.scanner.push(piece, vocab.is_eog(token), logprob)
        if step.on_token is not None and piece:
            step.on_token(piece)
        if (end is None or not end.ends_solution) and b.node.n_past + 1 >= seq_ctx:
            end = StepEnd.CONTEXT
        if end is not None:
            finish(b, end, step.started)
        if end is None or not end.ends_solution:
            step.to_decode.append(b)


def take_logits(step: StepWork, logits_of: Callable[[int], np.ndarray], candidates: CandidateBuffer) -> None:
    """After a decode: each decoded branch samples its next token, or keeps its logits if its step ended."""
    for b in step.to_decode:
        logits = logits_of(b.batch_index)
        if b.node.end is None:
            b.pending = b.sampler.sample(logits, candidates)
        else:
            b.node._logits = logits.copy()
    step.active = [b for b in step.to_decode if b.node.end is None]
    step.to_decode = []


def cut_short(step: StepWork, branches: Sequence[Branch], end: StepEnd = StepEnd.CONTEXT) -> None:
    """End ``branches`` at ``end`` (by default the context: no room left in the KV cache); they are not decoded."""
    for b in branches:
        finish(b, end, step.started, overwrite=True)
    cut = set(map(id, branches))
    step.to_decode = [b for b in step.to_decode if id(b) not in cut]
    step.active = [b for b in step.active if id(b) not in cut]


def finish(b: Branch, end: StepEnd, started: float, overwrite: bool = False) -> None:
    node = b.node
    if node.end is not None and not overwrite:
        return
    node.end = end
    node.tokens = tuple(b.tokens)
    node.logprobs = tuple(b.logprobs)
    node.text = b.scanner.text
    node.generated = (node.parent.generated if node.parent else 0) + len(b.tokens)
    node.wall_s = time.perf_counter() - started


def recent_logprobs(node: Node, n: int) -> list[float]:
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
