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
from collections.abc import Callable, Sequence
from itertools import count
from pathlib import Path

import numpy as np

from edge_adapt.errors import EdgeAdaptError, SamplingConfigError
from edge_adapt.generator.config import GeneratorConfig, default_threads
from edge_adapt.generator.decoding import TreeDecoder
from edge_adapt.generator.kv_pool import SequencePool
from edge_adapt.generator.llama_backend import ContextSettings, LlamaContext, LlamaModel
from edge_adapt.generator.llama_platform import gpu_offload_supported
from edge_adapt.generator.sampling import SamplingParams
from edge_adapt.generator.steps import StepRules
from edge_adapt.generator.tree import Expansion, GenerationStats, Node
from edge_adapt.generator.vocab import Vocabulary, check_fits

log = logging.getLogger(__name__)


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
        if cfg.n_gpu_layers != 0 and not gpu_offload_supported():
            log.warning("GPU layers asked for (%d), but this llama.cpp build has no GPU offload: everything runs on the "
                        "CPU (build llama-cpp-python with CMAKE_ARGS=\"-DGGML_CUDA=on\" for a GPU)", cfg.n_gpu_layers)
        self.model = LlamaModel(model_path, n_gpu_layers=cfg.n_gpu_layers, main_gpu=cfg.main_gpu, use_mmap=cfg.use_mmap)
        self.vocab = Vocabulary(self.model)
        threads = cfg.n_threads or default_threads()
        self.ctx = LlamaContext(
            self.model,
            ContextSettings(
                n_ctx=max(cfg.n_ctx, min(self.model.n_ctx_train, cfg.grow_to_training_context)),
                n_batch=max(cfg.n_batch, cfg.n_seq_max),
                n_seq_max=cfg.n_seq_max + cfg.prompt_cache,
                n_threads=threads,
                n_threads_batch=cfg.n_threads_batch or threads,
                flash_attn=cfg.flash_attn,
                kv_type=cfg.kv_type,
                kv_unified=cfg.kv_unified,
            ),
        )
        # n_ctx is the KV pool shared by all branches (unified cache), so a large one is no sign of
        # trouble; a single path longer than the model's training context is (the decoder warns).
        self.n_ctx = self.ctx.n_ctx
        self._pool = SequencePool(self.ctx, unified=cfg.kv_unified, prompt_cache=cfg.prompt_cache and cfg.kv_unified)
        self._decoder = TreeDecoder(self.model, self.ctx, self.vocab, self._pool)
        self.seq_ctx = self._decoder.seq_ctx  # the cells one path can hold: the whole pool, or its own stream
        self._ids = count()
        self.usage = GenerationStats()

    # -- capacity ---------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self.model.path

    @property
    def free_sequences(self) -> int:
        return self._pool.free_sequences

    @property
    def kv_cells_used(self) -> int:
        """Cells held by live nodes (the prompt cache's own cells not counted)."""
        return self._pool.cells_used

    @property
    def kv_cells_cached(self) -> int:
        """Cells only the prompt cache holds (``GeneratorConfig.prompt_cache``)."""
        return self._pool.cache_only_cells

    @property
    def kv_cells_free(self) -> int:
        """Free cells of the shared pool (unified cache); with per-sequence streams every
        sequence has ``seq_ctx`` cells of its own and the pool never runs out first."""
        return self._pool.cells_free

    # -- building the tree --------------------------------------------------------------------

    def prefill(
        self,
        prompt: str | Sequence[int],
        *,
        seed: int = 0,
        add_special: bool = True,
        parse_special: bool = True,
        reuse_cache: bool = True,
    ) -> Node:
        """Evaluate a prompt into a new root node, ready to expand.

        ``seed`` roots the random streams of every branch below this node: the same prompt,
        seed and calls give the same tokens, provided ``reuse_cache`` is False where the generator
        keeps a prompt cache: cells reused from the cache were computed in another batch, and
        logits may differ from a whole evaluation in their last bits.
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
        cached = self._pool.cached_prefix(tokens) if reuse_cache else 0
        if not cached:
            self._pool.forget_cache()  # its cells are free for this prompt
        node = Node(
            id=next(self._ids),
            parent=None,
            kind="prompt",
            tokens=tuple(tokens),
            text=self.vocab.detokenize(tokens),
            n_past=cached,
            _seeds=np.random.SeedSequence(seed),
        )
        self.usage = self.usage + self._decoder.evaluate(node, tokens[cached:], what="prompt", cached_prefix=cached)
        self._pool.remember(node)
        return node

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
        self._pool.check_room(total)

        started = time.perf_counter()
        children: list[Node] = []
        try:
            for parent, k in zip(parents, counts, strict=True):
                assert parent._seeds is not None and parent._seq is not None
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
                    self._pool.acquire(child, copy_from=parent._seq)
                    children.append(child)
            stats = self._decoder.generate(children, sampling, rules)
        except BaseException:
            # An error or Ctrl-C mid-step: the half-made children are unusable; free their cells.
            self.release(*children)
            raise
        for child in children:
            if child.ends_solution:
                self._pool.release(child)
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
        between_steps: Callable[[], None] | None = None,
        on_token: Callable[[bytes], None] | None = None,
    ) -> tuple[list[Node], GenerationStats]:
        """Sample ``n`` full solutions from each parent, step by step, all branches batched.

        Returns the last node of every solution (its path holds the steps) and the cost. A
        solution still going after ``max_steps`` steps is returned as it stands (its ``end`` is
        then not a solution end). Every node this call made is released before it returns, also
        when ``between_steps`` (called before every step after the first, and before every batched
        decode inside a step) raises to stop it. ``on_token`` receives every generated token's
        bytes as it is decoded (for one solution: a stream to a reader).
        """
        self._decoder.interrupt, self._decoder.on_token = between_steps, on_token  # also inside a long step
        try:
            frontier = self.expand(parents, n, sampling=sampling, rules=rules)
        finally:
            self._decoder.interrupt = self._decoder.on_token = None
        stats = frontier.stats
        leaves = [c for c in frontier.children if c.ends_solution]
        live = [c for c in frontier.children if not c.ends_solution]
        try:
            steps = 1
            while live and steps < max_steps:
                if between_steps is not None:
                    between_steps()
                self._decoder.interrupt, self._decoder.on_token = between_steps, on_token
                try:
                    step = self.expand(live, 1, sampling=sampling, rules=rules)
                finally:
                    self._decoder.interrupt = self._decoder.on_token = None
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
                self._pool.release(node)

    def reset(self) -> None:
        """Forget every node and clear the KV cache (cheap; the model stays loaded). Nodes still
        live become released: expanding one is an error, releasing one does nothing."""
        self._pool.reset()

    def close(self) -> None:
        self._decoder.close()
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
