"""The adaptive vote against the whole no-PRM frontier, on held-out questions, from one set of samples.

Every strategy is replayed over the same N samples per question (a ``majority:n=N`` run's records,
e.g. ``edge-adapt calibrate``'s sampling run on questions it did not fit on), in 16 seeded orders:
fixed majority votes at n = 1..N, CISC and DeepConf-offline votes, Adaptive-Consistency, ESC, and
the adaptive vote at several prices. So every comparison is paired on the same questions and the
same samples; each adaptive point is set against its nearest fixed neighbours and the best fixed
vote with a paired bootstrap interval (over questions) and a sign test on the questions where the
two differ.

    python benchmarks/vote_frontier.py --model runs/smol/smol.gguf.calibration.json \\
        --samples runs/smol/test-samples --markdown
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from edge_adapt.bench.calibrate import questions_from_records
from edge_adapt.bench.paired import bootstrap_interval, sign_test
from edge_adapt.bench.records import RunFolder
from edge_adapt.search.calibration.vote_model import Sample, VoteModel, leader
from edge_adapt.search.calibration.vote_replay import (
    PRICES,
    CalibrationSample,
    Replayed,
    VoteQuestion,
    replay_adaptive,
    replay_rule,
)
from edge_adapt.search.confidence import TraceConfidence
from edge_adapt.search.voting import confidence_pick, pick


def _conf(s: CalibrationSample) -> TraceConfidence:
    return TraceConfidence(float(s.features["mean"] or 0.0), float(s.features["lowest"] or 0.0), float(s.features["tail"] or 0.0))


def fixed_vote(n: int, feature: str):  # type: ignore[no-untyped-def]
    def rule(q: VoteQuestion, samples: list[CalibrationSample]) -> tuple[int, str | None]:
        drawn = samples[:n]
        return n, leader([Sample(s.answer, s.features.get(feature) or 0.0) for s in drawn])[0]
    return rule


def confidence_vote(how: str, n: int):  # type: ignore[no-untyped-def]
    def rule(q: VoteQuestion, samples: list[CalibrationSample]) -> tuple[int, str | None]:
        drawn = samples[:n]
        i = confidence_pick(how, [s.answer for s in drawn], [_conf(s) for s in drawn], lambda a, b: a == b)
        return n, drawn[i].answer if i is not None else None
    return rule


def prm_pick(how: str, n: int):  # type: ignore[no-untyped-def]
    """best_of_n (the PRM's highest median) or weighted (its medians summed per answer)."""
    def rule(q: VoteQuestion, samples: list[CalibrationSample]) -> tuple[int, str | None]:
        drawn = samples[:n]
        i = pick(how, [s.answer for s in drawn], [s.features.get("prm") for s in drawn], lambda a, b: a == b)
        return n, drawn[i].answer if i is not None else None
    return rule


def esc(window: int, n_max: int):  # type: ignore[no-untyped-def]
    def rule(q: VoteQuestion, samples: list[CalibrationSample]) -> tuple[int, str | None]:
        n = 0
        while n < min(n_max, len(samples)):
            block = samples[n:n + window]
            n += len(block)
            if len(block) == window and block[0].answer is not None and all(s.answer == block[0].answer for s in block):
                break
        return n, leader([Sample(s.answer, 0.0) for s in samples[:n]])[0]
    return rule


def settled_oracle(n_max: int):  # type: ignore[no-untyped-def]
    """A bound, not a strategy: stop at the first n from which the leader stays the n_max-sample
    majority's answer (it peeks at the samples to come). No stopping rule that keeps majority-n_max's
    accuracy by reading the vote alone can stop earlier on average."""
    def rule(q: VoteQuestion, samples: list[CalibrationSample]) -> tuple[int, str | None]:
        votes = [Sample(s.answer, 0.0) for s in samples[:n_max]]
        final = leader(votes)[0]
        stop = len(votes)
        for n in range(len(votes), 0, -1):
            if leader(votes[:n])[0] != final:
                break
            stop = n
        return stop, final
    return rule


def paired(a: Replayed, b: Replayed) -> tuple[float, float, float, int, int, float]:
    """a - b in accuracy points: the mean, a 95% bootstrap interval over questions, how many
    questions each is better on, and the two-sided sign test on those."""
    ids = sorted(a.by_question)
    d = [100.0 * (a.by_question[i][0] - b.by_question[i][0]) for i in ids]
    low, high = bootstrap_interval(d)
    wins, losses = sum(x > 1e-9 for x in d), sum(x < -1e-9 for x in d)
    return sum(d) / len(d), low, high, wins, losses, sign_test(wins, losses)


def live_rows(run: Path, ids: set[str]) -> dict[str, Replayed]:
    """Each strategy of a live run on the same questions, as a row: right or not and its own tokens
    per question (one draw, not replayed orders)."""
    by_strategy: dict[str, list[dict]] = {}
    for record in RunFolder(run).records():
        if record["question_id"] in ids:
            by_strategy.setdefault(record["strategy"], []).append(record)

    def stats(rs: list[dict]) -> tuple[float, float, float]:
        k = len(rs) or 1
        return (100.0 * sum(r["correct"] for r in rs) / k, sum(r["cost"]["generated_tokens"] for r in rs) / k,
                sum(r["cost"]["samples"] for r in rs) / k)

    rows = {}
    for name, records in by_strategy.items():
        levels = sorted({str(r["level"]) for r in records if r.get("level") is not None})
        rows[f"{name} (live)"] = Replayed(*stats(records), {lv: stats([r for r in records if str(r.get("level")) == lv])
                                                           for lv in levels},
                                          {r["question_id"]: (float(r["correct"]),
                                                              r["cost"]["generated_tokens"]) for r in records})
    return rows


def auc(questions: list[VoteQuestion], feature: str) -> float:
    """How well a feature tells a sample's right answer from a wrong one (answered samples, ties half)."""
    right = np.array([s.features[feature] for q in questions for s in q.samples if s.answer is not None and s.correct])
    wrong = np.array([s.features[feature] for q in questions for s in q.samples if s.answer is not None and not s.correct])
    if not len(right) or not len(wrong):
        return math.nan
    return float((right[:, None] > wrong[None, :]).mean() + 0.5 * (right[:, None] == wrong[None, :]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="the vote model (GENERATOR.calibration.json)")
    parser.add_argument("--samples", type=Path, required=True, help="a majority:n=N run folder of held-out questions")
    parser.add_argument("--orderings", type=int, default=16)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--live", type=Path, action="append", default=[],
                        help="a run folder of strategies run live on the same questions, set beside them (repeatable)")
    args = parser.parse_args()
    model = VoteModel.load(args.model)
    folder = RunFolder(args.samples)
    config, made = folder.config(), model.provenance
    same_file = config.get("data_sha256") is not None and config.get("data_sha256") == made.get("data_sha256")
    same_split = config.get("data_sha256") is None and made.get("data_sha256") is None and \
        config.get("split", "test") == made.get("split", "calibration") and config.get("question_seed",
                                                                                       0) == made.get("question_seed", 0)
    if same_file or same_split:
        raise SystemExit(f"{args.samples} sampled the questions {args.model} was calibrated on: give held-out questions")
    questions = questions_from_records(folder.records())
    m = min(len(q.samples) for q in questions)
    o = args.orderings
    rows: dict[str, Replayed] = {}
    for n in range(1, m + 1):
        rows[f"majority:n={n}"] = replay_rule(questions, fixed_vote(n, model.feature), orderings=o)
    for n in (2, 4, 8, m):
        rows[f"cisc:n={n}"] = replay_rule(questions, confidence_vote("cisc", n), orderings=o)
        rows[f"deepconf:n={n}"] = replay_rule(questions, confidence_vote("deepconf", n), orderings=o)
    if all(s.features.get("prm") is not None for q in questions for s in q.samples):  # sampled with a PRM
        for n in (1, 2, 4, 8, m):
            rows[f"best_of_n:n={n}"] = replay_rule(questions, prm_pick("prm", n), orderings=o)
            rows[f"weighted:n={n}"] = replay_rule(questions, prm_pick("weighted", n), orderings=o)
    rows[f"consistency:n_max={m}"] = replay_adaptive(questions, None, 0.0, model.feature, n_max=m, orderings=o)[0]
    for w in (2, 3, 4):
        rows[f"esc:window={w},n_max={m}"] = replay_rule(questions, esc(w, m), orderings=o)
    bound = replay_rule(questions, settled_oracle(m), orderings=o)
    adaptive = {}
    for price in sorted({*PRICES, model.price}):
        name = f"adaptive_vote:price={price:g}" + (" (default)" if price == model.price else "")
        adaptive[name] = rows[name] = replay_adaptive(questions, model, price, model.feature, n_max=m, orderings=o)[0]
    own = model.without_prm() if model.needs_prm else None
    if own is not None:  # the same vote without the PRM's scores: what the PRM adds, on the same samples
        for price in sorted({*PRICES, model.price}):
            rows[f"adaptive_vote:price={price:g} (no PRM: {own.feature})"] = replay_adaptive(
                questions, own, price, own.feature, n_max=m, orderings=o)[0]
    live = {name: row for run in args.live for name, row in live_rows(run, {q.id for q in questions}).items()}
    rows.update(live)
    fixed = {k: v for k, v in rows.items() if k.startswith(("majority:", "best_of_n:", "weighted:", "cisc:", "deepconf:"))
             and not k.endswith("(live)")}
    best_name = max(fixed, key=lambda k: (fixed[k].accuracy, -fixed[k].tokens))
    top = rows[f"majority:n={m}"]
    print(f"{len(questions)} held-out questions, {m} samples each, {o} orders; vote model: {model.feature}, "
          f"default price {model.price:g}; replayed from {args.samples}")
    for name, r in live.items():
        print(f"{name}: {len(r.by_question)} of the {len(questions)} questions, run live")
    sep = "|" if args.markdown else " "
    head = ["strategy", "accuracy %", "tokens/q", "samples/q", f"tokens vs majority:n={m}"]
    if args.markdown:
        print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for name, r in rows.items():
        cells = [name, f"{r.accuracy:.1f}", f"{r.tokens:.0f}", f"{r.samples:.2f}", f"{100 * r.tokens / top.tokens:.0f}%"]
        print(("| " + " | ".join(cells) + " |") if args.markdown else sep.join(f"{c:>28}" if i == 0 else f"{c:>12}" for i,
                                                                               c in enumerate(cells)))
    print(f"\nbest fixed strategy: {best_name} {fixed[best_name].accuracy:.1f}% at {fixed[best_name].tokens:.0f} tokens/q")
    for name, r in {**adaptive, **live}.items():
        cheaper = [k for k in fixed if fixed[k].tokens <= r.tokens]
        dearer = [k for k in fixed if fixed[k].tokens > r.tokens]
        neighbours = ([max(cheaper, key=lambda k: fixed[k].tokens)] if cheaper else []) + \
                     ([min(dearer, key=lambda k: fixed[k].tokens)] if dearer else [])
        for other in dict.fromkeys([*neighbours, best_name]):
            mean, lo, hi, wins, losses, p = paired(r, fixed[other])
            print(f"{name} - {other}: {mean:+.1f} points (95% CI {lo:+.1f} .. {hi:+.1f}; better on {wins}, worse on {losses} "
                  f"questions, sign test p = {p:.2f}); tokens {r.tokens:.0f} vs {fixed[other].tokens:.0f}")
    if own is not None:  # at the default price, and against the price without them that spends the nearest tokens
        with_prm = adaptive[next(k for k in adaptive if k.endswith("(default)"))]
        without = {k: r for k, r in rows.items() if k.endswith(f"(no PRM: {own.feature})")}
        nearest = min(without, key=lambda k: abs(without[k].tokens - with_prm.tokens))
        for label, other in (("at the default price", f"adaptive_vote:price={model.price:g} (no PRM: {own.feature})"),
                             (f"at equal tokens ({nearest})", nearest)):
            mean, lo, hi, wins, losses, p = paired(with_prm, rows[other])
            print(f"with the PRM's scores - without them, {label}: {mean:+.1f} points (95% CI {lo:+.1f} .. {hi:+.1f}; "
                  f"better on {wins}, worse on {losses}, p = {p:.2f}); tokens {with_prm.tokens:.0f} vs {rows[other].tokens:.0f}")
    singles = rows["majority:n=1"].per_level
    if singles:
        print("pass@1 per level: " + ", ".join(f"{lv}: {a:.1f}%" for lv, (a, _, _) in singles.items()))
    print("right against wrong samples, AUC of each confidence: " + ", ".join(
        f"{f} {auc(questions, f):.3f}" for f in ("mean", "lowest", "tail", "prm") if all(
            s.features.get(f) is not None for q in questions for s in q.samples)))
    print(f"to give majority:n={m}'s answers ({bound.accuracy:.1f}%), a rule that knew when the vote had settled (peeking "
          f"at later samples) needs {100 * bound.tokens / top.tokens:.0f}% of its tokens: a bound for any rule reading the vote")
    default = next(r for k, r in adaptive.items() if k.endswith("(default)"))
    beaten = [k for k, r in rows.items() if not k.startswith("adaptive_vote") and r.tokens < default.tokens
              and r.accuracy > default.accuracy + 1.0]
    print(f"baselines both cheaper and more than 1 point better than the default: {', '.join(beaten) or 'none'}")
    if default.per_level:
        print("per level at the default price (accuracy %, tokens/q, samples/q; majority:n=" + str(m) + " alongside):")
        for lv, (a, t, s) in default.per_level.items():
            fa, ft, _ = top.per_level[lv]
            print(f"  level {lv}: {a:.1f}% {t:.0f} tok {s:.2f} samples   (majority:n={m}: {fa:.1f}% {ft:.0f} tok)")


if __name__ == "__main__":
    main()
