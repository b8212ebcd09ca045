"""One search's view of a shared generator: its room in the KV pool, its own usage, its payer.

A search holds a session instead of the generator: the same calls (``prefill``, ``expand``,
``complete``, ``release``), with the search's energy payer, interrupt and hard cap passed along to
every decode, its own :class:`GenerationStats` (what *it* spent, whatever else shared the batches), and
``free_sequences`` counted against its own reservation, so that two searches never compete for
sequences mid-step. The reservation is taken at ``prefill`` (when the prompt's length is known)
and given back by ``close``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any

from edge_adapt.generator.admission import Reservation
from edge_adapt.generator.tree import Expansion, GenerationStats, Node

if TYPE_CHECKING:
    from edge_adapt.generator.runtime import Generator


class GenerationSession:
    """See the module's docstring; made by :meth:`Generator.session`."""

    def __init__(self, generator: Generator, *, sequences: int, cells: int, rows: int, payer: Hashable | None,
                 interrupt: Callable[[], None] | None, cap_reached: Callable[[], bool] | None = None) -> None:
        self.generator = generator
        self.vocab = generator.vocab
        self.sequences = sequences
        self.cells = cells
        self.rows = rows
        self.payer = payer
        self.interrupt = interrupt
        self.cap_reached = cap_reached
        self.usage = GenerationStats()
        self._reservation: Reservation | None = None
        self._live: set[Node] = set()
        self._lock = threading.Lock()

    @property
    def n_ctx(self) -> int:
        return self.generator.n_ctx

    @property
    def seq_ctx(self) -> int:
        return self.generator.seq_ctx

    @property
    def free_sequences(self) -> int:
        """Sequences this search may still take (its reservation less what it holds)."""
        with self._lock:
            self._live = {n for n in self._live if n._seq is not None}
            return max(0, self.sequences - len(self._live))

    def prefill(self, prompt: str | Sequence[int], *, seed: int = 0, **options: Any) -> Node:
        """Wait for room for the prompt and this search's paths, then evaluate the prompt."""
        prompt = self.vocab.prompt_ids(prompt, add_special=options.get("add_special", True),
                                       parse_special=options.get("parse_special", True))
        if self._reservation is None:
            # a search that could fill the whole pool runs alone (its paths are cut short at the
            # context, as they would be without others)
            admission = self.generator.admission
            self._reservation = admission.reserve(min(len(prompt) + self.cells, admission.cells),
                                                  min(self.sequences, admission.sequences), self.rows, self.interrupt)
        node, stats = self.generator.evaluate_prompt(prompt, seed=seed, payer=self.payer, interrupt=self.interrupt, **options)
        self._add(stats)
        self._hold([node])
        return node

    def expand(self, parents: Sequence[Node], n: int | Sequence[int], **options: Any) -> Expansion:
        options.setdefault("interrupt", self.interrupt)
        options.setdefault("cap_reached", self.cap_reached)
        expansion = self.generator.expand(parents, n, payer=self.payer, **options)
        self._add(expansion.stats)
        self._hold(expansion.children)
        return expansion

    def complete(self, parents: Sequence[Node], n: int | Sequence[int] = 1, **options: Any) -> tuple[list[Node], GenerationStats]:
        options.setdefault("between_steps", self.interrupt)
        options.setdefault("cap_reached", self.cap_reached)
        leaves, stats = self.generator.complete(parents, n, payer=self.payer, **options)
        self._add(stats)
        return leaves, stats

    def release(self, *nodes: Node) -> None:
        self.generator.release(*nodes)

    def close(self) -> None:
        """Give the reservation back (the search has released its nodes)."""
        if self._reservation is not None:
            self.generator.admission.release(self._reservation)
            self._reservation = None

    def __enter__(self) -> GenerationSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add(self, stats: GenerationStats) -> None:
        with self._lock:
            self.usage = self.usage + stats

    def _hold(self, nodes: Sequence[Node]) -> None:
        with self._lock:
            self._live.update(n for n in nodes if n._seq is not None)
