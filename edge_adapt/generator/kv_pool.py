"""Sequence ids and KV cells held by the live nodes of a solution tree, counted by reference.

A live node holds one llama.cpp sequence id. A node's own segment of cells stays in the cache
while any live node at or below it holds them (branches share their prefix), so every node
counts its live holders and the pool counts the cells of the segments somebody still holds.
"""

from __future__ import annotations

from edge_adapt.errors import BranchCapacityError, ContextOverflowError
from edge_adapt.generator.config import MAX_SEQUENCES
from edge_adapt.generator.llama_backend import LlamaContext
from edge_adapt.generator.tree import Node


class SequencePool:
    """The sequences and KV cells of one llama.cpp context, handed to nodes and taken back.

    With ``prompt_cache`` one sequence is kept back to hold the last prompt evaluated, so that the
    next prompt starting the same way (a chat's system message and earlier turns) evaluates only
    what differs, as llama-server's slots do. Its cells are shared with that prompt's node while
    the node lives; once it is released they are the cache's alone, and they are given up first
    whenever a prompt needs the room.
    """

    def __init__(self, ctx: LlamaContext, *, unified: bool, prompt_cache: bool = False) -> None:
        self._ctx = ctx
        self._unified = unified
        self._free: list[int] = []
        self._live: dict[int, Node] = {}  # sequence id -> the node holding it
        self.cells_used = 0
        self._cache_seq = ctx.n_seq_max - 1 if prompt_cache else None
        self.cached: tuple[int, ...] = ()  # the prompt tokens the cache sequence holds
        self._cache_owner: Node | None = None  # the node whose prompt the cache holds (sharing its cells)
        self._forget_all()

    @property
    def free_sequences(self) -> int:
        return len(self._free)

    @property
    def held_sequences(self) -> frozenset[int]:
        return frozenset(self._live)

    @property
    def cells_free(self) -> int:
        """Free cells of the shared pool (unified cache); with per-sequence streams every
        sequence has cells of its own and the pool never runs out first."""
        if not self._unified:
            return self._ctx.n_ctx
        return self._ctx.n_ctx - self.cells_used - self.cache_only_cells

    @property
    def cache_only_cells(self) -> int:
        """Cells only the prompt cache holds (its prompt's node is gone)."""
        owner = self._cache_owner
        return len(self.cached) if owner is None or owner._holders == 0 else 0

    def cached_prefix(self, tokens: tuple[int, ...] | list[int]) -> int:
        """How many leading ``tokens`` the cache holds (at most all but the last: the last one is
        evaluated again for the logits the first sample is drawn from)."""
        n = 0
        for a, b in zip(self.cached, tokens[:-1], strict=False):
            if a != b:
                break
            n += 1
        return n

    def acquire_cached(self, node: Node, prefix: int) -> None:
        """Give ``node`` a sequence holding the cache's first ``prefix`` cells, counted as its own."""
        assert self._cache_seq is not None and 0 < prefix <= len(self.cached)
        self.acquire(node, copy_from=self._cache_seq)
        self._ctx.seq_remove(node._seq, prefix)  # type: ignore[arg-type]
        self.grow(node, prefix)

    def remember(self, node: Node) -> None:
        """Make the cache hold ``node``'s prompt (a fully evaluated, live prompt node)."""
        if self._cache_seq is None or node._seq is None:
            return
        self._ctx.seq_remove(self._cache_seq)
        self._ctx.seq_copy(node._seq, self._cache_seq)
        self.cached, self._cache_owner = node.tokens, node

    def forget_cache(self) -> None:
        """Give the cache's cells back (they are freed unless a live node shares them)."""
        if self._cache_seq is not None and self.cached:
            self._ctx.seq_remove(self._cache_seq)
        self.cached, self._cache_owner = (), None

    def check_room(self, n_branches: int) -> None:
        """Refuse ``n_branches`` new branches that would not each get a sequence and a cell."""
        if n_branches > len(self._free):
            raise BranchCapacityError(
                f"{n_branches} branches requested but only {len(self._free)} of n_seq_max="
                f"{self._ctx.n_seq_max} sequences are free; create the Generator with a larger n_seq_max "
                f"(at most {MAX_SEQUENCES}) or release nodes you no longer need."
            )
        if n_branches > self.cells_free:
            raise BranchCapacityError(
                f"{n_branches} branches requested but the context has only {self.cells_free} free KV "
                f"cells of n_ctx={self._ctx.n_ctx} ({self.cells_used} held by live nodes); raise n_ctx or "
                "release nodes."
            )

    def check_prompt_room(self, n_tokens: int) -> None:
        """Refuse a prompt of ``n_tokens`` new cells that would find no sequence or no room."""
        if not self._free:
            raise BranchCapacityError(f"no free sequence for a new prompt: all n_seq_max={self._ctx.n_seq_max} are held by "
                                      "live nodes; release nodes or raise n_seq_max.")
        if n_tokens > self.cells_free:
            raise ContextOverflowError(
                f"the prompt needs {n_tokens} KV cells but only {self.cells_free} of n_ctx={self._ctx.n_ctx} are free "
                f"({self.cells_used} held by live nodes); release nodes or raise n_ctx.")

    def acquire(self, node: Node, copy_from: int | None) -> None:
        """Give ``node`` a free sequence, sharing the cells of sequence ``copy_from`` if given."""
        if not self._free:
            raise BranchCapacityError(
                f"no free sequence: all n_seq_max={self._ctx.n_seq_max} are held by live nodes; release nodes or raise n_seq_max."
            )
        seq = self._free.pop()
        if copy_from is not None:
            self._ctx.seq_copy(copy_from, seq)
        node._seq = seq
        self._live[seq] = node
        ancestor: Node | None = node
        while ancestor is not None:
            ancestor._holders += 1
            if ancestor._holders == 1:
                self.cells_used += ancestor._cells
            ancestor = ancestor.parent

    def hand_over(self, parent: Node, child: Node) -> None:
        """Give live ``parent``'s sequence to its new ``child`` (the parent is released): the
        child's path is the parent's plus its own step, so nothing is copied (on per-sequence
        streams a copy would move the whole stream). Counts: the parent's holders are unchanged
        (the child below it holds what it held), the child holds itself."""
        assert parent._seq is not None and child.parent is parent and child._seq is None
        seq = parent._seq
        parent._seq = None
        child._seq = seq
        self._live[seq] = child
        child._holders += 1
        if child._holders == 1:
            self.cells_used += child._cells

    def grow(self, node: Node, n_cells: int) -> None:
        """Count ``n_cells`` just decoded into the segment of live ``node``."""
        node._cells += n_cells
        self.cells_used += n_cells

    def release(self, node: Node) -> None:
        """Take back the sequence of live ``node``; cells nobody else holds are freed."""
        assert node._seq is not None
        self._ctx.seq_remove(node._seq)
        self._free.append(node._seq)
        del self._live[node._seq]
        node._seq = None
        node._logits = None
        ancestor: Node | None = node
        while ancestor is not None:
            ancestor._holders -= 1
            if ancestor._holders == 0:
                self.cells_used -= ancestor._cells
            ancestor = ancestor.parent

    def reset(self) -> None:
        """Clear the cache. Nodes still live become released, so a later ``release`` of one is a
        no-op instead of returning a sequence id that may belong to a new node by then."""
        for node in self._live.values():
            node._seq = None
            node._logits = None
            ancestor: Node | None = node
            while ancestor is not None:
                ancestor._holders = 0
                ancestor = ancestor.parent
        self._ctx.clear()
        self._forget_all()

    def _forget_all(self) -> None:
        self._live.clear()
        self._free = [s for s in range(self._ctx.n_seq_max - 1, -1, -1) if s != self._cache_seq]
        self.cells_used = 0
        self.cached, self._cache_owner = (), None
