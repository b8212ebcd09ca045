"""Search strategies: fixed budgets (best-of-N, step-level beam search) and their instance-adaptive
versions (IAS best-of-N, IAS beam search), with voting and Adaptive-Consistency early stopping.

All run on one :class:`Searcher` that holds the loaded generator, PRM and task, and return the
same :class:`~edge_adapt.search.types.SearchResult`. The efficiency rules hold everywhere:
siblings are decoded together from their parent's KV cache, PRM calls are batched over every
live branch of a step, a pruned branch is released at once and never generated further, and a
finished branch is scored once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from edge_adapt.energy import Usage
from edge_adapt.errors import BudgetError, SamplingConfigError
from edge_adapt.generator import Generator, Node, SamplingParams, StepRules
from edge_adapt.policy import Budget, EnergyPolicy, Guard, Unlimited
from edge_adapt.prm import PrefixScore, QuantilePRM, Quantiles
from edge_adapt.search.answer_model import AnswerModel, Evidence, Moments, PickState, QuestionModel, posterior
from edge_adapt.search.ias import (
    CONFIDENCE_LADDER,
    achieved_confidence,
    beams_to_keep,
    expansion_width,
    n_samples,
)
from edge_adapt.search.types import Candidate, Cost, Decision, SearchResult
from edge_adapt.search.value_sampling import ValueSampling, next_round
from edge_adapt.search.voting import (
    best_scored,
    group_answers,
    majority_confidence,
    majority_vote,
    votes_for,
    weighted_vote,
)
from edge_adapt.tasks import Problem, Task
from edge_adapt.tasks.grading import answers_equal

log = logging.getLogger(__name__)

Select = Literal["prm", "weighted", "majority", "auto"]


@dataclass(frozen=True)
class EarlyStop:
    """Adaptive-Consistency: sample in rounds, stop once P(leader is the majority) >= threshold."""

    threshold: float = 0.95
    round_size: int = 4


@dataclass(frozen=True)
class BestOfN:
    n: int = 16
    select: Select = "prm"
    early_stop: EarlyStop | None = None
    name: str = "best_of_n"


@dataclass(frozen=True)
class IASBestOfN:
    """N = min(N(p_low), n_max), p_low the PRM's ``size_quantile`` for the question alone."""

    n_max: int = 32
    confidence: float = 0.99
    size_quantile: float = 0.1
    select: Select = "prm"
    early_stop: EarlyStop | None = None
    name: str = "ias_best_of_n"


@dataclass(frozen=True)
class BeamSearch:
    """Keep the best n/width prefixes (by the PRM median) and expand each by width, every
    ``score_every`` steps (in between, every beam is continued by one step)."""

    n: int = 16
    width: int = 4
    score_every: int = 1
    select: Select = "prm"
    name: str = "beam"


@dataclass(frozen=True)
class IASBeamSearch:
    """At each re-allocation: keep K = min{k : k*M_max >= N(p_(k))} <= K_max beams and expand each
    by M = min(ceil(N(min p_kept)/K_max), M_max); the first expansion samples N(p_question)."""

    k_max: int = 4
    m_max: int = 4
    confidence: float = 0.99
    size_quantile: float = 0.1
    realloc_every: int = 1
    select: Select = "prm"
    name: str = "ias_beam"


Strategy = BestOfN | IASBestOfN | BeamSearch | IASBeamSearch | ValueSampling


@dataclass(frozen=True)
class SearchSettings:
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(temperature=0.7))
    rank_quantile: float = 0.5  # which PRM quantile ranks candidates and prefixes
    max_steps: int = 32


