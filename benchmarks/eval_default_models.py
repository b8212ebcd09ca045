"""Re-measure the shipped default models against their targets, from the files alone.

    python benchmarks/eval_default_models.py            # the full 500-problem test split, 16 samples each
    python benchmarks/eval_default_models.py --quick    # 60 problems, for a smoke check

Checks every file against models/manifest.json first, then evaluates the generator (pass@1,
oracle pass@16, per level), the PRM (best-of-16 by its median; its question score against the
share of right samples) and the time to answer an easy question with search; the PRM's held-out
calibration numbers come from the manifest (they need the calibration split's rollouts, which
the recipe measured).
"""

from __future__ import annotations

import argparse
import copy
import sys

from rich.console import Console

from edge_adapt.assembly import StackSettings, open_stack
from edge_adapt.models import load_default_models
from edge_adapt.search import BestOfN
from edge_adapt.settings import ModelSettings
from edge_adapt.tasks import ArithmeticTask
from edge_adapt.tasks.arithmetic import TEST_PER_LEVEL
from edge_adapt_tools.cli.recipe_cmd import print_targets
from edge_adapt_tools.recipe.model_card import check_targets, question_score_summary
from edge_adapt_tools.recipe.model_eval import EASY_SEARCH_N, EVALUATION_SAMPLES, evaluate_models, time_easy_search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=None, help="models folder (default: models/)")
    parser.add_argument("--quick", action="store_true", help="10 problems per level instead of the 500-problem split")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    console = Console(width=None if sys.stdout.isatty() else 130)

    models = load_default_models(args.models, verify=True)
    console.print(f"{models.root}: every file matches manifest.json")
    manifest = models.manifest
    task = ArithmeticTask()
    seed = manifest["recipe"]["seed"]
    per_level = [10] * len(task.levels) if args.quick else list(TEST_PER_LEVEL)
    problems = task.problems("test", per_level, seed=seed)
    strategies = (BestOfN(n=EVALUATION_SAMPLES), BestOfN(n=EASY_SEARCH_N))
    with open_stack(StackSettings(ModelSettings(models.generator, models.prm, args.threads), task, strategies)) as stack:
        evaluation = evaluate_models(stack.generator, stack.prm, task, problems, samples=EVALUATION_SAMPLES, seed=seed)
        evaluation.easy_search_seconds = time_easy_search(stack.searcher, [p for p in problems if p.level == 1][:20])
    measured = copy.deepcopy(manifest)
    measured["metrics"]["generator_and_prm_on_test"] = evaluation.to_dict()
    console.print(f"evaluated {len(problems)} test problems x {evaluation.samples_per_problem} samples in "
                  f"{evaluation.seconds:.0f}s")
    print_targets(check_targets(measured))
    console.print(question_score_summary(evaluation.to_dict()))


if __name__ == "__main__":
    main()
