"""One search on one question: its tree, candidates and decisions, and the moves every strategy
is made of (expand under the budget, score prefixes, finalise solutions, sample whole ones, pick).

The efficiency rules live here so that every strategy keeps them: siblings are decoded together
from their parent's KV cache, PRM calls are batched over every prefix of a step, a pruned branch
is released at once and never generated further, and a finished solution is scored once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from edge_adapt.budget.decisions import Decision, GaveUp
from edge_adapt.budget.guard import Guard, Unit
from edge_adapt.generator import Generator, Node, SamplingParams, StepRules
from edge_adapt.generator.session import GenerationSession
from edge_adapt.prm import PRM, PrefixScore, Quantiles
from edge_adapt.search.calibration.answer_model import AnswerModel
from edge_adapt.search.calibration.vote_model import VoteModel
from edge_adapt.search.picks import CONFIDENCE_PICKS, PICKS, Select, unknown_pick
from edge_adapt.search.types import Candidate
from edge_adapt.search.voting import best_scored, confidence_pick, majority_vote, weighted_vote
from edge_adapt.tasks import Problem, Task
from edge_adapt.tasks.grading import answers_equal


def _nothing(*_: object) -> None:
    return None


@dataclass(frozen=True)
class RunHooks:
    """What a caller watches of one search while it runs (the server: its client). Each hook runs
    on the search's thread; one that raises stops the search (its KV sequences are freed)."""

    interrupt: Callable[[], None] = _nothing  # before every step and batched decode: a client gone
    prompt: Callable[[int], None] = _nothing  # the prompt's token count, before it is evaluated: too long for the request
    token: Callable[[bytes], None] | None = None  # each token of a search that draws one sample, as decoded
    progress: Callable[[int, Decision | None], None] = _nothing  # solutions finished so far, and each decision as made


@dataclass(frozen=True)
class SearchSettings:
    sampling: SamplingParams = field(default_factory=SamplingParams)  # its own default temperature, 0.7
    rank_quantile: float = 0.5  # which PRM quantile ranks candidates and prefixes
    max_steps: int = 32
    chat: bool = False  # the task's prompt as a user message in the generator's chat template
    system: str | None = None  # a system message before it (chat only)
    history: tuple[tuple[str, str], ...] = ()  # earlier (role, content) turns before the question (chat only)
    rules: StepRules | None = None  # step and solution boundaries; None: the task's
    reuse_prompt_cache: bool = True  # False: evaluate the prompt whole (the same seed gives the same tokens)
    # > 0: grant no more samples once this many are in and none holds an extractable answer (a
    # question of another kind than the task's, a chat turn); 0: never
    give_up_after: int = 0


