"""How the generator's KV cache should be laid out for search: one pool or a stream per branch, and how big.

A unified KV cache (llama.cpp's ``kv_unified``) lets a branch share its parent's cells for free,
but every token then attends over the cells of every branch in the pool; per-sequence streams
give each branch its own cells (branching copies the parent's stream) and a token attends over
its own path only. The pool's size is memory either way. This benchmark runs the same searches
(same questions, same seeds) on the shipped default models under several layouts, interleaved
question by question (A, B, C, A, B, C, ...) so a noisy machine hurts them alike, and prints per
layout the KV memory, the generation seconds per question (min and median) and per generated
token, and whether the samples were the same as the first layout's.

    python benchmarks/bench_kv.py [--questions 24] [--repeats 2] [-s best_of_n:n=16 -s adaptive:price=8]
    python benchmarks/bench_kv.py --generator SmolLM2-135M-Instruct.Q4_1.gguf --questions 6 --repeats 1 -s best_of_n:n=16

With ``--generator`` another GGUF decodes the default task's prompts (the shipped PRM still
scores them): a deeper model spends more of each token on attention, where the layout matters more.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import llama_cpp

from edge_adapt.assembly import StackSettings, open_stack
from edge_adapt.generator import Generator, GeneratorConfig, StepRules
from edge_adapt.models import load_default_models
from edge_adapt.search import Strategy, kv_cells_needed, sequences_needed
from edge_adapt.search.spec import parse_spec
from edge_adapt.settings import ModelSettings
from edge_adapt.tasks.arithmetic import TEST_PER_LEVEL, ArithmeticTask

PROMPT_ROOM = 64  # the default task's prompts are under 40 tokens


@dataclass(frozen=True)
class Layout:
    name: str
    unified: bool
    n_ctx: int
    clear: bool = False  # clear the cache before each search (llama.cpp then places cells from the start)


def layouts(strategy: Strategy, rules: StepRules) -> list[Layout]:
    n_seq = sequences_needed(strategy)
    path = PROMPT_ROOM + rules.max_new_tokens  # the longest path one search can make
    return [
        Layout("unified, a generous max(8192, 160 x n_seq)", True, max(8192, 160 * n_seq)),
        Layout("unified, max(8192, 160 x n_seq), cleared before each search", True, max(8192, 160 * n_seq), clear=True),
        Layout("unified, sized to the search: kv_cells_needed (the default)", True, kv_cells_needed(strategy, rules)),
        Layout("per-sequence streams, one longest path each", False, n_seq * path),
    ]


def kv_mib(gen: Generator) -> float:
    """The KV cache's size: K and V, every layer, every cell, at the cache's precision (f16)."""
    ptr = gen.model.ptr
    per_cell = 2 * llama_cpp.llama_model_n_layer(ptr) * llama_cpp.llama_model_n_embd(ptr) \
        * llama_cpp.llama_model_n_head_kv(ptr) // llama_cpp.llama_model_n_head(ptr) * 2
    return gen.n_ctx * per_cell / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("-s", "--strategy", action="append", help="strategy specs (default: best_of_n:n=16 and adaptive:price=8)")
    parser.add_argument("--generator", help="GGUF to decode with (default: the shipped generator)")
    args = parser.parse_args()
    specs = args.strategy or ["best_of_n:n=16", "adaptive:price=8"]
    task = ArithmeticTask()
    split = task.problems("test", list(TEST_PER_LEVEL))
    problems = [split[(i * len(split)) // args.questions] for i in range(args.questions)]
    models = load_default_models()
    generator = args.generator or models.generator
    for spec in specs:
        strategy = parse_spec(spec)
        n_seq = sequences_needed(strategy)
        plan = layouts(strategy, task.step_rules)
        runs: dict[Layout, list[tuple[float, int, tuple]]] = {lay: [] for lay in plan}
        with ExitStack() as stack:
            searchers, memory = {}, {}
            for lay in plan:
                config = GeneratorConfig(n_ctx=lay.n_ctx, n_seq_max=n_seq, kv_unified=lay.unified)
                # another GGUF is timed with the shipped PRM's scores: speed, not accuracy, is measured
                settings = StackSettings(ModelSettings(generator, models.prm), task, (strategy,), generator_config=config,
                                         other_generator="warn")
                searchers[lay] = stack.enter_context(open_stack(settings)).searcher
                memory[lay] = kv_mib(searchers[lay].generator)
            for lay in plan:  # warm-up: first calls allocate
                searchers[lay].run(strategy, problems[0], seed=0)
            for rep in range(args.repeats):
                for i, problem in enumerate(problems):
                    for lay in plan:
                        if lay.clear:
                            searchers[lay].generator.reset()
                        result = searchers[lay].run(strategy, problem, seed=rep * 1000 + i)
                        runs[lay].append((result.cost.generation_s, result.cost.generated_tokens,
                                          tuple(c.text for c in result.candidates)))
                    print(f"\r{spec}: repeat {rep + 1}/{args.repeats}, question {i + 1}/{len(problems)}  ",
                          end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        base = plan[0]
        base_median = statistics.median(r[0] for r in runs[base])
        print(f"\n{spec} on {Path(generator).name} (n_seq_max {n_seq}), {len(problems)} questions x {args.repeats}; "
              "generation seconds per question")
        print("| layout | n_ctx | KV MiB | min s | median s | vs first | ms / generated token | same samples |")
        print("|---|---|---|---|---|---|---|---|")
        for lay in plan:
            secs = [r[0] for r in runs[lay]]
            tokens = sum(r[1] for r in runs[lay])
            same = sum(a[2] == b[2] for a, b in zip(runs[lay], runs[base], strict=True))
            print(f"| {lay.name} | {lay.n_ctx} | {memory[lay]:.1f} | {min(secs):.3f} | {statistics.median(secs):.3f} | "
                  f"{base_median / statistics.median(secs):.2f}x faster | {1000 * sum(secs) / max(tokens, 1):.2f} | "
                  f"{same}/{len(secs)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
