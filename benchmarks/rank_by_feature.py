"""Best-of-16 on the test split ranked by single features: how well could any PRM built on this
generator's signals rank its solutions?

The same samples as the recipe's evaluation (`edge_adapt_tools/recipe/model_eval.py`: 16 per problem, T=0.7,
seed = problem index), ranked by the PRM's median, by the generator's own log-likelihood of the
solution (summed over solution tokens, step separators excluded, as the PRM's likelihood term
counts it), by its lowest token probability, and by a majority vote over answers. Needs the
[export] extra (torch reads the dequantized generator).

    python benchmarks/rank_by_feature.py                 # shipped models, 500 problems (~6 minutes)
    python benchmarks/rank_by_feature.py --per-level 20  # quicker
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

from edge_adapt.assembly import open_generator, open_prm
from edge_adapt.generator import GeneratorConfig, SamplingParams
from edge_adapt.prm.format import encode_prefix
from edge_adapt.tasks import ArithmeticTask
from edge_adapt.tasks.arithmetic import TEST_PER_LEVEL
from edge_adapt_tools.gguf.dequantize import dequantize_gguf
from edge_adapt_tools.prm.likelihood_prm import likelihood_source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--per-level", type=int, help="problems per level (default: the model card's 500)")
    parser.add_argument("--samples", type=int, default=16)
    args = parser.parse_args()

    task = ArithmeticTask()
    problems = task.problems("test", args.per_level or list(TEST_PER_LEVEL), seed=0)
    prm = open_prm(args.models / "prm")
    tokenizer = Tokenizer.from_file(str(args.models / "prm" / "tokenizer.json"))
    gguf = next(args.models.glob("generator-*.gguf"))
    with tempfile.TemporaryDirectory() as tmp:
        source = likelihood_source(dequantize_gguf(gguf, args.models / "prm" / "tokenizer.json", Path(tmp) / "g"),
                                   tokenizer, prm.bundle.format)
        lm = AutoModelForCausalLM.from_pretrained(source.generator_dir, dtype=torch.float32).eval()

    def token_logps(question: str, steps: list[str]) -> list[float]:
        ids = encode_prefix(tokenizer, prm.bundle.format, question, steps).input_ids
        with torch.no_grad():
            logp = torch.log_softmax(lm(input_ids=torch.tensor([ids])).logits[0].float(), -1)
        start = ids.index(source.question_end_id)
        return [float(logp[k - 1, ids[k]]) for k in range(start + 1, len(ids)) if ids[k] not in source.skip_ids]

    features = ("PRM median", "generator log-likelihood", "lowest token log-probability", "majority vote (answers)")
    picked: dict[str, dict[int, list[bool]]] = {f: defaultdict(list) for f in features}
    with open_generator(gguf, GeneratorConfig(n_ctx=8192, n_seq_max=64)) as gen:
        for i, problem in enumerate(problems):
            root = gen.prefill(task.prompt(problem), seed=i)
            try:
                leaves, _ = gen.complete([root], args.samples, sampling=SamplingParams(temperature=0.7), rules=task.step_rules)
            finally:
                gen.release(root)
            steps = [[s.text for s in leaf.steps()] for leaf in leaves]
            correct = [task.is_correct(leaf.solution_text(), problem) for leaf in leaves]
            answers = [task.extract_answer(leaf.solution_text()) for leaf in leaves]
            votes = Counter(a for a in answers if a is not None)
            logps = [token_logps(problem.question, s) for s in steps]
            scores = {
                "PRM median": [s.final.median for s in prm.score(problem.question, steps)],
                "generator log-likelihood": [sum(lp) for lp in logps],
                "lowest token log-probability": [min(lp, default=0.0) for lp in logps],
                "majority vote (answers)": [votes.get(a, 0) if a is not None else -1 for a in answers],
            }
            for feature, score in scores.items():
                picked[feature][problem.level or 0].append(correct[max(range(len(score)), key=score.__getitem__)])

    levels = sorted(picked[features[0]])
    print(f"best-of-{args.samples} on {len(problems)} test problems, ranked by one feature")
    print("| ranked by | all | " + " | ".join(f"L{lv}" for lv in levels) + " |")
    print("|---|---|" + "---|" * len(levels))
    for feature in features:
        rows = picked[feature]
        every = [c for lv in levels for c in rows[lv]]
        cells = " | ".join(f"{100 * sum(rows[lv]) / len(rows[lv]):.1f}" for lv in levels)
        print(f"| {feature} | {100 * sum(every) / len(every):.1f}% | {cells} |")


if __name__ == "__main__":
    main()
