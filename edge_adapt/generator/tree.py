"""The solution tree: nodes whose tokens sit in the KV cache, and what building them cost."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edge_adapt.generator.steps import StepEnd


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

    The root holds the prompt; ``expand`` adds generated steps, whose tokens, per-token
    log-probabilities, end reason, seed and wall time are kept here.
    """

    id: int
    parent: Node | None = field(repr=False)
    kind: str  # "prompt" or "step"
    tokens: tuple[int, ...] = field(repr=False)
    text: str
    logprobs: tuple[float, ...] = field(default=(), repr=False)
    end: StepEnd | None = None
    seed: int | None = None
    wall_s: float = 0.0
    depth: int = 0  # generated steps between the root and this node
    generated: int = 0  # tokens generated since the prompt
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
    def finished(self) -> bool:
        """The solution came to its end (end of generation, or its answer), not cut off."""
        return self.end is not None and self.end.finished

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
        """Everything after the prompt: the generated steps, in order."""
        return "".join(n.text for n in self.path() if n.kind != "prompt")


@dataclass(frozen=True)
class Expansion:
    """The children made by one :meth:`Generator.expand` call, in parent order, and its cost."""

    children: list[Node]
    stats: GenerationStats