class SearchContext:
    """The state of one search on one question, and what a strategy may do with it."""

    def __init__(self, generator: Generator | GenerationSession, prm: PRM, task: Task, settings: SearchSettings,
                 problem: Problem, seed: int, guard: Guard, answer_model: Callable[[], AnswerModel],
                 hooks: RunHooks = RunHooks(), vote_model: VoteModel | None = None) -> None:
        self.gen = generator
        self.prm = prm
        self.task = task
        self.settings = settings
        self.problem = problem
        self.guard = guard
        self._answer_model = answer_model
        self.hooks = hooks
        self.interrupt = hooks.interrupt  # raises to stop the search between steps (a client gone)
        self.vote_model = vote_model  # the generator's calibrated vote model, if it has one
        self.rules = settings.rules or task.step_rules
        self.sampling = settings.sampling
        self.equal = answers_equal
        prompt = generator.vocab.prompt_tokens(task.prompt(problem), chat=settings.chat, system=settings.system,
                                               history=settings.history)
        hooks.prompt(len(prompt))
        self.root = generator.prefill(prompt, seed=seed, reuse_cache=settings.reuse_prompt_cache)
        self.live: list[Node] = [self.root]  # nodes holding KV sequences, released at the end
        self.finished: list[Node] = []
        self.candidates: list[Candidate] = []
        self.decisions: list[Decision] = []
        self.adaptive_pick: int | None = None  # the pick of a strategy that chooses its own ("auto")
        self.scored: dict[tuple[str, ...], PrefixScore] = {}  # finished solutions' PRM scores, by their steps
        self.question_q: Quantiles | None = None  # the PRM's score of the question alone, once read

    @property
    def answer_model(self) -> AnswerModel:
        return self._answer_model()

    def record(self, decision: Decision) -> None:
        self.decisions.append(decision)
        self.hooks.progress(len(self.finished), decision)

    @property
    def gave_up(self) -> bool:
        """Whether the search stopped because its first samples hold no answer to compare."""
        return any(isinstance(d, GaveUp) for d in self.decisions)

    def grant(self, unit: Unit, requested: int) -> int:
        """Ask the guard for units before an expansion, recording what it decided; none once the
        first ``give_up_after`` samples hold no extractable answer."""
        self.interrupt()
        limit = self.settings.give_up_after
        # samples cut off by the token cap count too: more at the same cap seldom reach an answer,
        # and the reply's finish_reason ("length") tells the client to raise it
        if self.gave_up or (0 < limit <= len(self.candidates) and all(c.answer is None for c in self.candidates)):
            if not self.gave_up:
                self.record(GaveUp(len(self.candidates), limit))
            return 0
        grant = self.guard.grant(unit, requested)
        for decision in grant.decisions:
            self.record(decision)
        return grant.units

    def release_all(self) -> None:
        self.gen.release(*self.live)
        self.live = []

    def question_score(self) -> Quantiles:
        """The PRM's quantiles for the question alone (one PRM call, made once per search)."""
        if self.question_q is None:
            self.question_q = self.prm.score_question(self.problem.question)
        return self.question_q

    # -- the tree ------------------------------------------------------------------------------------

    def expand(self, parents: Sequence[Node], widths: Sequence[int]) -> list[Node]:
        """One step from each parent; finished children are kept, live ones returned."""
        self.interrupt()
        children = self.gen.expand(parents, widths, sampling=self.sampling, rules=self.rules).children
        self.finished += [c for c in children if c.ends_solution]
        return [c for c in children if not c.ends_solution]

    def score(self, nodes: Sequence[Node]) -> list[Quantiles]:
        """One batched PRM call over the prefixes ending at ``nodes``."""
        if not nodes:
            return []
        scores = self.prm.score(self.problem.question, [[s.text for s in n.steps()] for n in nodes])
        return [sc.final for sc in scores]

    def finalise(self, nodes: Sequence[Node], score: bool = True) -> None:
        """Every newly finished (or cut-off) solution into a candidate, scored once in one PRM call
        (``score=False`` where nobody reads the scores: a plain vote)."""
        if not nodes:
            return
        if not score:
            self.candidates += [Candidate.from_leaf(n, self._answer_of(n)) for n in nodes]
            return
        # identical solutions (frequent: a small generator often writes the same one) are scored
        # once per question, also across rounds of sequential search
        texts = [tuple(s.text for s in n.steps()) for n in nodes]
        new = [t for t in dict.fromkeys(texts) if t not in self.scored]
        if new:
            scores = self.prm.score(self.problem.question, [list(t) for t in new], per_step=True)
            self.scored.update(zip(new, scores, strict=True))
        for node, sc in zip(nodes, (self.scored[t] for t in texts), strict=True):
            cand = Candidate.from_leaf(node, self._answer_of(node))
            self.candidates.append(replace(cand, final=sc.final, per_step=sc.per_step or ()))

    def _answer_of(self, node: Node) -> str | None:
        """The answer of a finished solution; one cut off (length, context, step cap) has none and
        gets no vote: whatever number it stopped at is not its answer."""
        if not node.finished:
            return None
        return self.task.extract_answer(node.solution_text())

    def complete(self, n: int, score: bool = True, min_confidence: float | None = None) -> None:
        """Sample n more full solutions from the root (batched), finalising them; a solution whose
        last window of tokens is less confident than ``min_confidence`` is cut off there.

        Stepping n live branches holds up to 2n sequences (parents and children), so a request
        larger than the context's free sequences is drawn in as few chunks as fit.
        """
        rules = self.rules if min_confidence is None else replace(self.rules, min_confidence=min_confidence)
        before = len(self.finished)
        # tokens stream only where the one sample drawn is the answer
        on_token = self.hooks.token if n == 1 and not self.candidates else None
        while n > 0:
            chunk = min(n, max(1, (self.gen.free_sequences - 1) // 2))
            leaves, _ = self.gen.complete([self.root], chunk, sampling=self.sampling, rules=rules,
                                          max_steps=self.settings.max_steps, between_steps=self.interrupt, on_token=on_token)
            self.finished += leaves
            n -= chunk
        self.finalise(self.finished[before:], score=score)
        self.hooks.progress(len(self.finished), None)

    # -- the answer ----------------------------------------------------------------------------------

    def select(self, how: Select | str) -> int | None:
        if how == "prm":
            return best_scored(self.candidates)
        if how == "weighted":
            return weighted_vote(self.candidates, self.equal)
        if how == "majority":
            return majority_vote(self.candidates, self.equal)
        if how in CONFIDENCE_PICKS:
            return confidence_pick(how, [c.answer for c in self.candidates], [c.confidence for c in self.candidates], self.equal)
        if how == "auto":
            return self.adaptive_pick
        raise unknown_pick(how, (*PICKS, "auto"))
