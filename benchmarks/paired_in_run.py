"""Strategies of one run folder side by side on the questions every one of them answered, and
paired differences (who alone was right, a bootstrap interval, the sign test): the way to read a
run that is still going, or to set a variant against the strategy it varies.

    python benchmarks/paired_in_run.py runs/dc-q0 deepconf_online:n=16 deepconf:n=16 majority:n=16 \
        --pair 'adaptive_vote:price=8,keep=0.9|adaptive_vote:price=8'
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict

from edge_adapt.bench.paired import paired
from edge_adapt.bench.records import RunFolder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run")
    parser.add_argument("strategies", nargs="+", help="the strategies to show; the first is set against each other one")
    parser.add_argument("--pair", action="append", default=[], metavar="A|B", help="also set A against B (both listed)")
    args = parser.parse_args()
    by_question: dict[str, dict[str, dict]] = defaultdict(dict)
    for record in RunFolder(args.run).records():
        if record["strategy"] in args.strategies:
            by_question[record["question_id"]][record["strategy"]] = record
    common = {q: rows for q, rows in by_question.items() if len(rows) == len(args.strategies)}
    levels = Counter(next(iter(rows.values()))["level"] for rows in common.values())
    print(f"{len(common)} questions answered by all {len(args.strategies)} (per level: "
          f"{', '.join(f'{lv}: {n}' for lv, n in sorted(levels.items(), key=lambda kv: str(kv[0])))})")
    print("| strategy | accuracy % | tokens/q | J/q | samples cut off /q |\n|---|---|---|---|---|")
    for s in args.strategies:
        rows = [common[q][s] for q in common]
        k = len(rows)
        print(f"| {s} | {100 * sum(r['correct'] for r in rows) / k:.1f} | "
              f"{sum(r['cost']['generated_tokens'] for r in rows) / k:.0f} | "
              f"{sum(r['cost']['joules'] or 0.0 for r in rows) / k:.2f} | "
              f"{sum(sum(not x['finished'] for x in r['samples']) for r in rows) / k:.2f} |")
    records = [r for rows in common.values() for r in rows.values()]
    pairs = [(args.strategies[0], o) for o in args.strategies[1:]] + [tuple(p.split("|", 1)) for p in args.pair]
    for mine, other in pairs:
        result = paired(records, mine, other)
        if result is not None:
            print(result.line())


if __name__ == "__main__":
    main()
