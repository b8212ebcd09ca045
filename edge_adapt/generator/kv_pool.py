"""Sequence ids and KV cells held by the live nodes of a solution tree, counted by reference.

A live node holds one llama.cpp sequence id. A node's own segment of cells stays in the cache
while any live node at or below it holds them (branches share their prefix), so every node
counts its live holders and the pool counts the cells of the segments somebody still holds.
"""

from __future__ import annotations

from edge_adapt.errors import BranchCapacityError
from edge_adapt.generator.config import MAX_SEQUENCES
from edge_adapt.generator.llama_backend import LlamaContext
from edge_adapt.generator.tree import Node


class SequencePool:
    """The sequences and KV cells of one llama.cpp context, handed to nodes and taken back."""

    def __init__(self, ctx: LlamaContext, *, unified: bool) -> None:
        self._ctx = ctx
        self._unified = unified
        self._free: list[int] = []
        self._live: dict[int, Node] = {}  # sequence id -> the node holding it
        self.cells_used = 0
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
        return self._ctx.n_ctx - self.cells_used

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
        self._free = list(range(self._ctx.n_seq_max - 1, -1, -1))
        self.cells_used = 0
