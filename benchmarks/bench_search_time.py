"""Where a search's wall time goes (generation, PRM, other), and what the thread settings do to it.

Best-of-16 ranked by the PRM (every sample scored) on questions spread over the default task's
levels, with the shipped default models, under several settings of the generator's threads, the
PRM's threads and ONNX Runtime's spinning workers. Settings are interleaved question by question
(A, B, C, A, B, C, ...) so that a noisy machine hurts them alike; each prints the min and median
over its runs of the per-question wall time, and its shares. The first setting is the old
default (every core for both runtimes, spinning on), the baseline the others are compared to.

    python benchmarks/bench_search_time.py [--questions 12] [--repeats 2] [--n 16] [--load 1]

``--load N`` runs N busy processes beside the search, as on a machine doing something else.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
from contextlib import ExitStack
from dataclasses import dataclass

from edge_adapt.assembly import StackSettings, open_stack
from edge_adapt.generator import GeneratorConfig
from edge_adapt.generator.config import default_threads
from edge_adapt.models import load_default_models
from edge_adapt.search import BestOfN, sequences_needed
from edge_adapt.settings import ModelSettings
from edge_adapt.tasks.arithmetic import TEST_PER_LEVEL, ArithmeticTask


@dataclass(frozen=True)
class Setting:
    gen_threads: int
    prm_threads: int
    spin: bool

    @property
    def label(self) -> str:
        return f"gen {self.gen_threads} / PRM {self.prm_threads} threads, spin {'on' if self.spin else 'off'}"


def _spin() -> None:
    while True:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--load", type=int, default=0, help="busy processes to run beside the search (a loaded machine)")
    args = parser.parse_args()
    busy = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.load)]
    for p in busy:
        p.start()
    cores = default_threads()
    settings = [Setting(cores, cores, True), Setting(cores, cores, False), Setting(cores, 1, False),
                Setting(1, cores, False), Setting(1, 1, False)]
    settings = list(dict.fromkeys(settings))
    task = ArithmeticTask()
    split = task.problems("test", list(TEST_PER_LEVEL))
    problems = [split[(i * len(split)) // args.questions] for i in range(args.questions)]
    models = load_default_models()
    strategy = BestOfN(n=args.n)
    n_seq = sequences_needed(strategy)
    times: dict[Setting, list[tuple[float, float, float]]] = {s: [] for s in settings}
    with ExitStack() as stack:
        searchers = {}
        for s in settings:
            config = GeneratorConfig(n_ctx=4096, n_seq_max=n_seq, n_threads=s.gen_threads, n_threads_batch=s.gen_threads)
            settings = StackSettings(ModelSettings(models.generator, models.prm), task, (strategy,), generator_config=config,
                                     prm_threads=s.prm_threads, prm_spin=s.spin)
            searchers[s] = stack.enter_context(open_stack(settings)).searcher
        for s in settings:  # warm-up: first calls allocate
            searchers[s].run(strategy, problems[0], seed=0)
        for rep in range(args.repeats):
            for i, problem in enumerate(problems):
                for s in settings:
                    cost = searchers[s].run(strategy, problem, seed=rep * 1000 + i).cost
                    times[s].append((cost.wall_s, cost.generation_s, cost.prm_s))
                print(f"\rrepeat {rep + 1}/{args.repeats}, question {i + 1}/{len(problems)}  ", end="",
                      file=sys.stderr, flush=True)
    print(file=sys.stderr)
    for p in busy:
        p.terminate()
    base = statistics.median(t[0] for t in times[settings[0]])
    print(f"best-of-{args.n} (PRM pick), {len(problems)} questions x {args.repeats}, {cores} cores, {args.load} busy processes "
          f"beside; "
          "per-question wall seconds")
    print(f"| setting | min s | median s | vs {settings[0].label} | generation | PRM | other |")
    print("|---|---|---|---|---|---|---|")
    for s in settings:
        walls = [t[0] for t in times[s]]
        total = sum(walls)
        gen = sum(t[1] for t in times[s]) / total
        prm = sum(t[2] for t in times[s]) / total
        print(f"| {s.label} | {min(walls):.3f} | {statistics.median(walls):.3f} | {base / statistics.median(walls):.2f}x faster "
              f"| "
              f"{gen:.0%} | {prm:.0%} | {1 - gen - prm:.0%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
