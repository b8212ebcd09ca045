"""What every search strategy returns: one result type, with the same cost accounting."""

from __future__ import annotations

from dataclasses import dataclass

from edge_adapt.budget.decisions import Decision
from edge_adapt.generator import GenerationStats, Node, StepEnd
from edge_adapt.prm import PRMStats, Quantiles
from edge_adapt.search.confidence import TraceConfidence, trace_confidence


@dataclass(frozen=True)
class Cost:
    """What a search spent; identical accounting across strategies so they compare fairly."""

    generated_tokens: int = 0
    prompt_tokens: int = 0
    prm_calls: int = 0  # score() calls (each may batch many prefixes)
    prm_prefixes: int = 0
    prm_tokens: int = 0
    samples: int = 0  # complete solutions produced
    wall_s: float = 0.0
    generation_s: float = 0.0  # of wall_s: inside the generator (prefill, decode, sampling)
    prm_s: float = 0.0  # of wall_s: inside the PRM (tokenizing, ONNX Runtime)
    joules: float | None = None  # set when a policy (and so a meter) is attached to the search
    energy_source: str | None = None  # the meter: "rapl:package-0", "estimate:cpu", ...
    energy_estimated: bool | None = None  # True when the joules come from the cost model

    @classmethod
    def from_stats(cls, gen: GenerationStats, prm: PRMStats, samples: int, wall_s: float) -> Cost:
        return cls(gen.generated_tokens, gen.prompt_tokens, prm.calls, prm.prefixes, prm.tokens, samples, wall_s,
                   generation_s=gen.wall_s, prm_s=prm.wall_s)


@dataclass(frozen=True)
class Candidate:
    """One finished (or cut-off) solution, its answer and its PRM scores."""

    steps: tuple[str, ...]
    answer: str | None
    end: StepEnd
    final: Quantiles | None  # PRM quantiles after the last step
    per_step: tuple[Quantiles | None, ...] = ()  # [0] = question, [i] = after step i
    logprob: float = 0.0  # sum of the generated tokens' log-probabilities
    n_tokens: int = 0
    confidence: TraceConfidence = TraceConfidence(0.0, 0.0, 0.0)  # from the same log-probabilities

    @property
    def text(self) -> str:
        return "".join(self.steps)

    @classmethod
    def from_leaf(cls, leaf: Node, answer: str | None) -> Candidate:
        steps = leaf.steps()
        logprobs = [lp for s in steps for lp in s.logprobs]
        return cls(
            steps=tuple(s.text for s in steps),
            answer=answer,
            end=leaf.end or StepEnd.LENGTH,
            final=None,
            logprob=sum(logprobs),
            n_tokens=sum(len(s.tokens) for s in steps),
            confidence=trace_confidence(logprobs),
        )


@dataclass(frozen=True)
class SearchResult:
    strategy: str
    question: str
    answer: str | None
    chosen: Candidate | None
    candidates: tuple[Candidate, ...]
    decisions: tuple[Decision, ...]
    cost: Cost
    question_score: Quantiles | None = None  # the PRM's score of the question alone, where the search read it
