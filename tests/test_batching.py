"""Many searches, one batch: searches on threads share every llama_decode and PRM run of the real
shipped models, and each keeps its own answers, seed, budget, cancellation and KV room."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest

from edge_adapt import Budget, SamplingParams, StackSettings, open_stack
from edge_adapt.energy.ledger import EnergyLedger
from edge_adapt.energy.meters import EnergyReading, Meter
from edge_adapt.errors import EdgeAdaptError
from edge_adapt.generator.admission import Admission
from edge_adapt.models import load_default_models
from edge_adapt.search import BestOfN, SearchResult
from edge_adapt.search.context import RunHooks
from edge_adapt.search.spec import parse_spec
from edge_adapt.settings import MeterSettings, ModelSettings, RunSettings
from edge_adapt.tasks import get_task

TASK = get_task("default")
PROBLEMS = TASK.benchmark_problems("test", 0)[::60][:6]
GREEDY = SamplingParams(temperature=0.0)


def _stack(parallel: int, *, sampling: SamplingParams = GREEDY, prm: bool = True, **changes: object):
    models = load_default_models()
    run = RunSettings(ModelSettings(models.generator, models.prm if prm else None, threads=2), sampling=sampling,
                      meter=MeterSettings("estimate"), vote_model=False)
    settings = StackSettings(run, TASK, (parse_spec("majority:n=4"), parse_spec("adaptive:price=8")), parallel=parallel)
    return open_stack(replace(settings, **changes))


def _answers(result: SearchResult) -> list[tuple[str | None, str]]:
    return [(c.answer, c.text) for c in result.candidates]


def _together(jobs: list[Callable[[], SearchResult]]) -> list[SearchResult | BaseException]:
    """Run the jobs on threads at once (they start together) and return results or errors in order."""
    barrier = threading.Barrier(len(jobs))

    def run(job: Callable[[], SearchResult]) -> SearchResult | BaseException:
        barrier.wait()
        try:
            return job()
        except BaseException as exc:
            return exc

    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(run, jobs))


def test_searches_batched_together_give_their_answers_alone_at_temperature_zero() -> None:
    strategy = parse_spec("majority:n=4")
    with _stack(1) as stack:
        alone = [stack.searcher.run(strategy, p, seed=i) for i, p in enumerate(PROBLEMS)]
    with _stack(len(PROBLEMS)) as stack:
        decodes0 = stack.generator.scheduler.decodes
        together = _together([lambda p=p, i=i: stack.searcher.run(strategy, p, seed=i) for i, p in enumerate(PROBLEMS)])
        scheduler = stack.generator.scheduler
        # they really shared decodes: more rows per decode than one search of four paths has
        assert scheduler.rows / max(1, scheduler.decodes - decodes0) > 4
    for a, b in zip(alone, together, strict=True):
        assert isinstance(b, SearchResult)
        assert _answers(a) == _answers(b)
        assert a.answer == b.answer
        assert a.cost.generated_tokens == b.cost.generated_tokens  # each counts its own tokens only


def test_a_search_cancelled_mid_decode_leaves_the_others_unchanged() -> None:
    strategy = parse_spec("majority:n=4")
    with _stack(1) as stack:
        alone = [stack.searcher.run(strategy, p, seed=i) for i, p in enumerate(PROBLEMS[:3])]
    calls = {"n": 0}

    class Gone(EdgeAdaptError):
        pass

    def cancel_after_some_decodes() -> None:
        calls["n"] += 1
        if calls["n"] > 5:
            raise Gone("the client went away")

    with _stack(3) as stack:
        jobs = [lambda p=p, i=i: stack.searcher.run(strategy, p, seed=i) for i, p in enumerate(PROBLEMS[:3])]
        jobs[1] = lambda: stack.searcher.run(strategy, PROBLEMS[1], seed=1, hooks=RunHooks(interrupt=cancel_after_some_decodes))
        results = _together(jobs)
        assert isinstance(results[1], Gone)
        assert stack.generator.kv_cells_used == 0
        assert stack.generator.admission.cells_reserved == 0  # all given back
    for i in (0, 2):
        assert isinstance(results[i], SearchResult)
        assert _answers(results[i]) == _answers(alone[i])


def test_a_full_kv_pool_makes_a_search_wait_then_finish() -> None:
    strategy = parse_spec("majority:n=4")
    with _stack(1) as stack:
        alone = [stack.searcher.run(strategy, p, seed=i) for i, p in enumerate(PROBLEMS[:3])]
    # room for one search's reservation (prompt + 4 paths x 256 tokens) and not two
    with _stack(3, context=None) as stack:
        stack.generator.admission.cells = 1400
        results = _together([lambda p=p, i=i: stack.searcher.run(strategy, p, seed=i) for i, p in enumerate(PROBLEMS[:3])])
        assert stack.generator.admission.waited >= 2  # the second and the third waited for room
        assert stack.generator.admission.cells_reserved == 0
    for a, b in zip(alone, results, strict=True):
        assert isinstance(b, SearchResult)
        assert _answers(a) == _answers(b)


def test_seeds_budgets_and_costs_stay_per_search() -> None:
    sampling = SamplingParams(temperature=0.7)
    strategy = BestOfN(n=6, select="majority")
    with _stack(4, sampling=sampling) as stack:
        stack.searcher.warm_up(PROBLEMS[0])
        gen0 = stack.generator.usage
        budgets = [Budget(tokens=60), Budget(), Budget(tokens=60), Budget()]
        results = _together([lambda b=b: stack.searcher.run(strategy, PROBLEMS[2], seed=7, budget=b) for b in budgets])
        spent = stack.generator.usage - gen0
    assert all(isinstance(r, SearchResult) for r in results)
    capped, free = [results[0], results[2]], [results[1], results[3]]
    for r in capped:  # each search's own budget, read from its own tokens
        assert r.cost.generated_tokens <= 60 + 40
        assert r.cost.samples < 6
        assert any(d.kind == "budget_cap" for d in r.decisions)
    for r in free:
        assert r.cost.samples == 6
        assert not any(d.kind == "budget_cap" for d in r.decisions)
    # the same seed and settings: the same samples, whoever shared the batches (a capped search
    # draws the first of the same seeded samples; how many depends on the costs learnt so far)
    assert _answers(free[0]) == _answers(free[1])
    for r in capped:
        assert set(_answers(r)) <= set(_answers(free[0]))
    assert sum(r.cost.generated_tokens for r in results) == spent.generated_tokens


def test_per_search_joules_add_up_to_what_the_meter_measured() -> None:
    with _stack(4, sampling=SamplingParams(temperature=0.7)) as stack:
        ledger = stack.policy.ledger
        charged0, measured0 = ledger.charged, ledger.measured
        strategies = [parse_spec("adaptive:price=8"), parse_spec("majority:n=4")] * 4
        results = _together([lambda s=s, i=i: stack.searcher.run(s, PROBLEMS[i % 6], seed=i) for i, s in enumerate(strategies)])
        measured = ledger.measured - measured0
    joules = [r.cost.joules for r in results if isinstance(r, SearchResult)]
    assert len(joules) == len(strategies)
    assert all(j > 0 for j in joules)
    assert sum(joules) == pytest.approx(measured, rel=0.05)
    assert ledger.charged - charged0 == pytest.approx(measured, rel=1e-9)


class _CountingMeter(Meter):
    """A meter that gains one joule per reading (enough to check how readings are split)."""

    source, estimated = "test:counter", True

    def __init__(self) -> None:
        self.joules = 0.0

    def read(self) -> EnergyReading:
        self.joules += 1.0
        return EnergyReading(self.joules, None, self.source, True, self.joules)


def test_the_ledger_splits_shared_work_by_shares_and_the_rest_evenly() -> None:
    ledger = EnergyLedger(_CountingMeter())
    a, b = ledger.open(), ledger.open()
    ledger.charge({a: 3, b: 1})  # one joule since the last reading: 3/4 to a
    assert (a.joules, b.joules) == (0.75, 0.25)
    a.read()  # a search's own reading: the joule since goes to both alike
    assert (a.joules, b.joules) == (1.25, 0.75)
    a.close()  # closing settles what is still shared
    assert (a.joules, b.joules) == (1.75, 1.25)
    ledger.charge({a: 1})  # a closed account is charged nothing; b was the only one open
    assert (a.joules, b.joules) == (1.75, 2.25)
    assert ledger.charged == ledger.measured == 4.0


def test_admission_is_first_come_first_served_and_never_starves() -> None:
    admission = Admission(cells=100, sequences=8, rows=4)
    first = admission.reserve(90, 2, rows=2)
    order: list[str] = []

    def take(name: str, cells: int) -> None:
        r = admission.reserve(cells, 1, rows=1)
        order.append(name)
        admission.release(r)

    big = threading.Thread(target=take, args=("big", 80))
    big.start()
    deadline = time.monotonic() + 10
    while not admission._queue and time.monotonic() < deadline:  # the big one is waiting
        time.sleep(0.001)
    assert admission._queue
    small = threading.Thread(target=take, args=("small", 5))  # fits now, but arrived later
    small.start()
    admission.release(first)
    big.join(5)
    small.join(5)
    assert order == ["big", "small"]
    with pytest.raises(EdgeAdaptError, match="pool holds 100"):
        admission.reserve(101, 1)
    assert admission.rows_reserved == admission.cells_reserved == 0