class Searcher:
    """Runs strategies on problems of one task with loaded models (reused across questions)."""

    def __init__(self, generator: Generator, prm: QuantilePRM, task: Task, settings: SearchSettings | None = None,
                 policy: EnergyPolicy | None = None, answer_model: AnswerModel | None = None) -> None:
        self.generator = generator
        self.prm = prm
        self.task = task
        self.settings = settings or SearchSettings()
        self.policy = policy  # budgets every run asks before each expansion (None: unlimited)
        self._answer_model = answer_model
        self._equal = answers_equal

    @property
    def answer_model(self) -> AnswerModel:
        """The selector model calibrated with the PRM (its folder's selector_model.json), or the
        documented fallback; loaded on first use by adaptive search."""
        if self._answer_model is None:
            self._answer_model = AnswerModel.for_prm(self.prm.bundle.path)
            fitted_at = self._answer_model.provenance.get("temperature")
            if fitted_at is not None and abs(float(fitted_at) - self.settings.sampling.temperature) > 1e-6:
                log.warning("the answer model in %s was fitted on samples at temperature %g, search samples at %g: its gains "
                            "and stopping rule hold for %g (refit it with `edge-adapt export selector ... --temperature %g`)",
                            self.prm.bundle.path, float(fitted_at), self.settings.sampling.temperature, float(fitted_at),
                            self.settings.sampling.temperature)
        return self._answer_model

    def usage(self) -> Usage:
        """Work done so far by the generator and the PRM (what the energy estimate charges for)."""
        gen, prm = self.generator.usage, self.prm.stats
        return Usage(gen.prompt_tokens, gen.generated_tokens, prm.tokens)

    # -- public ---------------------------------------------------------------------------------

    def run(self, strategy: Strategy, problem: Problem, seed: int = 0, budget: Budget | None = None) -> SearchResult:
        """Search one problem; ``budget`` overrides the policy's for this question only."""
        if budget is not None and not budget.unlimited and self.policy is None:
            raise BudgetError("a budget needs a policy to measure it: build the searcher with edge_adapt.open_stack "
                              "(or pass policy=EnergyPolicy(...))")
        started = time.perf_counter()
        gen0, prm0 = self.generator.usage, self.prm.stats
        decisions: list[Decision] = []
        guard = self.policy.start_question(decisions, budget) if self.policy is not None else Unlimited()
        energy0 = self.policy.read() if self.policy is not None else None
        run = _Run(self, problem, seed, guard, decisions)
        try:
            if isinstance(strategy, (BestOfN, IASBestOfN)):
                run.best_of_n(strategy)
            elif isinstance(strategy, (BeamSearch, IASBeamSearch)):
                run.beam(strategy)
            elif isinstance(strategy, ValueSampling):
                run.value_sampling(strategy)
            else:
                raise SamplingConfigError(f"unknown strategy {strategy!r}")
        finally:
            run.release_all()
        chosen_index = run.select(strategy.select)
        guard.finish()
        candidates = tuple(run.candidates)
        chosen = candidates[chosen_index] if chosen_index is not None else None
        cost = Cost.from_stats(self.generator.usage - gen0, self.prm.stats - prm0, len(candidates), time.perf_counter() - started)
        if energy0 is not None:
            assert self.policy is not None
            energy = self.policy.read()
            cost = replace(cost, joules=energy.joules - energy0.joules, energy_source=energy.source, energy_estimated=energy.estimated)
        run.decisions.append(Decision("select", {"by": strategy.select, "chosen": chosen_index}))
        return SearchResult(strategy.name, problem.question, chosen.answer if chosen else None, chosen, candidates, tuple(run.decisions), cost)

    def warm_up(self, problem: Problem, samples: int = 4, seed: int = 0) -> None:
        """Measure this device's costs with a short unbudgeted run, so the policy's first budgeted
        question is sized on measurements rather than guesses."""
        if self.policy is None:
            return
        self.run(BestOfN(n=samples), problem, seed=seed, budget=Budget())

    def run_many(
        self, strategy: Strategy, problems: Sequence[Problem], seed: int = 0,
        progress: Callable[[int, int], None] = lambda done, total: None,
    ) -> list[SearchResult]:
        """Independent questions, one after another, sharing the loaded models."""
        results = []
        for i, problem in enumerate(problems):
            results.append(self.run(strategy, problem, seed=seed + i))
            progress(i + 1, len(problems))
        return results


