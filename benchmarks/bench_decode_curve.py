"""Decode time per step against batch rows: the curve that says what batching can buy on this device.

One generator, one prompt, N branches decoded together (N = 1, 4, 16, 64), each for a fixed number
of tokens; prints milliseconds per decode and per row, the ratio to a lone row, and the KV cells
in use, interleaving the sizes over several rounds (min and median). ``--gpu-layers -1`` measures
the same on a GPU build of llama.cpp.

    python benchmarks/bench_decode_curve.py [--generator GGUF] [--threads T] [--gpu-layers -1]
"""

from __future__ import annotations

import argparse
import statistics
import time

from edge_adapt.assembly import open_generator
from edge_adapt.generator import GeneratorConfig, SamplingParams, StepRules
from edge_adapt.models import load_default_models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", help="GGUF (default: the shipped generator)")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--gpu-layers", type=int, default=0)
    parser.add_argument("--rows", default="1,4,16,64")
    parser.add_argument("--tokens", type=int, default=48, help="tokens each branch decodes")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    path = args.generator or load_default_models().generator
    sizes = [int(r) for r in args.rows.split(",")]
    config = GeneratorConfig(n_ctx=max(4096, 2 * max(sizes) * (args.tokens + 64)), n_seq_max=max(sizes) + 2,
                             n_threads=args.threads, n_gpu_layers=args.gpu_layers)
    rules = StepRules(delimiter="\u0000", max_step_tokens=args.tokens, max_new_tokens=args.tokens)  # no early end
    per_decode: dict[int, list[float]] = {n: [] for n in sizes}
    with open_generator(path, config) as gen:
        for _ in range(args.rounds):
            for n in sizes:  # interleaved, so drift hits every size alike
                root = gen.prefill("Q:454+762*3\n", seed=n)
                decodes0 = gen.scheduler.decodes
                started = time.perf_counter()
                gen.expand([root], n, sampling=SamplingParams(temperature=1.0), rules=rules)
                elapsed = time.perf_counter() - started
                per_decode[n].append(elapsed / max(1, gen.scheduler.decodes - decodes0))
                gen.reset()
    base = min(per_decode[sizes[0]])
    print(f"{path} ({'GPU layers ' + str(args.gpu_layers) if args.gpu_layers else 'CPU'}, threads {args.threads or 'all'}): "
          f"{args.tokens} tokens per branch, {args.rounds} rounds")
    print(f"{'rows':>5} {'ms/decode min':>14} {'median':>8} {'ms/row':>8} {'decode vs 1 row':>16}")
    for n in sizes:
        best, median = min(per_decode[n]), statistics.median(per_decode[n])
        print(f"{n:>5} {best * 1e3:>14.2f} {median * 1e3:>8.2f} {best * 1e3 / n:>8.3f} {best / base:>15.2f}x")


if __name__ == "__main__":
    main()
