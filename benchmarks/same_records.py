"""Do two run folders hold the same records? The check that a refactor changed no behaviour.

Compares, per (question, strategy), every field of the records except those that legitimately
differ between identical runs (wall time, joules: ``bench.records.stable_view``). Prints what
differs, field by field, for the first few pairs, and exits 1 if anything does. Fields the newer
records add (and the older lack altogether) are listed, not counted as differences.

    edge-adapt bench -o runs/before --limit 60          # at the old commit
    edge-adapt bench -o runs/after --limit 60           # at the new one
    python benchmarks/same_records.py runs/before runs/after
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edge_adapt.bench.records import RunFolder, stable_view


def keyed(folder: Path) -> dict[tuple[Any, str], dict[str, Any]]:
    return {(r["index"], r["strategy"]): stable_view(r) for r in RunFolder(folder).records()}


def differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key, "<absent>"), b.get(key, "<absent>")
        if isinstance(x, dict) and isinstance(y, dict):
            out += differences(x, y, f"{prefix}{key}.")
        elif x != y:
            out.append(f"{prefix}{key}: {x!r} != {y!r}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--show", type=int, default=5, help="differing pairs to print in full")
    args = parser.parse_args()
    a, b = keyed(args.before), keyed(args.after)
    known = {k for r in a.values() for k in r}
    added = sorted({k for r in b.values() for k in r} - known)
    if added:
        print(f"fields only the newer records have (not compared): {', '.join(added)}")
        b = {key: {k: v for k, v in r.items() if k in known} for key, r in b.items()}
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    differing = [k for k in sorted(set(a) & set(b)) if a[k] != b[k]]
    for k in differing[: args.show]:
        print(f"question {k[0]}, {k[1]}:")
        for line in differences(a[k], b[k])[:10]:
            print(f"  {line}")
    print(f"{len(set(a) & set(b))} pairs in both, {len(differing)} differ; {len(only_a)} only in {args.before}, "
          f"{len(only_b)} only in {args.after}")
    return 1 if differing or only_a or only_b else 0


if __name__ == "__main__":
    sys.exit(main())
