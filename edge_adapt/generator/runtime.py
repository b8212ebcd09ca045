"""The branching generator: one reasoning step at a time, many branches in one KV cache.

A :class:`Node` is a point in a solution whose tokens sit in the KV cache under one sequence
id. ``expand`` gives a node children: each child gets a fresh sequence that *shares* the
parent's cells (``seq_cp`` on a unified cache costs nothing), draws its first token from the
parent's saved logits, and then all children of all parents are decoded together, one token
per branch per ``llama_decode`` call, until each reaches the end of its step. Nothing of the
shared prefix is ever evaluated twice; a finished or released branch gives its cells back.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

import numpy as np

from edge_adapt.errors import BranchCapacityError, ContextOverflowError, EdgeAdaptError, SamplingConfigError
from edge_adapt.generator.llama_backend import (
    KV_TYPES,
    Batch,
    ContextSettings,
    LlamaContext,
    LlamaModel,
    ensure_backend,
    errors_in,
)
from edge_adapt.generator.sampling import BranchSampler, CandidateBuffer, SamplingParams
from edge_adapt.generator.steps import StepEnd, StepRules, StepScanner
from edge_adapt.generator.vocab import Vocabulary, check_fits

log = logging.getLogger(__name__)

MAX_SEQUENCES = 256  # LLAMA_MAX_SEQ in llama.cpp


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class GeneratorConfig:
    """How the model is loaded and how much branching its context can hold.

    ``n_seq_max`` is the number of nodes that can be live at once (every branch being decoded
    and every node kept for later expansion holds one); ``n_ctx`` is the pool of KV cells they
    share: a shared prefix counts once.
    """

    n_ctx: int = 4096
    n_seq_max: int = 32
    n_batch: int = 512
    n_threads: int | None = None  # None: all CPU cores this process may use
    n_threads_batch: int | None = None
    n_gpu_layers: int = 0  # -1 offloads every layer (needs a CUDA/Metal/Vulkan build of llama.cpp)
    main_gpu: int = 0
    flash_attn: bool | None = None  # None: llama.cpp decides
    kv_type: str = "f16"  # KV cache precision: "f16", "f32" (exact), "q8_0" (half the memory; needs flash attention)
    # one KV pool for all branches (a branch costs nothing, shares its prefix) or one stream of
    # n_ctx / n_seq_max cells per sequence (a branch copies its parent's stream; attention reads
    # only its own); benchmarks/bench_kv.py measures both
    kv_unified: bool = True
    use_mmap: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.n_seq_max <= MAX_SEQUENCES:
            raise SamplingConfigError(f"n_seq_max must be in [1, {MAX_SEQUENCES}], got {self.n_seq_max}")
        if self.n_ctx < 16:
            raise SamplingConfigError(f"n_ctx must be at least 16, got {self.n_ctx}")
        if self.n_batch < 1:
            raise SamplingConfigError(f"n_batch must be >= 1, got {self.n_batch}")
        if self.kv_type not in KV_TYPES:
            raise SamplingConfigError(f"kv_type must be one of {', '.join(KV_TYPES)}, got {self.kv_type!r}")
        if self.kv_type == "q8_0" and self.flash_attn is False:
            raise SamplingConfigError("a q8_0 KV cache needs flash attention; leave flash_attn unset or True")


@dataclass
class GenerationStats:
    """What a call spent. ``prompt_tokens`` were evaluated as given text, ``generated_tokens``
    were sampled; ``decode_calls`` counts ``llama_decode`` invocations (a batch of siblings is one)."""

    prompt_tokens: int = 0
    generated_tokens: int = 0
    decode_calls: int = 0
    wall_s: float = 0.0

    def __add__(self, other: GenerationStats) -> GenerationStats:
        return GenerationStats(
            self.prompt_tokens + other.prompt_tokens,
            self.generated_tokens + other.generated_tokens,
            self.decode_calls + other.decode_calls,
            self.wall_s + other.wall_s,
        )

    def __sub__(self, other: GenerationStats) -> GenerationStats:
        return GenerationStats(
            self.prompt_tokens - other.prompt_tokens,
            self.generated_tokens - other.generated_tokens,
            self.decode_calls - other.decode_calls,
            self.wall_s - other.wall_s,
        )


@dataclass(eq=False)
class Node:
    """A point in a solution, and the segment of tokens that led to it.

    The root holds the prompt; ``extend`` adds forced text; ``expand`` adds generated steps,
    whose tokens, per-token log-probabilities, end reason, seed and wall time are kept here.
    """

    id: int
    parent: Node | None = field(repr=False)
    kind: str  # "prompt", "forced" or "step"
    tokens: tuple[int, ...] = field(repr=False)
    text: str
    logprobs: tuple[float, ...] = field(default=(), repr=False)
    end: StepEnd | None = None
    seed: int | None = None
    wall_s: float = 0.0
    depth: int = 0  # generated steps between the root and this node
    generated: int = 0  # tokens generated since the last prompt or forced text
    n_past: int = 0  # positions of this path held in the KV cache
    _seq: int | None = field(default=None, repr=False)
    _cells: int = field(default=0, repr=False)  # KV cells this node's own segment occupies
    _holders: int = field(default=0, repr=False)  # live nodes at or below this one
    _logits: np.ndarray | None = field(default=None, repr=False)
    _seeds: np.random.SeedSequence | None = field(default=None, repr=False)

    @property
    def is_live(self) -> bool:
        """Its KV cells are held: it can be expanded (unless it ended the solution)."""
        return self._seq is not None

    @property
    def ends_solution(self) -> bool:
        return self.end is not None and self.end.ends_solution

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    def path(self) -> list[Node]:
        """Nodes from the root to this one."""
        nodes: list[Node] = []
        node: Node | None = self
        while node is not None:
            nodes.append(node)
            node = node.parent
        return nodes[::-1]

    def steps(self) -> list[Node]:
        """The generated steps on the path, oldest first."""
        return [n for n in self.path() if n.kind == "step"]

    def solution_text(self) -> str:
        """Everything after the prompt: forced text and generated steps, in order."""
        return "".join(n.text for n in self.path() if n.kind != "prompt")


@dataclass(frozen=True)
class Expansion:
    """The children made by one :meth:`Generator.expand` call, in parent order, and its cost."""

    children: list[Node]
    stats: GenerationStats


@dataclass(eq=False)
class _Branch:
    node: Node
    sampler: BranchSampler
    scanner: StepScanner
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    pending: tuple[int, float] | None = None
    batch_index: int = -1


class Generator:
    """A GGUF generator that samples reasoning steps on a tree of shared-prefix branches.

    Not thread-safe: one Generator serves one thread (load one per worker thread).

    >>> gen = Generator("model.gguf", GeneratorConfig(n_ctx=2048, n_seq_max=16))
    >>> root = gen.prefill("Q:454+762*3\\n", seed=1)
    >>> steps = gen.expand([root], 8, sampling=SamplingParams(temperature=0.7)).children
    >>> gen.release(root)
    """

    def __init__(self, model_path: str | os.PathLike[str], config: GeneratorConfig | None = None) -> None:
        self.config = config or GeneratorConfig()
        cfg = self.config
        self.model = LlamaModel(model_path, n_gpu_layers=cfg.n_gpu_layers, main_gpu=cfg.main_gpu, use_mmap=cfg.use_mmap)
        self.vocab = Vocabulary(self.model)
        threads = cfg.n_threads or default_threads()
        self.ctx = LlamaContext(
            self.model,
            ContextSettings(
                n_ctx=cfg.n_ctx,
                n_batch=max(cfg.n_batch, cfg.n_seq_max),
                n_seq_max=cfg.n_seq_max,
                n_threads=threads,
                n_threads_batch=cfg.n_threads_batch or threads,
                flash_attn=cfg.flash_attn,
                kv_type=cfg.kv_type,
                kv_unified=cfg.kv_unified,
            ),
        )
        # n_ctx is the KV pool shared by all branches (unified cache), so a large one is no sign of
        # trouble; a single path longer than the model's training context is (see _past_training).
        self._warned_past_training = False
        self.n_ctx = self.ctx.n_ctx
        # the cells one path can hold: the whole pool, or its own stream
        self.seq_ctx = self.ctx.n_ctx_seq
        self._batch = Batch(self.ctx.n_batch, self.ctx.n_seq_max)
        self._candidates = CandidateBuffer(self.vocab.n_tokens)
        self._free_seqs = list(range(self.ctx.n_seq_max - 1, -1, -1))
        self._live: dict[int, Node] = {}  # sequence id -> the node holding it
        self._cells_used = 0
        self._ids = count()
        self.usage = GenerationStats()

    # -- capacity ---------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self.model.path

    @property
    def free_sequences(self) -> int:
        return len(self._free_seqs)

    @property
    def kv_cells_used(self) -> int:
        return self._cells_used

    @property
    def kv_cells_free(self) -> int:
        """Free cells of the shared pool (unified cache); with per-sequence streams every
        sequence has ``seq_ctx`` cells of its own and the pool never runs out first."""
        if not self.config.kv_unified:
            return self.n_ctx
        return self.n_ctx - self._cells_used

    # -- building the tree --------------------------------------------------------------------

    def prefill(
        self,
        prompt: str | Sequence[int],
        *,
        seed: int = 0,
        add_special: bool = True,
        parse_special: bool = True,
    ) -> Node:
        """Evaluate a prompt into a new root node, ready to expand.

        ``seed`` roots the random streams of every branch below this node: the same prompt,
        seed and calls give the same tokens.
        """
        if seed < 0:
            raise SamplingConfigError(f"seed must be >= 0, got {seed}")
        if isinstance(prompt, str):
            tokens = self.vocab.tokenize(prompt, add_special=add_special, parse_special=parse_special)
        else:
            tokens = [int(t) for t in prompt]
            bad = [t for t in tokens if not 0 <= t < self.vocab.n_tokens]
            if bad:
                raise EdgeAdaptError(f"token ids {bad[:5]} are outside the vocabulary (0..{self.vocab.n_tokens - 1})")
        if not tokens:
            raise EdgeAdaptError("the prompt is empty (and the model adds no BOS token); give it some text")
        check_fits(len(tokens), self.seq_ctx, self.model.n_ctx_train)
        node = Node(
            id=next(self._ids),
            parent=None,
            kind="prompt",
            tokens=tuple(tokens),
            text=self.vocab.detokenize(tokens),
            _seeds=np.random.SeedSequence(seed),
        )
        self._evaluate(node, tokens, what="prompt")
        return node

    def extend(self, node: Node, text: str, *, parse_special: bool = False) -> Node:
        """A child of ``node`` holding ``text`` as given (teacher-forced, evaluated as prompt).

        Used to continue from a known prefix, e.g. Monte-Carlo rollouts from a partial solution.
        The text is tokenized on its own, so start it at a natural boundary (a new step).
        """
        self._check_expandable(node)
        tokens = self.vocab.tokenize(text, add_special=False, parse_special=parse_special)
        if not tokens:
            raise EdgeAdaptError("extend() needs non-empty text")
        check_fits(node.n_past + len(tokens), self.seq_ctx, self.model.n_ctx_train, what="prompt plus forced text")
        assert node._seeds is not None
        child = Node(
            id=next(self._ids),
            parent=node,
            kind="forced",
            tokens=tuple(tokens),
            text=self.vocab.detokenize(tokens),
            depth=node.depth,
            n_past=node.n_past,
            _seeds=node._seeds.spawn(1)[0],
        )
        self._evaluate(child, tokens, what="forced text")
        return child

    def expand(
        self,
        parents: Sequence[Node],
        n: int | Sequence[int],
        *,
        sampling: SamplingParams | None = None,
        rules: StepRules | None = None,
    ) -> Expansion:
        """Give each parent ``n`` (or ``n[i]``) children, each one generated step long.

        All children are decoded together in one batch per token. Children that end the
        solution (end-of-generation, answer, length or context cap) are released at once; the
        others stay live for further expansion until :meth:`release`.
        """
        sampling = sampling or SamplingParams()
        rules = rules or StepRules()
        counts = [n] * len(parents) if isinstance(n, int) else [int(k) for k in n]
        if len(counts) != len(parents):
            raise SamplingConfigError(f"got {len(parents)} parents but {len(counts)} branch counts")
        if any(k < 0 for k in counts):
            raise SamplingConfigError(f"branch counts must be >= 0, got {counts}")
        for parent in parents:
            self._check_expandable(parent)
        total = sum(counts)
        if total == 0:
            return Expansion([], GenerationStats())
        self._check_room(total)

        started = time.perf_counter()
        stats = GenerationStats()
        branches: list[_Branch] = []
        try:
            for parent, k in zip(parents, counts, strict=True):
                assert parent._seeds is not None and parent._logits is not None and parent._seq is not None
                for seeds in parent._seeds.spawn(k):
                    seed = int(seeds.generate_state(1)[0])
                    child = Node(
                        id=next(self._ids),
                        parent=parent,
                        kind="step",
                        tokens=(),
                        text="",
                        seed=seed,
                        depth=parent.depth + 1,
                        n_past=parent.n_past,
                        _seeds=seeds,
                    )
                    self._acquire(child, copy_from=parent._seq)
                    branch = _Branch(child, BranchSampler(sampling, seed), StepScanner(rules, parent.generated))
                    branches.append(branch)
                    branch.pending = branch.sampler.sample(parent._logits, self._candidates)
            self._run_branches(branches, stats, started)
        except BaseException:
            # An error or Ctrl-C mid-step: the half-made children are unusable; free their cells.
            self.release(*[b.node for b in branches])
            raise
        finally:
            for b in branches:
                b.sampler.close()
        children = [b.node for b in branches]
        for child in children:
            if child.ends_solution:
                self._release_one(child)
        stats.wall_s = time.perf_counter() - started
        self.usage = self.usage + stats
        return Expansion(children, stats)

    def complete(
        self,
        parents: Sequence[Node],
        n: int | Sequence[int] = 1,
        *,
        sampling: SamplingParams | None = None,
        rules: StepRules | None = None,
        max_steps: int = 64,
    ) -> tuple[list[Node], GenerationStats]:
        """Sample ``n`` full solutions from each parent, step by step, all branches batched.

        Returns the last node of every solution (its path holds the steps) and the cost. A
        solution still going after ``max_steps`` steps is returned as it stands (its ``end`` is
        then not a solution end). Every node this call made is released before it returns.
        """
        frontier = self.expand(parents, n, sampling=sampling, rules=rules)
        stats = frontier.stats
        leaves = [c for c in frontier.children if c.ends_solution]
        live = [c for c in frontier.children if not c.ends_solution]
        try:
            steps = 1
            while live and steps < max_steps:
                step = self.expand(live, 1, sampling=sampling, rules=rules)
                stats = stats + step.stats
                self.release(*live)
                leaves += [c for c in step.children if c.ends_solution]
                live = [c for c in step.children if not c.ends_solution]
                steps += 1
        finally:
            self.release(*live)
        leaves += live
        return leaves, stats

    def release(self, *nodes: Node) -> None:
        """Give the nodes' sequences back; their KV cells are freed once no live node shares them."""
        for node in nodes:
            if node._seq is not None:
                self._release_one(node)

    def reset(self) -> None:
        """Forget every node and clear the KV cache (cheap; the model stays loaded). Nodes still
        live become released: expanding one is an error, releasing one does nothing (its sequence
        id may already belong to a new node)."""
        for node in self._live.values():
            node._seq = None
            node._logits = None
            ancestor: Node | None = node
            while ancestor is not None:
                ancestor._holders = 0
                ancestor = ancestor.parent
        self._live.clear()
        self.ctx.clear()
        self._free_seqs = list(range(self.ctx.n_seq_max - 1, -1, -1))
        self._cells_used = 0

    def close(self) -> None:
        self._batch.close()
        self.ctx.close()
        self.model.close()

    def __enter__(self) -> Generator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------

    def _check_expandable(self, node: Node) -> None:
        if node.ends_solution:
            raise EdgeAdaptError(f"node {node.id} ended its solution ({node.end.value}); it cannot be expanded")
        if node._seq is None:
            raise EdgeAdaptError(f"node {node.id} was released; keep nodes live until you are done expanding them")

    def _check_room(self, n_branches: int) -> None:
        if n_branches > len(self._free_seqs):
            raise BranchCapacityError(
                f"{n_branches} branches requested but only {len(self._free_seqs)} of n_seq_max="
                f"{self.ctx.n_seq_max} sequences are free; create the Generator with a larger n_seq_max "
                f"(at most {MAX_SEQUENCES}) or release nodes you no longer need."
            )
        if n_branches > self.kv_cells_free:
            raise BranchCapacityError(
                f"{n_branches} branches requested but the context has only {self.kv_cells_free} free KV "
                f"cells of n_ctx={self.n_ctx} ({self._cells_used} held by live nodes); raise n_ctx or release nodes."
            )

    def _acquire(self, node: Node, copy_from: int | None) -> None:
        seq = self._free_seqs.pop()
        if copy_from is not None:
            self.ctx.seq_copy(copy_from, seq)
        node._seq = seq
        self._live[seq] = node
        ancestor: Node | None = node
        while ancestor is not None:
            ancestor._holders += 1
            if ancestor._holders == 1:
                self._cells_used += ancestor._cells
            ancestor = ancestor.parent

    def _release_one(self, node: Node) -> None:
        assert node._seq is not None
        self.ctx.seq_remove(node._seq)
        self._free_seqs.append(node._seq)
        del self._live[node._seq]
        node._seq = None
        node._logits = None
        ancestor: Node | None = node
        while ancestor is not None:
            ancestor._holders -= 1
            if ancestor._holders == 0:
                self._cells_used -= ancestor._cells
            ancestor = ancestor.parent

    def _decode(self, stats: GenerationStats) -> int:
        with ensure_backend().capture() as lines:
            rc = self._batch.decode(self.ctx)
        stats.decode_calls += 1
        if rc not in (0, 1):
            raise EdgeAdaptError(f"llama_decode failed with code {rc} ({errors_in(lines) or 'no detail'})")
        return rc

    def _logits(self, batch_index: int) -> np.ndarray:
        return np.ctypeslib.as_array(self.ctx.logits(batch_index), shape=(self.vocab.n_tokens,))

    def _evaluate(self, node: Node, tokens: Sequence[int], what: str) -> None:
        """Decode given tokens into a new sequence for ``node`` (sharing its parent's cells)."""
        started = time.perf_counter()
        if not self._free_seqs:
            raise BranchCapacityError(
                f"no free sequence for a new {what}: all n_seq_max={self.ctx.n_seq_max} are held by live "
                "nodes; release nodes or raise n_seq_max."
            )
        if len(tokens) > self.kv_cells_free:
            raise ContextOverflowError(
                f"the {what} needs {len(tokens)} KV cells but only {self.kv_cells_free} of n_ctx={self.n_ctx} "
                f"are free ({self._cells_used} held by live nodes); release nodes or raise n_ctx."
            )
        parent_seq = node.parent._seq if node.parent is not None else None
        self._acquire(node, copy_from=parent_seq)
        stats = GenerationStats()
        try:
            pos = node.n_past
            last_index = 0
            for start in range(0, len(tokens), self.ctx.n_batch):
                chunk = tokens[start : start + self.ctx.n_batch]
                last_chunk = start + len(chunk) == len(tokens)
                self._batch.clear()
                for i, token in enumerate(chunk):
                    last_index = self._batch.add(token, pos + i, node._seq, logits=last_chunk and i == len(chunk) - 1)
                if self._decode(stats) != 0:
                    raise ContextOverflowError(
                        f"llama.cpp found no KV slot for the {what} ({len(tokens)} tokens); raise n_ctx."
                    )
                pos += len(chunk)
                node._cells += len(chunk)
                self._cells_used += len(chunk)
            node.n_past = pos
            node._logits = self._logits(last_index).copy()
            self._past_training(pos)
        except BaseException:
            self._release_one(node)
            raise
        stats.prompt_tokens = len(tokens)
        stats.wall_s = time.perf_counter() - started
        node.wall_s = stats.wall_s
        self.usage = self.usage + stats

    def _run_branches(self, branches: list[_Branch], stats: GenerationStats, started: float) -> None:
        active = branches
        while active:
            to_decode: list[_Branch] = []
            for b in active:
                assert b.pending is not None
                token, logprob = b.pending
                b.pending = None
                b.tokens.append(token)
                b.logprobs.append(logprob)
                stats.generated_tokens += 1
                end = b.scanner.push(self.vocab.piece(token), self.vocab.is_eog(token))
                if (end is None or not end.ends_solution) and b.node.n_past + 1 >= self.seq_ctx:
                    end = StepEnd.CONTEXT
                if end is not None:
                    self._finish(b, end, started)
                if end is None or not end.ends_solution:
                    to_decode.append(b)  # continues, or ended a step and needs logits for the next
            room = self.kv_cells_free
            if len(to_decode) > room:
                log.warning(
                    "KV cache full (n_ctx=%d): cutting %d branches short; raise n_ctx for longer solutions",
                    self.n_ctx, len(to_decode) - room,
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
            self._cells_used += len(to_decode)
            for b in to_decode:
                b.node.n_past += 1
                b.node._cells += 1
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
        if n_past > self.model.n_ctx_train and not self._warned_past_training:
            self._warned_past_training = True
            log.warning(
                "%s: a branch reached %d tokens, past the %d the model was trained for; quality may drop from here",
                self.model.path, n_past, self.model.n_ctx_train,
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