class _Run:
    """The state of one search on one question."""

    def __init__(self, searcher: Searcher, problem: Problem, seed: int, guard: Guard,
                 decisions: list[Decision]) -> None:
        self.s = searcher
        self.guard = guard
        self.gen = searcher.generator
        self.problem = problem
        self.rules = searcher.task.step_rules
        self.sampling = searcher.settings.sampling
        self.q = searcher.settings.rank_quantile
        self.root = self.gen.prefill(searcher.task.prompt(problem), seed=seed)
        self.live: list[Node] = [self.root]
        self.finished: list[Node] = []
        self.candidates: list[Candidate] = []
        self.decisions = decisions
        self.adaptive_pick: int | None = None  # set by value sampling
        self.scored: dict[tuple[str, ...], PrefixScore] = {}  # finished solutions' PRM scores, by their steps

    # -- bookkeeping ------------------------------------------------------------------------------

    def release_all(self) -> None:
        self.gen.release(*self.live)
        self.live = []

    def _expand(self, parents: Sequence[Node], widths: Sequence[int]) -> list[Node]:
        children = self.gen.expand(parents, widths, sampling=self.sampling, rules=self.rules).children
        done = [c for c in children if c.ends_solution]
        self.finished += done
        return [c for c in children if not c.ends_solution]

    def _score(self, nodes: Sequence[Node]) -> list[Quantiles]:
        """One batched PRM call over the prefixes ending at ``nodes``."""
        if not nodes:
            return []
        scores = self.s.prm.score(self.problem.question, [[s.text for s in n.steps()] for n in nodes])
        return [sc.final for sc in scores]

    def _finalise(self, nodes: Sequence[Node], score: bool = True) -> None:
        """Every newly finished (or cut-off) solution into a candidate, scored once in one PRM call
        (``score=False`` where nobody reads the scores: a plain vote)."""
        if not nodes:
            return
        if not score:
            self.candidates += [Candidate.from_leaf(n, self.s.task.extract_answer(n.solution_text())) for n in nodes]
            return
        # identical solutions (frequent: a small generator often writes the same one) are scored
        # once per question, also across rounds of sequential search
        texts = [tuple(s.text for s in n.steps()) for n in nodes]
        new = [t for t in dict.fromkeys(texts) if t not in self.scored]
        if new:
            self.scored.update(zip(new, self.s.prm.score(self.problem.question, [list(t) for t in new], per_step=True), strict=True))
        for node, sc in zip(nodes, (self.scored[t] for t in texts), strict=True):
            cand = Candidate.from_leaf(node, self.s.task.extract_answer(node.solution_text()))
            self.candidates.append(replace(cand, final=sc.final, per_step=sc.per_step or ()))

    def select(self, how: Select) -> int | None:
        if how == "prm":
            return best_scored(self.candidates)
        if how == "weighted":
            return weighted_vote(self.candidates, self.s._equal)
        if how == "majority":
            return majority_vote(self.candidates, self.s._equal)
        if how == "auto":
            return self.adaptive_pick
        raise SamplingConfigError(f"unknown selection {how!r}; choose prm, weighted or majority")

    def _complete(self, n: int, score: bool = True) -> None:
        """Sample n more full solutions from the root (batched), finalising them.

        Stepping n live branches holds up to 2n sequences (parents and children), so a request
        larger than the context's free sequences is drawn in as few chunks as fit.
        """
        before = len(self.finished)
        while n > 0:
            chunk = min(n, max(1, (self.gen.free_sequences - 1) // 2))
            leaves, _ = self.gen.complete([self.root], chunk, sampling=self.sampling, rules=self.rules,
                                          max_steps=self.s.settings.max_steps)
            self.finished += leaves
            n -= chunk
        self._finalise(self.finished[before:], score=score)

    # -- best-of-N --------------------------------------------------------------------------------

    def best_of_n(self, st: BestOfN | IASBestOfN) -> None:
        p_low = None
        if isinstance(st, IASBestOfN):
            q = self.s.prm.score_question(self.problem.question)
            p_low = q.at(st.size_quantile)
            needed = n_samples(p_low, st.confidence)
            n = min(needed, st.n_max)
            self.decisions.append(Decision("n_samples", {
                "p_low": p_low, "quantile": st.size_quantile, "confidence": st.confidence,
                "rule": "N = ceil(log(1-C)/log(1-p_low))", "needed": needed, "n": n, "capped_at_n_max": needed > st.n_max,
            }))
            affordable = self.guard.affordable("sample", n)
            if affordable < n:  # a tight budget lowers the target confidence instead of failing
                n = max(1, affordable)
                self.decisions.append(Decision("lowered_confidence", {
                    "from": st.confidence, "to": achieved_confidence(p_low, n), "n": n, "limit": self.guard.last_limit}))
        else:
            n = st.n
            self.decisions.append(Decision("n_samples", {"n": n, "rule": "fixed"}))
        if n < 1:
            raise SamplingConfigError(f"best-of-N needs N >= 1, got {n}")
        round_size = st.early_stop.round_size if st.early_stop is not None else n
        drawn = 0
        while drawn < n:
            granted = self.guard.grant("sample", min(round_size, n - drawn))
            if granted == 0:
                break
            self._complete(granted, score=st.select != "majority")
            self.guard.observe()
            drawn += granted
            if st.early_stop is not None and drawn < n:
                votes = [len(g) for g in group_answers(self.candidates, self.s._equal)]
                confidence = majority_confidence(votes) if votes else 0.0
                if confidence >= st.early_stop.threshold:
                    self.decisions.append(Decision("early_stop", {
                        "after": drawn, "of": n, "votes": sorted(votes, reverse=True),
                        "confidence": confidence, "threshold": st.early_stop.threshold}))
                    return

    # -- value-aware sampling -----------------------------------------------------------------------

    def value_sampling(self, st: ValueSampling) -> None:
        """Rounds of 1..lookahead samples while their expected gain in the picked answer's accuracy
        exceeds their cost at ``st.price`` (see :mod:`edge_adapt.search.value_sampling`)."""
        q = self.s.prm.score_question(self.problem.question)
        model = self.s.answer_model.for_question(q.values, q.levels)
        moments = Moments(model.prior, st.n_max + st.lookahead + 1)
        evidence, firsts = Evidence(), []  # firsts: each answer group's first candidate, as in the evidence
        gen0, prm0 = self.gen.usage, self.s.prm.stats
        rounds = []
        while True:
            drawn = len(self.candidates)
            work = 0.0
            if drawn:
                gen, prm = self.gen.usage - gen0, self.s.prm.stats - prm0
                work = (gen.generated_tokens + st.prm_token_weight * prm.tokens) / drawn
            self.adaptive_pick = self._pick_for(model.selector, evidence, moments, model, firsts)
            decision = next_round(evidence, moments, model, st, work, self._pick_state(self.adaptive_pick))
            rounds.append(decision)
            if decision.draw == 0:
                break
            granted = self.guard.grant("sample", decision.draw)
            if granted == 0:
                break
            self._complete(granted, score=st.use_prm or model.selector != "majority")
            self.guard.observe()
            for index in range(drawn, len(self.candidates)):
                cand = self.candidates[index]
                if cand.answer is None:
                    evidence = evidence.add(None, 0.0)
                    continue
                group = next((g for g, first in enumerate(firsts) if self.s._equal(cand.answer, self.candidates[first].answer)),
                             len(firsts))
                if group == len(firsts):
                    firsts.append(index)
                median = cand.final.median if cand.final is not None else None
                evidence = evidence.add(group, model.evidence_of(median))
        self.adaptive_pick = self._pick_for(model.selector, evidence, moments, model, firsts)
        last = rounds[-1]
        self.decisions.append(Decision("value_sampling", {
            "question_q": [round(v, 4) for v in q.values], "calibrated_model": self.s.answer_model.calibrated,
            "picked_by": model.selector, "price": st.price, "samples": len(self.candidates),
            "rounds": [r.draw for r in rounds if r.draw], "stop": last.reason if last.draw == 0 else "budget_cap",
            "p_answer": round(last.accuracy, 4), "gave_up": last.reason == "not_worth" and last.accuracy < 0.5,
            "gains_at_stop": [round(g, 4) for g in last.gains], "work_per_sample": round(last.cost_per_sample, 1),
            "groups": [g.count for g in evidence.groups],
        }))

    def _pick_for(self, selector: str, evidence: Evidence, moments: Moments, model: QuestionModel, firsts: list[int]) -> int | None:
        """The candidate adaptive search would answer with now."""
        if selector != "posterior":
            return self.select(selector)  # type: ignore[arg-type]
        best = posterior(evidence, moments, model.concentration).best
        if best is None:
            return None
        members = [i for i, c in enumerate(self.candidates)
                   if c.answer is not None and self.s._equal(c.answer, self.candidates[firsts[best]].answer)]
        return max(members, key=lambda i: (self.candidates[i].final.median if self.candidates[i].final else 0.0, -i))

    def _pick_state(self, pick: int | None) -> PickState:
        if pick is None:
            return PickState(len(self.candidates), 0.0, False)
        chosen = self.candidates[pick]
        votes = votes_for([c.answer for c in self.candidates], pick, self.s._equal)
        return PickState(len(self.candidates), chosen.final.median if chosen.final is not None else 0.0, votes >= 2)

    # -- beam search ------------------------------------------------------------------------------

    def beam(self, st: BeamSearch | IASBeamSearch) -> None:
        budget = st.n if isinstance(st, BeamSearch) else st.k_max * st.m_max
        if isinstance(st, IASBeamSearch):
            q = self.s.prm.score_question(self.problem.question)
            first = min(n_samples(q.at(st.size_quantile), st.confidence), budget)
            self.decisions.append(Decision("n_samples", {"p_low": q.at(st.size_quantile), "first_expansion": first, "budget": budget}))
        else:
            first = budget
        active = self._expand_within_budget([self.root], [first]) or []
        self.live = [self.root, *active]
        every = st.score_every if isinstance(st, BeamSearch) else st.realloc_every
        step = 1
        while active and step < self.s.settings.max_steps and len(self.finished) < budget:
            remaining = budget - len(self.finished)
            if step % every == 0:
                kept, widths = self._allocate(st, active, remaining, step)
            else:
                kept, widths = active, [1] * len(active)
            self.gen.release(*[n for n in active if n not in kept])  # pruned: never generated further
            children = self._expand_within_budget(kept, widths)
            if children is None:  # the budget allows no further step: the kept beams stand as they are
                active = kept
                break
            self.gen.release(*kept)
            active = children
            self.live = [self.root, *active]
            step += 1
        self._finalise(self.finished + active)  # solutions still going at the cap are graded as they stand

    def _expand_within_budget(self, parents: Sequence[Node], widths: Sequence[int]) -> list[Node] | None:
        """Expand, after the policy has cut the widths down to what the budget allows; None when it
        allows nothing."""
        requested = sum(widths)
        granted = self.guard.grant("step", requested)
        if granted < requested:
            widths = _cap(list(widths), granted)
        if granted == 0:
            return None
        keep = [(p, w) for p, w in zip(parents, widths, strict=True) if w > 0]
        children = self._expand([p for p, _ in keep], [w for _, w in keep])
        self.guard.observe()
        return children

    def _allocate(self, st: BeamSearch | IASBeamSearch, active: list[Node], remaining: int, step: int) -> tuple[list[Node], list[int]]:
        scores = self._score(active)
        if isinstance(st, BeamSearch):
            k = max(1, min(len(active), -(-remaining // st.width)))
            order = sorted(range(len(active)), key=lambda i: -scores[i].at(self.q))
            kept = [active[i] for i in order[:k]]
            widths = _cap([st.width] * k, remaining)
            self.decisions.append(Decision("beam_allocation", {"step": step, "kept": k, "width": st.width}))
            return kept, widths
        p = [scores[i].at(st.size_quantile) for i in range(len(active))]
        order = sorted(range(len(active)), key=lambda i: -p[i])
        confidence, affordable = st.confidence, self.guard.affordable("step", remaining)
        while True:
            k = beams_to_keep([p[i] for i in order], st.m_max, st.k_max, confidence)
            m = expansion_width(min(p[i] for i in order[:k]), st.k_max, st.m_max, confidence)
            lower = [c for c in CONFIDENCE_LADDER if c < confidence]
            if min(k * m, remaining) <= affordable or not lower:
                break
            confidence = lower[0]
        if confidence != st.confidence:
            self.decisions.append(Decision("lowered_confidence", {
                "step": step, "from": st.confidence, "to": confidence, "limit": self.guard.last_limit}))
        kept = [active[i] for i in order[:k]]
        widths = _cap([m] * k, remaining)
        self.decisions.append(Decision("beam_allocation", {"step": step, "K": k, "M": m, "p_kept": [round(p[i], 4) for i in order[:k]]}))
        return kept, widths


def live_paths(strategy: Strategy) -> int:
    """The most solution paths a strategy decodes at once."""
    if isinstance(strategy, (BestOfN, BeamSearch)):
        return strategy.n
    if isinstance(strategy, IASBestOfN):
        return strategy.n_max
    if isinstance(strategy, ValueSampling):
        return strategy.lookahead  # rounds draw at most this many at once; finished ones are released
    return strategy.k_max * strategy.m_max


def sequences_needed(strategy: Strategy) -> int:
    """Generator sequences (``n_seq_max``) a strategy may hold at once: stepping N branches holds
    their parents too, plus the root."""
    return min(256, 2 * live_paths(strategy) + 2)


PROMPT_ROOM = 512  # KV cells kept for the prompt: a default-task prompt is under 64 tokens, a GSM8K one a few hundred
MIN_KV_CELLS = 2048


def kv_cells_needed(strategy: Strategy, rules: StepRules) -> int:
    """The KV pool (``n_ctx`` of the unified cache) a search needs so that no path is cut short:
    the prompt once (branches share it) plus every live path's longest solution. Sized to the
    search rather than generously: benchmarks/bench_kv.py found the pool's size costs memory but
    not speed (llama.cpp attends over the cells in use), and per-sequence streams slower (a
    branch copies its parent's stream)."""
    return max(MIN_KV_CELLS, PROMPT_ROOM + live_paths(strategy) * rules.max_new_tokens)


def _cap(widths: list[int], remaining: int) -> list[int]:
    """Trim expansion widths so that no more than ``remaining`` new branches are made."""
    out, left = [], remaining
    for w in widths:
        take = max(0, min(w, left))
        out.append(take)
        left -= take
    return out
