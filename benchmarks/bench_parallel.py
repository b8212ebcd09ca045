"""Many searches, one batch: the default adaptive search and the fixed frontier at K = 1, 4, 8, 16
searches at once, on fresh questions of the default task (question seed 1), shipped models.

Every K writes its own resumable run folder under OUT; the questions go in chunks, and each chunk
runs at every K in turn (interleaved, so drift on a shared machine hits every K alike). Prints, from
the records and the chunk timings alone:

- per K: whole-run wall time (and per chunk min/median), its ratio to K = 1, joules per generated
  token of each strategy, accuracy;
- at each K: the default adaptive search against majority:n=16 (tokens and joules ratios) and
  against the best fixed strategy (paired difference with its 95% interval and sign test);
- K = 8 against K = 1 on the same questions and seeds: the paired accuracy difference and how many
  samples differ (batched arithmetic can flip a sampled token).

    python benchmarks/bench_parallel.py runs/parallel [--questions 250] [--ks 1,4,8,16] [--chunk 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from edge_adapt.bench import BenchConfig, RunFolder, run_bench
from edge_adapt.bench.paired import paired
from edge_adapt.bench.runner import load_problems
from edge_adapt.defaults import read_calibration, search_default
from edge_adapt.models import load_default_models
from edge_adapt.settings import ModelSettings
from edge_adapt.tasks import get_task

FIXED = ("majority:n=1", "majority:n=2", "majority:n=4", "majority:n=8", "majority:n=16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--questions", type=int, default=250)
    parser.add_argument("--ks", default="1,4,8,16")
    parser.add_argument("--chunk", type=int, default=50)
    parser.add_argument("--threads", type=int, help="llama.cpp and ONNX Runtime threads (default: chosen per K)")
    parser.add_argument("--only-default", action="store_true", help="the default search alone (what batching buys it)")
    args = parser.parse_args()
    models = load_default_models()
    settings = ModelSettings(models.generator, models.prm, threads=args.threads)
    default, why = search_default(settings, read_calibration(settings))
    strategies = (default,) if args.only_default else (default, *[s for s in FIXED if s != default])
    config = BenchConfig(settings, strategies=strategies, limit=args.questions, question_seed=1)
    problems = load_problems(config, get_task("default"))
    ks = [int(k) for k in args.ks.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    timings_path = args.out / "timings.json"
    timings: dict[str, list[float]] = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    for end in range(args.chunk, len(problems) + args.chunk, args.chunk):
        for k in ks:
            folder = args.out / f"k{k}"
            done = len(RunFolder(folder).records()) if (folder / "records.jsonl").is_file() else 0
            if done >= min(end, len(problems)) * len(strategies):
                continue
            started = time.perf_counter()
            run_bench(config, folder, problems=problems[:end], parallel=k)
            timings.setdefault(str(k), []).append(time.perf_counter() - started)
            timings_path.write_text(json.dumps(timings))
            print(f"K={k}: {min(end, len(problems))} questions, chunk in {timings[str(k)][-1]:.1f} s", flush=True)
    report(args.out, ks, default, why, timings)


def report(out: Path, ks: list[int], default: str, why: str, timings: dict[str, list[float]]) -> None:
    runs = {k: RunFolder(out / f"k{k}").records() for k in ks}
    base = sum(timings.get(str(ks[0]), [0.0]))
    print(f"\ndefault search: {default} ({why}); {len(runs[ks[0]]) // max(1, len({r['strategy'] for r in runs[ks[0]]}))} "
          "questions, question seed 1")
    print(f"{'K':>3} {'wall s':>8} {'vs K=1':>7} {'chunk min':>10} {'median':>8}  per strategy: accuracy, tokens/q, mJ/token")
    for k in ks:
        chunks = timings.get(str(k), [])
        wall = sum(chunks)
        cells = []
        for name, rs in _by_strategy(runs[k]).items():
            tokens = sum(r["cost"]["generated_tokens"] for r in rs)
            joules = sum(r["cost"]["joules"] for r in rs)
            cells.append(f"{name} {100 * _acc(rs):.1f}% {tokens / len(rs):.0f} {1e3 * joules / max(tokens, 1):.2f}")
        print(f"{k:>3} {wall:>8.1f} {base / wall if wall else float('nan'):>6.2f}x "
              f"{min(chunks, default=float('nan')):>10.1f} {statistics.median(chunks) if chunks else float('nan'):>8.1f}  "
              + " | ".join(cells))
    reference = _by_strategy(runs[ks[0]]).get("majority:n=16", [])
    ref_j_per_token = sum(r["cost"]["joules"] for r in reference) / max(1, sum(r["cost"]["generated_tokens"] for r in reference))
    for k in ks:
        by = _by_strategy(runs[k])
        mine, m16 = by.get(default, []), by.get("majority:n=16", [])
        if not mine or not m16:
            continue
        tok = sum(r["cost"]["generated_tokens"] for r in mine) / sum(r["cost"]["generated_tokens"] for r in m16)
        jou = sum(r["cost"]["joules"] for r in mine) / sum(r["cost"]["joules"] for r in m16)
        jpt = sum(r["cost"]["joules"] for r in mine) / max(1, sum(r["cost"]["generated_tokens"] for r in mine))
        best = max((s for s in by if s != default), key=lambda s: _acc(by[s]))
        pair = paired(runs[k], default, best)
        print(f"K={k}: {default} at {tok:.0%} of majority:n=16's tokens and {jou:.0%} of its joules; "
              f"J/token {jpt / ref_j_per_token:.2f}x majority:n=16's at K={ks[0]}")
        if pair is not None:
            print(f"      {pair.line()}")
        cheaper_better = [s for s in by if s != default and _acc(by[s]) > _acc(mine) + 0.01
                          and _tokens(by[s]) < _tokens(mine)]
        print(f"      fixed strategies cheaper and more than a point better: {', '.join(cheaper_better) or 'none'}")
    if 8 in runs and ks[0] in runs:
        _same_questions(runs[ks[0]], runs[8], ks[0])


def _same_questions(a: list[dict[str, Any]], b: list[dict[str, Any]], k0: int) -> None:
    key = lambda r: (r["question_id"], r["strategy"])
    left, right = {key(r): r for r in a}, {key(r): r for r in b}
    common = sorted(set(left) & set(right))
    differ_samples = differ_answers = samples = 0
    same = ("answer", "tokens", "finished")  # what a sample said; its confidence moves in the last bits anyway
    for c in common:
        x, y = left[c].get("samples", []), right[c].get("samples", [])
        samples += max(len(x), len(y))
        differ_samples += sum(1 for s, t in zip(x, y, strict=False) if any(s.get(f) != t.get(f) for f in same))
        differ_samples += abs(len(x) - len(y))
        differ_answers += left[c]["answer"] != right[c]["answer"]
    merged = [dict(r, strategy=f"{r['strategy']}@K={k0}") for r in a] + [dict(r, strategy=f"{r['strategy']}@K=8") for r in b]
    print(f"K=8 vs K={k0}: {len(common)} (question, strategy) pairs; {differ_answers} picked answers differ, and "
          f"{differ_samples} of {samples} samples (answer, length or end; batched arithmetic flips a sampled token now and then)")
    for name in sorted({r["strategy"] for r in a}):
        pair = paired(merged, f"{name}@K=8", f"{name}@K={k0}")
        if pair is not None:
            print(f"      {pair.line()}")


def _by_strategy(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by[r["strategy"]].append(r)
    return dict(by)


def _acc(records: list[dict[str, Any]]) -> float:
    return sum(bool(r["correct"]) for r in records) / max(1, len(records))


def _tokens(records: list[dict[str, Any]]) -> float:
    return sum(r["cost"]["generated_tokens"] for r in records) / max(1, len(records))


if __name__ == "__main__":
    main()
