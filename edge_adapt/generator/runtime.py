"""The branching generator: one reasoning step at a time, many branches in one KV cache.

A :class:`Node` is a point in a solution whose tokens sit in the KV cache under one sequence
id. ``expand`` gives a node children: each child gets a fresh sequence that *shares* the
parent's cells (``seq_cp`` on a unified cache costs nothing), draws its first token from the
parent's saved logits, and then all children of all parents are decoded together, one token
per branch per ``llama_decode`` call, until each reaches the end of its step. Nothing of the
shared prefix is ever evaluated twice; a finished or released branch gives its cells back.

Many searches may share one Generator, each on its own thread through a :meth:`Generator.session`
(its reserved room in the KV pool, its own usage and energy payer): the scheduler decodes the rows
of all of them in each ``llama_decode`` (:mod:`edge_adapt.generator.scheduler`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Hashable, Sequence
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np

from edge_adapt.errors import EdgeAdaptError, SamplingConfigError
from edge_adapt.generator.admission import Admission
from edge_adapt.generator.completion import complete
from edge_adapt.generator.config import GeneratorConfig, default_threads
from edge_adapt.generator.decoding import PromptWork, start_step
from edge_adapt.generator.kv_pool import SequencePool
from edge_adapt.generator.llama_backend import ContextSettings, LlamaContext, LlamaModel
from edge_adapt.generator.llama_platform import gpu_offload_supported
from edge_adapt.generator.sampling import SamplingParams
from edge_adapt.generator.scheduler import DecodeScheduler
from edge_adapt.generator.session import GenerationSession
from edge_adapt.generator.steps import StepRules
from edge_adapt.generator.tree import Expansion, GenerationStats, Node
from edge_adapt.generator.vocab import Vocabulary, check_fits

log = logging.getLogger(__name__)


class Generator:
    """A GGUF generator that samples reasoning steps on a tree of shared-prefix branches.

    Searches on several threads share it through sessions (:meth:`session`); the calls below are
    safe from any thread, and their decodes are batched together.

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
        self.threads = threads  # CPU threads decoding now
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
        self._ctx_lock = threading.RLock()  # every call into the llama.cpp context and the pool's counts
        self.scheduler = DecodeScheduler(self.model, self.ctx, self.vocab, self._pool, self._ctx_lock)
        self.seq_ctx = self.scheduler.seq_ctx  # the cells one path can hold: the whole pool, or its own stream
        self.admission = Admission(self.n_ctx, cfg.n_seq_max, cfg.max_batch_rows)
        self._ids = count()
        self._usage_lock = threading.Lock()
        self.usage = GenerationStats()  # every search's work together

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

    def session(self, *, sequences: int, cells: int, rows: int = 1, payer: Hashable | None = None,
                interrupt: Callable[[], None] | None = None, cap_reached: Callable[[], bool] | None = None
                ) -> GenerationSession:
        """One search's view: at most ``sequences`` live nodes, ``cells`` KV cells besides its prompt
        and ``rows`` paths decoded at once, admitted when that room is free (first come, first
        served; see :class:`~edge_adapt.generator.admission.Admission`); ``payer`` is charged its
        rows of every shared decode, ``interrupt`` runs before each and may raise to stop the search;
        ``cap_reached`` (the search's hard cap spent) ends its steps there."""
        return GenerationSession(self, sequences=sequences, cells=cells, rows=rows, payer=payer, interrupt=interrupt,
                                 cap_reached=cap_reached)

    def _count(self, stats: GenerationStats) -> None:
        with self._usage_lock:
            self.usage = self.usage + stats

    # -- building the tree --------------------------------------------------------------------

    def prefill(self, prompt: str | Sequence[int], *, seed: int = 0, **options: object) -> Node:
        """Evaluate a prompt into a new root node, ready to expand (see :meth:`evaluate_prompt`)."""
        return self.evaluate_prompt(prompt, seed=seed, **options)[0]  # type: ignore[arg-type]

    def evaluate_prompt(
        self,
        prompt: str | Sequence[int],
        *,
        seed: int = 0,
        add_special: bool = True,
        parse_special: bool = True,
        reuse_cache: bool = True,
        payer: Hashable | None = None,
        interrupt: Callable[[], None] | None = None,
    ) -> tuple[Node, GenerationStats]:
        """Evaluate a prompt into a new root node, ready to expand; returns it and what it cost.

        ``seed`` roots the random streams of every branch below this node: the same prompt,
        seed and calls give the same tokens, provided ``reuse_cache`` is False where the generator
        keeps a prompt cache: cells reused from the cache were computed in another batch, and
        logits may differ from a whole evaluation in their last bits.
        """
        if seed < 0:
            raise SamplingConfigError(f"seed must be >= 0, got {seed}")
        tokens = self.vocab.prompt_ids(prompt, add_special=add_special, parse_special=parse_special)
        check_fits(len(tokens), self.seq_ctx, self.model.n_ctx_train)
        node = Node(id=next(self._ids), parent=None, kind="prompt", tokens=tuple(tokens),
                    text=self.vocab.detokenize(tokens), _seeds=np.random.SeedSequence(seed))
        with self._ctx_lock:
            cached = self._pool.cached_prefix(tokens) if reuse_cache else 0
            if not cached:
                self._pool.forget_cache()  # its cells are free for this prompt
            node.n_past = cached
            self._pool.check_prompt_room(len(tokens) - cached)
            if cached:
                self._pool.acquire_cached(node, cached)
            else:
                self._pool.acquire(node, copy_from=None)
        work = PromptWork(payer=payer, interrupt=interrupt, node=node, tokens=tokens[cached:])
        try:
            self.scheduler.run(work)
        except BaseException:
            self.release(node)
            raise
        finally:
            self._count(work.stats)
        node.wall_s = work.stats.wall_s
        with self._ctx_lock:
            self._pool.remember(node)
        return node, work.stats

    def expand(
        self,
        parents: Sequence[Node],
        n: int | Sequence[int],
        *,
        sampling: SamplingParams | None = None,
        rules: StepRules | None = None,
        payer: Hashable | None = None,
        interrupt: Callable[[], None] | None = None,
        on_token: Callable[[bytes], None] | None = None,
        hand_over: bool = False,
        cap_reached: Callable[[], bool] | None = None,
    ) -> Expansion:
        """Give each parent ``n`` (or ``n[i]``) children, each one generated step long.

        All children are decoded together in one batch per token. Children that end the
        solution (end-of-generation, answer, length or context cap) are released at once; the
        others stay live for further expansion until :meth:`release`. ``interrupt`` runs before
        every batched decode and may raise to abandon the step; ``on_token`` gets each token's bytes;
        once ``cap_reached`` (asked before every decode) is true the children end there (``budget``).
        ``hand_over``: a parent with exactly one child gives it its sequence and is released (the
        caller is done with it): no sequence copy, one sequence fewer.
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
        children: list[Node] = []
        work = None
        try:
            self._make_children(parents, counts, hand_over, children)
            work = start_step(children, sampling, rules, payer=payer, interrupt=interrupt, on_token=on_token,
                              cap_reached=cap_reached)
            self.scheduler.run(work)
        except BaseException:
            # An error or Ctrl-C mid-step: the half-made children are unusable; free their cells.
            self.release(*children)
            raise
        finally:
            for parent in parents:  # handed over: their logits were only needed for the first token
                if parent._seq is None:
                    parent._logits = None
            if work is not None:
                self._count(work.stats)
        self.release(*[c for c in children if c.ends_solution])
        return Expansion(children, work.stats)

    def complete(self, parents: Sequence[Node], n: int | Sequence[int] = 1, **options: Any) -> tuple[list[Node], GenerationStats]:
        """Sample ``n`` full solutions from each parent, step by step, all branches batched
        (:func:`edge_adapt.generator.completion.complete`, which says what ``options`` take)."""
        return complete(self, parents, n, **options)

    def release(self, *nodes: Node) -> None:
        """Give the nodes' sequences back; their KV cells are freed once no live node shares them."""
        with self._ctx_lock:
            for node in nodes:
                if node._seq is not None:
                    self._pool.release(node)

    def reset(self) -> None:
        """Forget every node and clear the KV cache (cheap; the model stays loaded). Nodes still
        live become released: expanding one is an error, releasing one does nothing."""
        with self._ctx_lock:
            self._pool.reset()

    def set_threads(self, threads: int) -> None:
        """Decode on ``threads`` CPU threads from the next decode on (a busy device's cores change)."""
        with self._ctx_lock:
            self.ctx.set_threads(threads)
            self.threads = threads

    def close(self) -> None:
        self.scheduler.close()
        self.ctx.close()
        self.model.close()

    def __enter__(self) -> Generator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------

    def _make_children(self, parents: Sequence[Node], counts: list[int], hand_over: bool, children: list[Node]) -> None:
        """Each parent's children, seeded along the tree, each holding a sequence (appended as made,
        so that the caller frees them whatever happens)."""
        with self._ctx_lock:
            self._pool.check_room(sum(counts) - (sum(1 for k in counts if k == 1) if hand_over else 0))
            for parent, k in zip(parents, counts, strict=True):
                assert parent._seeds is not None and parent._seq is not None
                for seeds in parent._seeds.spawn(k):
                    child = Node(id=next(self._ids), parent=parent, kind="step", tokens=(), text="",
                                 seed=int(seeds.generate_state(1)[0]), depth=parent.depth + 1, n_past=parent.n_past,
                                 _seeds=seeds)
                    if hand_over and k == 1:
                        self._pool.hand_over(parent, child)
                    else:
                        self._pool.acquire(child, copy_from=parent._seq)
                    children.append(child)

    def _check_expandable(self, node: Node) -> None:
        if node.ends_solution:
            raise EdgeAdaptError(f"node {node.id} ended its solution ({node.end.value}); it cannot be expanded")
        if node._seq is None:
            raise EdgeAdaptError(f"node {node.id} was released; keep nodes live until you are done expanding them")
