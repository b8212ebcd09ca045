"""The searcher: loaded models and a task, running any strategy on a question.

``run`` may be called from several threads at once: each search gets its own session of the
generator (room in the KV pool, its own usage), its own view of the PRM and its own energy account,
and the generator and the PRM batch the work of all of them (continuous batching).

It opens a :class:`SearchContext` per question, lets the strategy run in it under the guard the
spending policy hands out, picks the answer, and accounts for what the question cost (tokens,
PRM work, wall time, and joules from the policy's meter) the same way for every strategy.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import replace

from edge_adapt.budget.decisions import Selected
from edge_adapt.budget.guard import Budget, Guard, SpendingPolicy, Unlimited
from edge_adapt.energy import Usage
from edge_adapt.errors import BudgetError
from edge_adapt.generator import Generator
from edge_adapt.generator.session import GenerationSession
from edge_adapt.prm import PRM
from edge_adapt.prm.view import SearchPRM
from edge_adapt.search.calibration.answer_model import AnswerModel
from edge_adapt.search.calibration.vote_model import VoteModel
from edge_adapt.search.context import RunHooks, SearchContext, SearchSettings
from edge_adapt.search.strategies.best_of_n import BestOfN
from edge_adapt.search.strategy import Strategy, sequences_needed
from edge_adapt.search.types import Cost, SearchResult
from edge_adapt.search.voting import NO_ANSWER, no_answer_pick
from edge_adapt.tasks import Problem, Task

log = logging.getLogger(__name__)


def work_done(generator: Generator | GenerationSession, prm: PRM) -> Usage:
    """Work done so far by the generator and the PRM (what the energy estimate charges for): all
    of it, or one search's (its session and PRM view)."""
    gen = generator.usage
    return Usage(gen.prompt_tokens, gen.generated_tokens, prm.stats.tokens)


class Searcher:
    """Runs strategies on problems of one task with loaded models (reused across questions)."""

    def __init__(self, generator: Generator, prm: PRM, task: Task, settings: SearchSettings | None = None,
                 policy: SpendingPolicy | None = None, answer_model: AnswerModel | None = None,
                 vote_model: VoteModel | None = None) -> None:
        self.generator = generator
        self.prm = prm
        self.task = task
        self.settings = settings or SearchSettings()
        self.policy = policy  # budgets every run asks before each expansion, and the meter (None: unlimited)
        self._answer_model = answer_model
        self.vote_model = vote_model  # the generator's calibrated vote model (adaptive_vote), if any

    @property
    def answer_model(self) -> AnswerModel:
        """The answer model calibrated with the PRM (the root reads it from the PRM's folder), or
        the documented fallback."""
        if self._answer_model is None:
            self._answer_model = AnswerModel.fallback()
        return self._answer_model

    def usage(self) -> Usage:
        return work_done(self.generator, self.prm)

    def run(self, strategy: Strategy, problem: Problem, seed: int = 0, budget: Budget | None = None, *,
            score_question: bool = False, hooks: RunHooks = RunHooks(), settings: SearchSettings | None = None
            ) -> SearchResult:
        """Search one problem; ``budget`` overrides the policy's for this question only.
        ``score_question`` has the PRM score the question alone (in the cost) where the strategy
        does not read that score itself, for a caller that shows it. ``hooks`` watch the run (a
        hook that raises abandons the search; its KV sequences are freed). ``settings`` replace the
        searcher's sampling, prompt and step settings for this run only (a server's request)."""
        if budget is not None and not budget.unlimited and self.policy is None:
            raise BudgetError("a budget needs a policy to measure it: build the searcher with edge_adapt.open_stack "
                              "(or pass policy=EnergyPolicy(...))")
        started = time.perf_counter()
        settings = settings or self.settings
        rules = settings.rules or self.task.step_rules
        with contextlib.ExitStack() as stack:
            # the search's own energy account, room in the KV pool and PRM view: searches on other
            # threads share the device, and what they spend is theirs
            account = stack.enter_context(self.policy.ledger.open()) if self.policy is not None else None
            guard: Guard = Unlimited()
            gen = stack.enter_context(self.generator.session(
                sequences=min(sequences_needed(strategy), self.generator.config.n_seq_max),
                cells=min(strategy.live_paths * rules.max_new_tokens, self.generator.n_ctx), rows=strategy.live_paths,
                payer=account, interrupt=hooks.interrupt, cap_reached=lambda: guard.cap_reached()))
            prm = SearchPRM(self.prm, account)
            if self.policy is not None:
                assert account is not None
                guard = self.policy.start_question(budget, meter=account.read, usage=lambda: work_done(gen, prm),
                                                   charged=lambda: account.joules)
            ctx = SearchContext(gen, prm, self.task, settings, problem, seed, guard, lambda: self.answer_model, hooks,
                                self.vote_model)
            try:
                strategy.run(ctx)
                if score_question:
                    ctx.question_score()
            finally:
                ctx.release_all()
            chosen_index = ctx.select(strategy.select)
            by = strategy.select
            if chosen_index is None and ctx.candidates:  # no sample holds an answer: the best one's text replies
                chosen_index, by = no_answer_pick(ctx.candidates), NO_ANSWER
            guard.finish()
            candidates = tuple(ctx.candidates)
            chosen = candidates[chosen_index] if chosen_index is not None else None
            cost = Cost.from_stats(gen.usage, prm.stats, len(candidates), time.perf_counter() - started)
            if account is not None:
                energy = account.read()
                cost = replace(cost, joules=energy.joules, energy_source=energy.source, energy_estimated=energy.estimated)
        ctx.record(Selected(by, chosen_index))
        return SearchResult(strategy.name, problem.question, chosen.answer if chosen else None, chosen, candidates,
                            tuple(ctx.decisions), cost, ctx.question_q)

    def warm_up(self, problem: Problem, samples: int = 4, seed: int = 0) -> None:
        """Measure this device's costs with a short unbudgeted run, so the policy's first budgeted
        question is sized on measurements rather than guesses."""
        if self.policy is None:
            return
        pick = "prm" if self.prm.available else "majority"
        self.run(BestOfN(n=samples, select=pick), problem, seed=seed, budget=Budget())
